"""Every runbook applies with exactly the RBAC its notebook declares (metadata ``opsbook.rbac``), as
``opsbook run --on-cluster`` grants it: a ServiceAccount, its Role and RoleBinding and its ClusterRole
and ClusterRoleBinding rendered by ``opsbook.oncluster.job`` (the same code, not a copy of the rules),
a token from TokenRequest, and the real CLI running plan and approved apply through a kubeconfig that
holds only that token. A rule the runbook needs but does not declare fails here with the API server's
403; the last test proves it by dropping one declared rule.

Runs unchanged against a real cluster (``OPSBOOK_TEST_KUBECONFIG``): the admin sets up, the runbook
runs as its ServiceAccount."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from opsbook import catalog
from opsbook.catalog import RbacSpec, Runbook
from opsbook.clients.helm import Helm
from opsbook.clients.kube import Kube
from opsbook.ids import new_run_id
from opsbook.oncluster import job
from opsbook.ops import centralized_logging as logcollect
from opsbook.targets import Target
from opsbook.testing.kube import requires_test_server, wait_until

from .conftest import CHART, NOTEBOOKS, manifests_of, values_for
from .test_centralized_logging import load, prefix, service_docs
from .test_deploy_new_model import HEALTHY, stable  # noqa: F401  (a fixture: the stable Deployment)
from .test_security_incident import cluster  # noqa: F401  (a fixture: the compromised namespace)

pytestmark = [pytest.mark.kube, pytest.mark.slow]  # each runbook: a plan and an apply through the CLI

CONTEXT = "declared-rbac"
DECLARED = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")
                  if "rbac" in (json.loads(p.read_text())["metadata"].get("opsbook") or {}))


def runbook(runbook_id: str) -> Runbook:
    return catalog.load(NOTEBOOKS / f"{runbook_id}.ipynb")


@dataclass
class Grant:
    """What ``--on-cluster`` would create for one run, created: the objects, and a kubeconfig whose only
    credential is the ServiceAccount's token."""

    objects: list[dict[str, Any]]
    kubeconfig: Path
    user: str


@contextlib.contextmanager
def granted(kube, rb: Runbook, params: dict[str, str], tmp_path: Path) -> Iterator[Grant]:
    """The run's ServiceAccount and RBAC as ``job.render`` makes them (the runbook's namespace is
    ``params["namespace"]``), created by the admin; revoked afterwards with ``job.revoke``."""
    ns = kube.namespace
    target = Target(name="kt", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    req = job.JobRequest(runbook=rb, params={"mode": "apply", **params}, target=target, run_id=new_run_id(),
                         namespace=ns, image="registry.example/opsbook:test", outputs="s3://unused/rbac")
    objs = [o for o in job.render(req) if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                         "ClusterRoleBinding")]
    admin = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    try:
        for o in objs:
            admin.create(o)
        token = client.CoreV1Api(admin.api).create_namespaced_service_account_token(req.name, ns, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).status.token
        path = kube.api.kubeconfig_with_token(token, tmp_path / f"{req.name}.kubeconfig", ns, name=CONTEXT)
        yield Grant(objs, path, f"system:serviceaccount:{ns}:{req.name}")
    finally:
        job.revoke(admin, objs)
        admin.close()


def _targets(tmp_path: Path, g: Grant, kube, **extra: Any) -> Path:
    f = tmp_path / "targets.yaml"
    f.write_text(yaml.safe_dump({"kt": {"kubeconfig": str(g.kubeconfig), "kube_context": CONTEXT,
                                        "namespace": kube.namespace, **extra}}))
    return f


def _args(params: dict[str, str]) -> list[str]:
    return ["--target", "kt", *[x for k, v in params.items() for x in ("-p", k, v)]]


def _problems(m: dict) -> str:
    return "\n".join(f"  {s['id']}: {s['outcome']}: {s.get('summary')}" for s in m["steps"]
                     if s["outcome"] in ("failed", "error"))


def plan_and_apply(opsbook_run, runbook_id: str, params: dict[str, str], env: dict[str, str], *extra: str,
                   apply_env: dict[str, str] | None = None) -> dict:
    """Plan (high-risk runbooks), then the approved apply (with ``apply_env`` if given); returns the
    apply's manifest. The failure message lists the failed steps: a missing rule shows as the API's 403."""
    args = [*_args(params), *extra]
    approve: list[str] = []
    if runbook(runbook_id).high_risk:
        plan = opsbook_run(runbook_id, *args, env=env)
        pm = manifests_of(opsbook_run.outputs, runbook_id)[-1]
        assert plan.returncode == 0, f"plan failed:\n{_problems(pm)}\n{plan.stdout[-3000:]}{plan.stderr[-3000:]}"
        approve = ["--approve", pm["run_id"]]
    r = opsbook_run(runbook_id, *args, "--mode", "apply", *approve, env=apply_env or env)
    m = [x for x in manifests_of(opsbook_run.outputs, runbook_id) if x["mode"] == "apply"][-1]
    m["_proc"] = r
    return m


