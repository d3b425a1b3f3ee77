"""`opsbook run ID --on-cluster` end to end: the real CLI (a subprocess) against a Kubernetes API
(the test server, or OPSBOOK_TEST_KUBECONFIG), through a target that names its kubeconfig.

The Job's image is never pulled by the test server: its pod "runs" for opsbook.test/run-seconds and
exits with opsbook.test/exit-code (test-only annotations, inert on a real cluster), so these tests
judge what the CLI creates, follows and reports, not the in-pod run (that is `opsbook run`, tested
elsewhere)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from opsbook.ids import new_run_id
from opsbook.testing.kube import requires_test_server, wait_until

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
S3 = "s3://opsbook-records/on-cluster"
RBAC_KINDS = "roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io"


@pytest.fixture
def oc(kube, tmp_path):
    """Run `opsbook run ... --on-cluster` with a target `kubetest` = the kube fixture's namespace."""
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"kubetest:\n  kubeconfig: {kube.kubeconfig}\n  kube_context: {kube.context}\n"
                       f"  namespace: {kube.namespace}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPSBOOK_OUTPUTS", "OPSBOOK_IMAGE")}
    env.update(OPSBOOK_TARGETS=str(targets), OPSBOOK_OPERATOR="alice", COLUMNS="250")

    def argv(runbook: str, *args: str, outputs: str | None = S3) -> list[str]:
        return [sys.executable, "-m", "opsbook", "run", runbook, "--notebooks", str(NOTEBOOKS), "--target", "kubetest",
                "--on-cluster", *(["--outputs", outputs] if outputs else []), *args]

    def run(runbook: str, *args: str, outputs: str | None = S3, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(argv(runbook, *args, outputs=outputs), capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=tmp_path)

    def start(runbook: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(argv(runbook, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)

    run.start = start  # type: ignore[attr-defined]
    return run


def get(kube, *what: str, check: bool = True) -> dict:
    return json.loads(kube.kubectl("get", *what, "-o", "json", check=check).stdout or "{}")


def items(kube, kinds: str, run_id: str | None = None, *, cluster: bool = False) -> list[dict]:
    sel = ["-l", f"opsbook.io/run-id={run_id}"] if run_id else ["-l", "app.kubernetes.io/name=opsbook"]
    if cluster:
        return json.loads(kube.api.kubectl("get", kinds, *sel, "-o", "json").stdout)["items"]
    return get(kube, kinds, *sel)["items"]


def job_name(run_id: str) -> str:
    return f"opsbook-{run_id.lower()}"


def pod_of(kube, run_id: str) -> dict:
    def find():
        pods = items(kube, "pods", run_id)
        return pods[0] if pods and (pods[0].get("status") or {}).get("phase") == "Running" else None
    return wait_until(find, timeout=30, message=f"the pod of run {run_id} running")


# ------------------------------------------------------------------------------------- success

@requires_test_server
def test_job_rbac_and_logs_followed_to_success(oc, kube):
    run_id = new_run_id()
    proc = oc.start("initial-kubernetes-deployment", "-p", "namespace", kube.namespace, "-p", "release", "ml",
                    "-p", "db_password", f"k8s:{kube.namespace}/ml-db/password", "--run-id", run_id,
                    "--image", "registry.example/opsbook:test", "--s3-secret", "archive-creds",
                    "--pod-annotation", "opsbook.test/run-seconds=6", "--job-timeout", "900")
    try:
        name = job_name(run_id)
        pod = pod_of(kube, run_id)
        kube.feed_logs(pod["metadata"]["name"], "opsbook", "runbook cell 3: marker-line-7f3a")
        # while it runs: the Job, its ServiceAccount, RBAC and ConfigMap are there, as rendered
        job = get(kube, "job", name)
        spec = job["spec"]
        assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 900 and not spec.get("suspend")
        assert job["metadata"]["labels"]["opsbook.io/run-id"] == run_id
        assert job["metadata"]["labels"]["opsbook.io/runbook"] == "initial-kubernetes-deployment"
        ps = spec["template"]["spec"]
        (c,) = ps["containers"]
        assert c["image"] == "registry.example/opsbook:test" and ps["serviceAccountName"] == name
        assert c["args"][:2] == ["run", "initial-kubernetes-deployment"] and c["args"][-2:] == ["--run-id", run_id]
        assert ps["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]} and ps["restartPolicy"] == "Never"
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "archive-creds",
                                                                            "key": "AWS_SECRET_ACCESS_KEY"}
        assert env["OPSBOOK_OUTPUTS"]["value"] == S3
        cm = get(kube, "configmap", name)
        params = json.loads(cm["data"]["parameters.json"])
        assert params["namespace"] == kube.namespace and params["release"] == "ml"
        assert params["db_password"] == f"k8s:{kube.namespace}/ml-db/password"  # the reference only
        assert cm["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]  # goes with the Job
        assert get(kube, "serviceaccount", name)["metadata"]["ownerReferences"][0]["kind"] == "Job"
        role = get(kube, "role", name)
        notebook = json.loads((NOTEBOOKS / "initial-kubernetes-deployment.ipynb").read_text())
        assert role["rules"] == notebook["metadata"]["opsbook"]["rbac"]["rules"]
        assert [x["rules"] for x in items(kube, "clusterroles", run_id, cluster=True)] == [
            [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create", "delete"]}]]
        (crb,) = items(kube, "clusterrolebindings", run_id, cluster=True)
        assert crb["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": kube.namespace}]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "marker-line-7f3a" in out  # the pod's log was followed
    assert f"succeeded run {run_id}" in out and S3 in out
    # the permissions ended with the run; the Job, its SA and ConfigMap stay for the TTL
    assert items(kube, RBAC_KINDS, run_id) == [] and items(kube, "clusterroles", run_id, cluster=True) == []
    assert items(kube, "clusterrolebindings", run_id, cluster=True) == []
    assert get(kube, "job", job_name(run_id))["status"]["succeeded"] == 1


def test_dry_run_shows_everything_and_creates_nothing(oc, kube):
    r = oc("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", "--dry-run",
           "--run-id", new_run_id())
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"]
    assert "server-side dry run (dryRun=All): 5 object(s) accepted; nothing was created" in r.stderr
    assert "deployments" in r.stderr and "get,list,create,patch,delete" in r.stderr  # the RBAC table
    assert items(kube, "jobs,configmaps,serviceaccounts," + RBAC_KINDS) == []


# ------------------------------------------------------------------------------------- failures

@requires_test_server
def test_a_failing_pod_exits_1_with_the_reason(oc, kube):
    run_id = new_run_id()
    r = oc("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", "--run-id", run_id,
           "--pod-annotation", "opsbook.test/exit-code=1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"failed run {run_id}" in r.stdout
    assert "BackoffLimitExceeded" in r.stdout and "exited with code 1 (the runbook failed)" in r.stdout
    conds = {c["type"]: c for c in get(kube, "job", job_name(run_id))["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert len(items(kube, "pods", run_id)) == 1  # backoffLimit 0: never re-run
    assert items(kube, RBAC_KINDS, run_id) == []


@requires_test_server
def test_an_image_that_cannot_be_pulled_is_reported_not_waited_for(oc, kube):
    run_id = new_run_id()
    t0 = time.monotonic()
    r = oc("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", "--run-id", run_id,
           "--image", "registry.invalid/opsbook:nope", "--job-timeout", "600")
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60  # far below --job-timeout
    assert "ErrImagePull" in r.stdout or "ImagePullBackOff" in r.stdout
    assert "registry.invalid/opsbook:nope" in r.stdout


@requires_test_server
def test_job_timeout_deletes_the_job(oc, kube):
    run_id = new_run_id()
    r = oc("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", "--run-id", run_id,
           "--job-timeout", "1",
           "--pod-annotation", "opsbook.test/run-seconds=120")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Timeout" in r.stdout and "--job-timeout 1 s" in r.stdout and "the Job was deleted" in r.stdout
    wait_until(lambda: not items(kube, "jobs", run_id), timeout=15, message="the timed-out Job deleted")


@pytest.mark.parametrize("args,needle", [
    (["-p", "db_password", "hunter2-literal-password"], "db_password"),  # a value where a reference belongs
    (["-f", "PARAMS"], "db_password"),  # the same through a parameters file
    (["--mode", "apply"], "needs --approve PLAN_RUN_ID"),  # high-risk apply without approval
    (["-p", "db_password", "file:/etc/pw"], "file of this machine"),
    (["--namespace", "no-such-namespace"], "no-such-namespace do not exist"),
])
def test_refused_before_anything_is_created(oc, kube, tmp_path, args, needle):
    params = tmp_path / "params.yaml"
    params.write_text("db_password: AKIAABCDEFGHIJKLMNOP\n")
    args = [str(params) if a == "PARAMS" else a for a in args]
    r = oc("initial-kubernetes-deployment", "-p", "namespace", kube.namespace, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "hunter2-literal-password" not in r.stderr + r.stdout and "AKIAABCDEFGHIJKLMNOP" not in r.stderr
    assert items(kube, "jobs,configmaps,serviceaccounts," + RBAC_KINDS) == []


def test_without_an_s3_archive_it_is_refused_in_one_line(oc, kube):
    for outputs in (None, "outputs/"):
        r = oc("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", outputs=outputs)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--on-cluster needs an S3 archive" in lines[0], r.stderr
    assert items(kube, "jobs,configmaps,serviceaccounts," + RBAC_KINDS) == []


# ------------------------------------------------------------------------------------- Ctrl-C

@requires_test_server
def test_ctrl_c_without_a_terminal_leaves_the_job_and_says_how_to_follow_it(oc, kube):
    run_id = new_run_id()
    proc = oc.start("deploy-new-model", "-p", "namespace", kube.namespace, "-p", "version", "2", "--run-id", run_id,
                    "--pod-annotation", "opsbook.test/run-seconds=60")
    try:
        pod_of(kube, run_id)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    name = job_name(run_id)
    assert f"left running: Job {kube.namespace}/{name}" in err
    base = f"kubectl --kubeconfig {kube.kubeconfig} --context {kube.context} -n {kube.namespace}"
    assert f"{base} logs -f job/{name}" in err and f"{base} delete job/{name}" in err
    assert f"-n {kube.namespace} delete role,rolebinding -l opsbook.io/run-id={run_id}" in err
    job = get(kube, "job", name)
    assert not any(c.get("type") in ("Complete", "Failed") for c in job["status"].get("conditions") or [])
    assert items(kube, RBAC_KINDS, run_id)  # still running: it keeps its permissions
    kube.kubectl("delete", "job", name, "--wait=false")
