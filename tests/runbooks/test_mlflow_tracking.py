"""The `mlflow-tracking-server` runbook against the real services: the ``mlflow_server`` fixture
(PostgreSQL backend store, SeaweedFS artifact store), the embedded server on `local`, the unhappy
paths, and the manifests applied to the Kubernetes API (``kube``), in process and through the CLI as the
runbook's own ServiceAccount."""

from __future__ import annotations

import base64
import contextlib
import secrets as _random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opsbook.clients import Clients
from opsbook.clients.kube import Kube
from opsbook.clients.mlflow import LocalServer
from opsbook.ops import mlflow_tracking_server as tracking
from opsbook.ops.base import declaration, skip_reason
from opsbook.ops.mlflow_tracking_server.cluster import cluster_preflight
from opsbook.ops.mlflow_tracking_server.embedded import NOT_UNDONE
from opsbook.targets import LOCAL
from opsbook.testing.runbook import make_context
from opsbook.testing.services import free_port

from .conftest import manifests_of

RUNBOOK = "mlflow-tracking-server"
DB_ROLE = "opsbook_mlflow_check"
DB_PASSWORD = "pg-" + _random.token_hex(12)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def db_role(mlflow_server):
    """A role that must authenticate with a password (scram) even though the cluster trusts everyone
    else: one pg_hba.conf line for this role only, prepended, then a reload."""
    import psycopg

    pg = mlflow_server.postgres
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {DB_ROLE}")
        conn.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD '{DB_PASSWORD}'")
        conn.execute(f"GRANT pg_read_all_data TO {DB_ROLE}")
    hba = pg.data_dir / "pg_hba.conf"
    original = hba.read_text()
    line = f"host all {DB_ROLE} 127.0.0.1/32 scram-sha-256\n"
    if line not in original:
        hba.write_text(line + original)
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    return DB_ROLE


def _params(mlflow_server, **over) -> dict:
    s3 = mlflow_server.s3
    p = {"mode": "apply", "db_host": mlflow_server.postgres.host, "db_port": mlflow_server.postgres.port,
         "db_name": mlflow_server.database, "db_user": DB_ROLE, "db_password": "env:T_MLFLOW_DB_PASSWORD",
         "s3_bucket": s3.bucket, "s3_prefix": "artifacts", "s3_access_key": "env:T_MLFLOW_S3_KEY",
         "s3_secret_key": "env:T_MLFLOW_S3_SECRET", "s3_endpoint": s3.endpoint_url,
         "tracking_uri": mlflow_server.tracking_uri, "timeout": 60.0}
    p.update(over)
    return p


def _env(mlflow_server, **over) -> dict[str, str]:
    env = {"T_MLFLOW_DB_PASSWORD": DB_PASSWORD, "T_MLFLOW_S3_KEY": mlflow_server.s3.access_key,
           "T_MLFLOW_S3_SECRET": mlflow_server.s3.secret_key}
    env.update(over)
    return env


def _setup(mlflow_server, monkeypatch, env: dict[str, str] | None = None, **over) -> tracking.Context:
    """The runbook's context on target local, its secret references (env:) pointing at ``env``."""
    for name, value in (env or _env(mlflow_server)).items():
        monkeypatch.setenv(name, value)
    return make_context(RUNBOOK, **_params(mlflow_server, **over))


def _skipped(fn, ctx) -> str | None:  # noqa: ANN001
    """Why ``run.do`` would skip step ``fn`` in ``ctx`` (None: it runs)."""
    return skip_reason(declaration(fn), ctx)