def assert_applied(m: dict) -> None:
    r = m["_proc"]
    assert r.returncode == 0 and m["status"] == "succeeded", (
        f"apply {m['status']}:\n{_problems(m)}\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    assert "forbidden" not in json.dumps([s.get("summary") for s in m["steps"]]).lower()


def _env(targets: Path, **more: str) -> dict[str, str]:
    return {"OPSBOOK_TARGETS": str(targets), "OPSBOOK_OPERATOR": "rbac-test", **more}


# ----------------------------------------------------------------------------------------- the runbooks


def test_every_declaring_runbook_is_covered():
    covered = {"environment-check", "deploy-new-model", "initial-kubernetes-deployment", "mlflow-tracking-server",
               "centralized-logging", "security-incident-response"}
    assert set(DECLARED) == covered  # a new runbook with opsbook.rbac needs its apply here


def test_environment_check(kube, opsbook_run, tmp_path):
    with granted(kube, runbook("environment-check"), {}, tmp_path) as g:
        assert [o["kind"] for o in g.objects] == ["ServiceAccount"]  # it declares no rule at all
        m = plan_and_apply(opsbook_run, "environment-check", {}, _env(_targets(tmp_path, g, kube)))
    assert_applied(m)


def test_deploy_new_model(kube, stable, opsbook_run, tmp_path):  # noqa: F811
    params = {"namespace": kube.namespace, "version": "2", "metrics_file": str(HEALTHY), "timeout": "60"}
    with granted(kube, runbook("deploy-new-model"), params, tmp_path) as g:
        m = plan_and_apply(opsbook_run, "deploy-new-model", params, _env(_targets(tmp_path, g, kube)))
    assert_applied(m)
    assert {s["id"]: s["outcome"] for s in m["steps"]}["promote"] == "changed"


def test_initial_kubernetes_deployment(kube, chart_repo, ingress, opsbook_run, tmp_path):
    chart_repo.add_chart(CHART)
    ns = kube.namespace
    client.CoreV1Api(kube.api_client()).create_namespaced_secret(ns, {
        "metadata": {"name": "ml-db"}, "stringData": {"password": "db-pass-declared-rbac-7f3a"}})
    params = {"namespace": ns, "release": "ml", "chart": "ml-platform", "repo_name": "platform",
              "repo_url": chart_repo.url, "chart_version": "0.1.0", "db_password": f"k8s:{ns}/ml-db/password",
              "ingress_base_url": ingress.url, "timeout_seconds": "60",
              "values_overrides": values_for(kube, "services:\n  proposer:\n    replicas: 1\ningress:\n  host: ml.test\n")}
    with granted(kube, runbook("initial-kubernetes-deployment"), params, tmp_path) as g:
        env = _env(_targets(tmp_path, g, kube), **{k: v for k, v in chart_repo.helm_env.items()
                                                    if k.startswith("HELM_")})
        m = plan_and_apply(opsbook_run, "initial-kubernetes-deployment", params, env)
    assert_applied(m)
    assert {s["id"]: s["outcome"] for s in m["steps"]}["install"] == "changed"


def test_mlflow_tracking_server(kube, mlflow_server, opsbook_run, tmp_path):
    """Cluster mode: the manifests applied as the ServiceAccount, the secrets read through ``k8s:``
    references, and the verification against the ``mlflow_server`` fixture (its URL, database, bucket)."""
    if not kube.is_test_server:
        pytest.skip("the deployed MLflow server cannot reach this machine's database from a real cluster, so "
                    "its rollout never finishes (the test server runs no container)")
    ns, s3, pg = kube.namespace, mlflow_server.s3, mlflow_server.postgres
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(ns, {"metadata": {"name": "mlflow-db"}, "stringData": {"password": "trusted"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "mlflow-s3"}, "stringData": {
        "access-key-id": s3.access_key, "secret-access-key": s3.secret_key}})
    params = {"namespace": ns, "db_host": pg.host, "db_port": str(pg.port), "db_name": mlflow_server.database,
              "db_user": pg.user, "db_password": f"k8s:{ns}/mlflow-db/password", "s3_bucket": s3.bucket,
              "s3_prefix": "artifacts", "s3_endpoint": s3.endpoint_url,
              "s3_access_key": f"k8s:{ns}/mlflow-s3/access-key-id",
              "s3_secret_key": f"k8s:{ns}/mlflow-s3/secret-access-key", "tracking_uri": mlflow_server.tracking_uri,
              "ingress_host": "mlflow.example.test", "cleanup": "true", "timeout": "60"}
    with granted(kube, runbook("mlflow-tracking-server"), params, tmp_path) as g:
        m = plan_and_apply(opsbook_run, "mlflow-tracking-server", params, _env(_targets(tmp_path, g, kube)))
    assert_applied(m)
    assert {s["id"]: s["outcome"] for s in m["steps"]}["deploy"] == "changed"


@contextlib.contextmanager
def collector(kube, log_store, index_prefix: str) -> Iterator[None]:
    """What Fluent Bit would do for the runbook's marker pod: its line lands in the store (the test server
    runs no container; on a real cluster the real collector races this and either is enough)."""
    stop = threading.Event()
    core = client.CoreV1Api(kube.api_client())

    def ship() -> None:
        shipped: set[str] = set()
        while not stop.wait(0.3):
            for p in core.list_namespaced_pod(kube.namespace).items:
                found = re.search(r"request_id=(opsbook-[0-9a-f]+)", json.dumps(p.spec.containers[0].command or []))
                if found and p.metadata.name not in shipped:
                    shipped.add(p.metadata.name)
                    load(log_store, index_prefix, [logcollect.document_for(
                        logcollect.marker_line(found.group(1)), namespace=kube.namespace, pod=p.metadata.name,
                        container=p.spec.containers[0].name, app=logcollect.MARKER_LABEL)])

    thread = threading.Thread(target=ship, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def test_centralized_logging(kube, log_store, opsbook_run, tmp_path):
    p = prefix()
    load(log_store, p, service_docs())
    params = {"namespace": kube.namespace, "index_prefix": p, "marker_timeout": "30", "timeout": "60"}
    admin = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    try:
        with granted(kube, runbook("centralized-logging"), params, tmp_path) as g, collector(kube, log_store, p):
            targets = _targets(tmp_path, g, kube, log_store_url=log_store.url, log_store_kind="opensearch")
            m = plan_and_apply(opsbook_run, "centralized-logging", params, _env(targets))
    finally:
        for kind in ("ClusterRoleBinding", "ClusterRole"):  # what the runbook created cluster-wide
            with contextlib.suppress(Exception):
                admin.delete(kind=kind, name=f"fluent-bit-read-{kube.namespace}")
        admin.close()
    assert_applied(m)
    assert {s["id"]: s["outcome"] for s in m["steps"]}["deploy-collectors"] == "changed"


def test_security_incident_response(cluster, opsbook_run, tmp_path, kube):  # noqa: F811
    """Every phase in one apply: containment (with a scale-down), eradication (a helm rollback of the
    ml-platform release, the known-good image), then recovery from this run's own saved copies."""
    k, ns, crb = cluster
    helm = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    values = tmp_path / "values.yaml"
    values.write_text(values_for(kube, "services:\n  critic:\n    enabled: false\n"))
    k.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ml-platform-db"},
              "stringData": {"username": "u", "password": "p4ssw0rd-test"}}], namespace=ns)
    helm.install("ml", str(CHART), values_files=[values], namespace=ns, timeout=60)
    helm.upgrade("ml", str(CHART), values_files=[values], namespace=ns, set_values={"services.proposer.replicas": 1},
                 timeout=60)
    good = "ghcr.io/ml/web@sha256:" + "ab" * 32
    params = {"incident_id": "INC-RBAC", "namespace": ns, "selector": "app=web", "responders": "[alice, bob]",
              "compromised_accounts": f"[{ns}/web-sa]", "scale_down": "true", "release": "ml",
              "rollback_revision": "1", "known_good_image": f"web/server={good}", "reenable_accounts": "true",
              "lift_isolation": "true", "timeout": "60",
              "phases": "[identification, evidence, containment, eradication, recovery, post-incident]"}
    with granted(kube, runbook("security-incident-response"), params, tmp_path) as g:
        m = plan_and_apply(opsbook_run, "security-incident-response", params, _env(_targets(tmp_path, g, kube)),
                           "--quiet")
    assert_applied(m)
    outcomes = {s["id"]: s["outcome"] for s in m["steps"]}
    for step in ("quarantine", "disable-accounts", "scale-down", "rollback", "redeploy-image", "lift-isolation",
                 "reenable-accounts", "scale-back"):
        assert outcomes[step] == "changed", (step, _problems(m))
    assert outcomes["rollback-confirmed"] == outcomes["pods-ready"] == "ok"