@pytest.fixture
def unhealthy_server():
    """An HTTP server that answers 503 to everything (a pod that is up but not healthy)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def do_GET(self):  # noqa: N802
            body = b"upstream not ready"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _no_secret_in(outputs: Path, values: list[str]) -> None:
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        for v in values:
            for form in (v.encode(), base64.b64encode(v.encode()).rstrip(b"=")):
                assert form not in data, f"a credential is in {p}"


# ------------------------------------------------------------------------------ in process, real services


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_verification_passes_against_the_mlflow_server_and_boto3_finds_the_model(mlflow_server, db_role,
                                                                                 monkeypatch):
    t = _setup(mlflow_server, monkeypatch)
    assert t.server_mode == "url"
    checks = tracking.preflight(t)
    assert all(c.passed for c in checks), checks
    by_name = {c.name: c for c in checks}
    assert "PostgreSQL 15" in by_name["PostgreSQL backend store"].reason
    assert "MLflow schema at revision" in by_name["PostgreSQL backend store"].reason
    assert by_name["S3 bucket writable"].evidence["deleted"] is True
    assert "nothing deployed" in _skipped(tracking.deploy, t)
    assert "not the embedded mode" in _skipped(tracking.start_embedded, t)
    assert _skipped(tracking.log_model, t) is not None  # nothing tracked yet: nothing to log a model to
    assert tracking.backend_store(t).outcome == "ok"
    assert tracking.health(t).details["status"] == 200
    assert _skipped(tracking.track_experiment, t) is None
    probe = tracking.track_experiment(t).value
    assert isinstance(probe, tracking.Probe) and probe.url.endswith(f"/runs/{probe.run_id}")
    assert t.probe is probe and _skipped(tracking.log_model, t) is None
    tracking.log_model(t)
    assert probe.model.model_uri == f"models:/{probe.model.model_id}"
    assert tracking.model_from_registry(t).outcome == "ok"
    in_bucket = tracking.model_in_bucket(t)
    assert in_bucket.outcome == "ok", in_bucket.summary
    rows = tracking.run_in_database(t)
    assert rows.outcome == "ok" and rows.details["counts"]["runs"] == 1, rows.summary
    link = tracking.run_link(t)
    assert [(s.url, s.label) for s in link.show] == [(probe.url, "Open the run")]
    assert tracking.finish_probe(t).outcome == "ok"
    # independently of the runbook: boto3 sees the model's files under the configured prefix
    prefix = f"artifacts/{probe.experiment_id}/models/{probe.model.model_id}/"
    keys = mlflow_server.s3.list_keys(prefix)
    assert any(k.endswith("/MLmodel") for k in keys), keys
    exp = mlflow_server.client().get_experiment(probe.experiment_id)
    assert exp.tags[tracking.VERIFY_TAG] == "true" and exp.lifecycle_stage == "active"


@pytest.mark.parametrize("case,over,env_over,check,needle", [
    ("wrong database password", {}, {"T_MLFLOW_DB_PASSWORD": "not-the-password"}, "PostgreSQL backend store",
     f'password authentication failed for user "{DB_ROLE}"'),
    ("database down", {"db_port": "closed"}, {}, "PostgreSQL backend store", "is not reachable"),
    ("bucket missing", {"s3_bucket": "no-such-bucket-here"}, {}, "S3 bucket exists",
     "bucket 'no-such-bucket-here' does not exist"),
    ("S3 credentials rejected", {}, {"T_MLFLOW_S3_SECRET": "wrong-secret-key-0000000000000000000"},
     "S3 bucket exists", "rejected the credentials"),
])
def test_preflight_names_what_is_wrong(mlflow_server, db_role, monkeypatch, case, over, env_over, check, needle):
    if over.get("db_port") == "closed":
        over = {**over, "db_port": free_port()}
    t = _setup(mlflow_server, monkeypatch, env=_env(mlflow_server, **env_over), **over)
    checks = {c.name: c for c in tracking.preflight(t)}
    assert not checks[check].passed, checks
    assert needle in checks[check].reason, checks[check].reason
    failed = [c.name for c in checks.values() if not c.passed]
    assert failed == [check], failed  # only what is wrong fails


def test_server_not_healthy_is_said_plainly(mlflow_server, unhealthy_server, monkeypatch):
    from opsbook.errors import Unreachable

    t = _setup(mlflow_server, monkeypatch, tracking_uri=unhealthy_server)
    with pytest.raises(Unreachable, match=r"not healthy: GET /health answered HTTP 503 \(upstream not ready\)"):
        tracking.health(t)
    t = _setup(mlflow_server, monkeypatch, tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unreachable, match="is not reachable"):
        tracking.health(t)


# ---------------------------------------------------------------------------------- through the CLI


def _cli_params(mlflow_server, **over) -> list[str]:
    p = _params(mlflow_server, **over)
    p.pop("mode")
    return [x for k, v in p.items() for x in ("-p", k, str(v))]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_plan_then_approved_apply_verifies_the_server_and_records_no_credential(mlflow_server, db_role,
                                                                               opsbook_run):
    env = _env(mlflow_server)
    args = _cli_params(mlflow_server, cleanup="true")
    r = opsbook_run(RUNBOOK, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    steps = {s["title"]: s["outcome"] for s in plan["steps"]}
    assert steps["Deploy to the cluster"] == "planned" and steps["Track an experiment"] == "skipped"
    assert steps["Server health"] == "ok" and steps["Preflight"] == "ok"
    r = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", plan["run_id"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    applied = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"]
    (m,) = applied
    assert m["status"] == "succeeded"
    steps = {s["title"]: s for s in m["steps"]}
    for title in ("Track an experiment", "Log and register a model", "Model reads back from the registry",
                  "Model files are in the artifact store", "Run rows are in the backend store", "Server health"):
        assert steps[title]["outcome"] == "ok", steps[title]
    assert steps["Clean up or tag the probe"]["outcome"] == "changed"
    bucket = steps["Model files are in the artifact store"]["details"]
    keys = mlflow_server.s3.list_keys(bucket["prefix"])
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert "/#/experiments/" in steps["Run in the MLflow UI"]["summary"]
    _no_secret_in(opsbook_run.outputs, [DB_PASSWORD, mlflow_server.s3.secret_key, mlflow_server.s3.access_key])
    assert m["parameters"]["db_password"] == "env:T_MLFLOW_DB_PASSWORD"


@pytest.mark.parametrize("case", ["wrong database password", "database down", "bucket missing",
                                  "S3 credentials rejected", "server not healthy"])
def test_unhappy_paths_leave_a_failed_record_with_the_reason(mlflow_server, db_role, opsbook_run,
                                                            unhealthy_server, case):
    env, over = _env(mlflow_server), {}
    needle = {"wrong database password": "password authentication failed",
              "database down": "is not reachable", "bucket missing": "bucket 'absent-bucket' does not exist",
              "S3 credentials rejected": "rejected the credentials",
              "server not healthy": "GET /health answered HTTP 503"}[case]
    if case == "wrong database password":
        env["T_MLFLOW_DB_PASSWORD"] = "wrong-" + DB_PASSWORD
    elif case == "database down":
        over["db_port"] = free_port()
    elif case == "bucket missing":
        over["s3_bucket"] = "absent-bucket"
    elif case == "S3 credentials rejected":
        env["T_MLFLOW_S3_SECRET"] = "not-the-secret-key-000000000000000"
    else:
        over["tracking_uri"] = unhealthy_server
    r = opsbook_run(RUNBOOK, *_cli_params(mlflow_server, **over), env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "failed"
    failed = [s for s in m["steps"] if s["outcome"] == "failed"]
    assert failed and needle in failed[0]["summary"], failed
    if case != "server not healthy":  # a preflight failure stops the run: its reason is the run's error
        assert needle in r.stdout + r.stderr
    else:  # a failed check does not stop the run: the summary fails it, naming the check
        assert "Server health" in r.stdout + r.stderr
    _no_secret_in(opsbook_run.outputs, [DB_PASSWORD, mlflow_server.s3.secret_key, env["T_MLFLOW_DB_PASSWORD"],
                                        env["T_MLFLOW_S3_SECRET"]])


# ---------------------------------------------------------------------------------------- local target


def test_plan_on_local_declares_what_runs_and_touches_nothing(tmp_path):
    """In process, the embedded server given as a client: the plan-mode steps say what they would do,
    the verification steps are skipped by their declarations, and no folder or server is made."""
    port = free_port()
    server = LocalServer(tmp_path / "state", port=port)
    ctx = make_context(RUNBOOK, local_port=port, clients=Clients(LOCAL, local_server=server))
    assert ctx.server_mode == "embedded" and ctx.local is server and ctx.tracking_uri == server.url
    assert tracking.settings_report(ctx).details["mode"] == "embedded"
    checks = {c.name: c for c in tracking.preflight(ctx)}
    assert all(c.passed for c in checks.values()), checks
    assert "would start in apply mode" in checks["embedded server port"].reason
    assert checks["PostgreSQL backend store"].reason.startswith("skipped:")
    shown = tracking.manifests(ctx).show
    assert len(shown) == 1 and shown[0].lang == "yaml" and "$(MLFLOW_DB_PASSWORD)" in shown[0].text
    assert _skipped(tracking.deploy, ctx) is None  # a plan shows what would be deployed
    assert tracking.plan_deploy(ctx).outcome == "planned"
    assert _skipped(tracking.start_embedded, ctx) is None
    assert f"would start `mlflow server` on {server.url}" in tracking.plan_embedded(ctx).summary
    assert tracking.health(ctx).outcome == "skipped" and tracking.backend_store(ctx).outcome == "skipped"
    for fn in (tracking.track_experiment, tracking.log_model, tracking.model_from_registry, tracking.model_in_bucket,
               tracking.run_in_database, tracking.run_link, tracking.finish_probe):
        assert _skipped(fn, ctx) == "plan mode: the verification writes to the tracking server, so it runs in " \
                                    "apply mode", fn
    assert tracking.embedded_status(ctx).summary == f"not running at {server.url}"
    assert not server.running() and not (tmp_path / "state").exists()


def test_plan_on_local_needs_no_network_and_starts_nothing(opsbook_run, tmp_path):
    port = free_port()
    env = {"OPSBOOK_MLFLOW_STATE": str(tmp_path / "state"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    r = opsbook_run(RUNBOOK, "-p", "local_port", str(port), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "succeeded" and m["mode"] == "plan" and m["target"] == "local"
    steps = {s["title"]: s for s in m["steps"]}
    assert steps["Start the embedded server"]["outcome"] == "planned"
    assert steps["Deploy to the cluster"]["outcome"] == "planned"
    assert steps["Server health"]["outcome"] == "skipped"
    manifests = steps["Render the manifests"]["details"]["manifests"]
    dep = manifests[0]["spec"]["template"]["spec"]["containers"][0]
    assert "$(MLFLOW_DB_PASSWORD)" in " ".join(dep["args"])
    assert not LocalServer(tmp_path / "state", port=port).running() and not (tmp_path / "state").exists()


@pytest.mark.services  # starts the embedded MLflow server itself, not through a fixture
@pytest.mark.mlflow
def test_apply_on_local_starts_the_embedded_server_and_verifies_it(opsbook_run, tmp_path):
    port = free_port()
    state = tmp_path / "state"
    env = {"OPSBOOK_MLFLOW_STATE": str(state)}
    server = LocalServer(state, port=port)
    try:
        r = opsbook_run(RUNBOOK, "-p", "local_port", str(port), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
        r = opsbook_run(RUNBOOK, "-p", "local_port", str(port), "--mode", "apply", "--approve", plan["run_id"],
                        env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        (m,) = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"]
        steps = {s["title"]: s for s in m["steps"]}
        assert steps["Start the embedded server"]["outcome"] == "changed"
        # a local process, not undone: the record says so and how to stop it
        assert steps["Start the embedded server"]["undo"] == {"none": NOT_UNDONE}
        assert "opsbook mlflow stop" in NOT_UNDONE
        assert steps["Deploy to the cluster"]["outcome"] == "skipped"
        for title in ("Backend store", "Artifact store", "Server health", "Track an experiment",
                      "Model reads back from the registry", "Model files are in the artifact store",
                      "Run rows are in the backend store"):
            assert steps[title]["outcome"] == "ok", steps[title]
        assert "kill -TERM" in steps["Embedded server"]["summary"]
        assert server.running() and (state / "server.pid").exists() and (state / "mlflow.db").exists()
    finally:
        server.stop()
    assert not server.running()


# ----------------------------------------------------------------------------------------- Kubernetes


@pytest.mark.kube
def test_manifests_apply_to_the_cluster_and_roll_out(kube):
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    ns = kube.namespace
    params = {"namespace": ns, "db_host": "", "s3_bucket": "mlflow", "s3_endpoint": "",
              "db_password": f"k8s:{ns}/mlflow-db/password", "s3_access_key": f"k8s:{ns}/mlflow-s3/access-key-id",
              "s3_secret_key": f"k8s:{ns}/mlflow-s3/secret-access-key", "ingress_host": "mlflow.example.test",
              "tracking_uri": "http://127.0.0.1:9", "timeout": 60.0}
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    target = LOCAL.model_copy(update={"kube_context": kube.context})
    t = make_context(RUNBOOK, mode="apply", target=target, clients=Clients(target, kube=k), **params)
    assert t.server_mode == "cluster" and t.kube is k
    assert _skipped(tracking.deploy, t) is None and "not the embedded mode" in _skipped(tracking.start_embedded, t)
    # the Secrets are missing: preflight says which
    failed = [c for c in cluster_preflight(t) if not c.passed]
    assert [c.name for c in failed] == ["Secret mlflow-db", "Secret mlflow-s3"]
    assert "does not exist" in failed[0].reason
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="mlflow-db"),
                                                      string_data={"password": "in-cluster-db-password"}))
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="mlflow-s3"), string_data={
        "access-key-id": "cluster-key-id", "secret-access-key": "cluster-secret-key"}))
    assert all(c.passed for c in cluster_preflight(t))
    assert t.secret("db_password") == "in-cluster-db-password"  # a k8s: reference, read in the cluster
    plan = tracking.plan_deploy(t)
    assert plan.outcome == "planned" and plan.details["dry_run"], plan.summary
    assert [r["action"] for r in plan.rows] == ["create", "create", "create"]
    result = tracking.deploy(t)
    assert result.outcome == "changed", result.summary
    dep = k.get(kind="Deployment", name="mlflow", namespace=ns)
    assert dep["status"]["availableReplicas"] == 1
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    pods = k.pods(namespace=ns, selector="app.kubernetes.io/name=mlflow")
    assert pods and all(p["ready"] == "1/1" for p in pods), pods
    assert k.get(kind="Ingress", name="mlflow", namespace=ns)["spec"]["rules"][0]["host"] == "mlflow.example.test"
    # a re-run is idempotent (server-side apply): the plan now says update
    assert {r["action"] for r in tracking.plan_deploy(t).rows} == {"update (server-side apply)"}
    k.close()
    with contextlib.suppress(Exception):
        kube.close()


def test_cluster_mode_plan_then_approved_apply_as_its_service_account(kube, mlflow_server, opsbook_run, tmp_path,
                                                                    declared_rbac):
    """Cluster mode through the CLI, as the runbook's own ServiceAccount with exactly its declared RBAC
    (``rbac.py``): the manifests applied, the secrets read through ``k8s:`` references (the grant's ``get``
    on those Secrets by name), and the verification against the ``mlflow_server`` fixture (its URL,
    database, bucket). The Secrets are the admin's."""
    from kubernetes import client

    from .rbac import assert_applied, cli_env, plan_and_apply

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
    grant = declared_rbac(RUNBOOK, params)
    m = plan_and_apply(opsbook_run, RUNBOOK, params, cli_env(grant.targets(tmp_path / "targets.yaml", kube)))
    assert_applied(m)
    assert {s["id"]: s["outcome"] for s in m["steps"]}["deploy"] == "changed"


def test_a_failed_deploy_is_undone_from_its_record(kube, mlflow_server, opsbook_run, tmp_path, declared_rbac):
    """As the runbook's ServiceAccount, through the CLI. In cluster mode ``deploy`` is the runbook's
    only change, so what fails is that change's own later part: the objects are applied, then the
    rollout cannot complete (the image is from a registry under ``.invalid``, RFC 2606: it never
    pulls, on any cluster, and the wait stops at ErrImagePull/ImagePullBackOff); the verification
    after it does not run. A Service ``mlflow`` was there before (an earlier hand-made install): the
    apply changes it and creates the Deployment and Ingress. The failed apply's record keeps all
    three, the CLI lists them with the exact ``opsbook undo`` command, and the approved undo deletes
    what was created and puts the Service back: the namespace is compared with its state before the
    apply, object by object; a second undo is refused."""
    from kubernetes import client

    from .rbac import cli_env, plan_and_apply
    from .undo import assert_second_undo_refused, assert_undone, differences, snapshot, undo

    ns, s3, pg = kube.namespace, mlflow_server.s3, mlflow_server.postgres
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(ns, {"metadata": {"name": "mlflow-db"}, "stringData": {"password": "trusted"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "mlflow-s3"}, "stringData": {
        "access-key-id": s3.access_key, "secret-access-key": s3.secret_key}})
    kube.kubectl("create", "service", "clusterip", "mlflow", "--tcp=5000:5000")  # the earlier install's
    params = {"namespace": ns, "db_host": pg.host, "db_port": str(pg.port), "db_name": mlflow_server.database,
              "db_user": pg.user, "db_password": f"k8s:{ns}/mlflow-db/password", "s3_bucket": s3.bucket,
              "s3_prefix": "artifacts", "s3_endpoint": s3.endpoint_url,
              "s3_access_key": f"k8s:{ns}/mlflow-s3/access-key-id",
              "s3_secret_key": f"k8s:{ns}/mlflow-s3/secret-access-key", "tracking_uri": mlflow_server.tracking_uri,
              "ingress_host": "mlflow.example.test", "image": "registry.invalid/mlflow/mlflow:v0-never",
              "timeout": "60"}
    grant = declared_rbac(RUNBOOK, params)
    env = cli_env(grant.targets(tmp_path / "targets.yaml", kube))
    before = snapshot(kube, [ns])
    assert f"Service/{ns}/mlflow" in before and f"Deployment/{ns}/mlflow" not in before

    m = plan_and_apply(opsbook_run, RUNBOOK, params, env)
    r = m["_proc"]
    assert r.returncode == 1 and m["status"] == "failed", r.stdout + r.stderr
    steps = {s["id"]: s for s in m["steps"]}
    assert steps["deploy"]["outcome"] == "failed" and "registry.invalid" in steps["deploy"]["summary"], steps["deploy"]
    assert "track-experiment" not in steps  # the run stopped at the failed change
    undo_rec = steps["deploy"]["undo"] or {}  # journalled before the rollout wait: kept although it failed
    assert undo_rec.get("by") == "opsbook.ops.journal:journal", undo_rec
    made = {(e["kind"], e["name"]): e for e in undo_rec["entries"]}
    assert list(made) == [("Deployment", "mlflow"), ("Service", "mlflow"), ("Ingress", "mlflow")]
    assert made["Deployment", "mlflow"]["before"] is None and made["Ingress", "mlflow"]["before"] is None
    svc = made["Service", "mlflow"]
    assert svc["before"]["spec"]["selector"] == {"app": "mlflow"}
    assert svc["after"]["spec"]["selector"]["app.kubernetes.io/name"] == "mlflow"
    out = r.stdout + r.stderr
    for line in (f"deploy: Deployment/{ns}/mlflow created", f"deploy: Service/{ns}/mlflow changed",
                 f"deploy: Ingress/{ns}/mlflow created", f"opsbook undo {m['run_id']}"):
        assert line in out, out[-3000:]

    undo_plan, undo_apply = undo(opsbook_run, m["run_id"], env, cwd=tmp_path)
    rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
    assert [(row["what"], row["now"]) for row in rows] == [  # newest first
        (f"Ingress/{ns}/mlflow", "as-left"), (f"Service/{ns}/mlflow", "as-left"), (f"Deployment/{ns}/mlflow", "as-left")]
    assert_undone(undo_apply, m["run_id"])
    assert differences(before, snapshot(kube, [ns])) == []  # the Service as the earlier install left it
    assert_second_undo_refused(opsbook_run, m["run_id"], env, undo_apply["run_id"], cwd=tmp_path)