# ----------------------------------------------------------------------------------------- a rule missing


def test_a_rule_the_runbook_needs_but_does_not_declare_fails_the_apply_with_a_403(kube, stable, opsbook_run,  # noqa: F811
                                                                                   tmp_path):
    """deploy-new-model without its ``pods list`` rule: the apply's verification lists the pods and
    the API server refuses, naming the permission."""
    rb = runbook("deploy-new-model")
    assert rb.rbac is not None
    kept = tuple(r for r in rb.rbac.rules if r.resources != ("pods",))
    assert len(kept) == len(rb.rbac.rules) - 1
    less = dataclasses.replace(rb, rbac=RbacSpec(rules=kept, cluster_rules=rb.rbac.cluster_rules))
    params = {"namespace": kube.namespace, "version": "2", "metrics_file": str(HEALTHY), "timeout": "60"}
    (tmp_path / "full").mkdir()
    with granted(kube, rb, params, tmp_path / "full") as full, granted(kube, less, params, tmp_path) as g:
        m = plan_and_apply(opsbook_run, "deploy-new-model", params, _env(_targets(tmp_path / "full", full, kube)),
                           apply_env=_env(_targets(tmp_path, g, kube)))
    r = m["_proc"]
    assert r.returncode == 1 and m["status"] == "failed", r.stdout + r.stderr
    refusal = (f'pods is forbidden: User "{g.user}" cannot list resource "pods" in API group "" in the namespace '
               f'"{kube.namespace}"')
    failed = [s for s in m["steps"] if s["outcome"] == "failed"]
    assert failed and refusal in failed[0]["summary"], _problems(m)


# ----------------------------------------------------------------------------------------- the Job's pod


@requires_test_server
@pytest.mark.services  # a test server of its own, in this process, to see the credentials its kubelet mounted
def test_an_on_cluster_jobs_pod_holds_its_service_accounts_token_and_only_its_rbac(tmp_path):
    """What ``--on-cluster`` launches (``job.render`` + ``job.launch``): the Job's pod gets a token of the
    run's ServiceAccount from the kubelet, never the admin's, and with it the runbook's declared rules."""
    from opsbook.testing.kubeapi import authz, start
    from opsbook.testing.kubeapi.__main__ import write_kubeconfig

    srv = start(port=0, nodes=1, ready_delay=0.1)
    admin_kc = tmp_path / "admin.kubeconfig"
    write_kubeconfig(str(admin_kc), srv.url, srv.ca_pem, context="admin")
    admin = Kube(kubeconfig=str(admin_kc), context="admin")
    try:
        admin.ensure_namespace(name="ops")
        rb = runbook("deploy-new-model")
        req = job.JobRequest(runbook=rb, params={"mode": "plan", "namespace": "ops", "version": "2"},
                             target=Target(name="kt", kubeconfig=str(admin_kc), kube_context="admin", namespace="ops"),
                             run_id=new_run_id(), namespace="ops", image="registry.example/opsbook:test",
                             outputs="s3://unused/rbac", pod_annotations={"opsbook.test/run-seconds": "30"})
        job.launch(admin, job.render(req))

        def mounted() -> dict | None:
            pods = admin.pod_objects(namespace="ops", selector=req.selector)
            sim = srv.cluster.sim.get(pods[0]["metadata"]["uid"]) if pods else None
            return (sim or {}).get("serviceaccount")
        creds = wait_until(mounted, timeout=15, message="the Job's pod started with its credentials")
        assert creds["token"] != authz.ADMIN_TOKEN and creds["namespace"] == "ops"
        kc = tmp_path / "pod.kubeconfig"
        write_kubeconfig(str(kc), srv.url, srv.ca_pem, context="pod", namespace="ops")
        kc.write_text(kc.read_text().replace(authz.ADMIN_TOKEN, creds["token"]))
        pod_kube = Kube(kubeconfig=str(kc), context="pod")
        try:
            who = pod_kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})["status"]["userInfo"]
            assert who["username"] == f"system:serviceaccount:ops:{req.name}"
            for rule in rb.rbac.rules if rb.rbac else ():
                for verb in rule.verbs:
                    assert pod_kube.can_i(verb=verb, resource=rule.resources[0], group=rule.api_groups[0],
                                          namespace="ops"), (verb, rule)
            assert not pod_kube.can_i(verb="list", resource="secrets", namespace="ops")
            assert not pod_kube.can_i(verb="list", resource="deployments", group="apps", namespace="default")
        finally:
            pod_kube.close()
    finally:
        admin.close()
        srv.stop()
