"""The MLflow, S3 and PostgreSQL clients and the tracking runbook's rendering, without services."""

from __future__ import annotations

import json

import pytest
from opsbook.clients.mlflow import LocalServer, Mlflow, run_url
from opsbook.clients.postgres import Postgres
from opsbook.clients.s3 import S3
from opsbook.errors import Forbidden, Invalid, NotFound, Unreachable
from opsbook.ops import mlflow_tracking_server as tracking
from opsbook.targets import Target
from opsbook.testing.runbook import make_context


def _client_error(code: str, status: int, message: str = ""):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadBucket")


@pytest.mark.parametrize("code,status,kind,needle", [
    ("InvalidAccessKeyId", 403, Forbidden, "rejected the credentials: InvalidAccessKeyId"),
    ("SignatureDoesNotMatch", 403, Forbidden, "rejected the credentials"),
    ("AccessDenied", 403, Forbidden, "access denied"),
    ("404", 404, NotFound, "bucket 'b' does not exist"),
    ("InternalError", 500, Unreachable, "answered HTTP 500"),
    ("InvalidBucketName", 400, Invalid, "refused the request"),
])
def test_s3_errors_are_ours_and_specific(code, status, kind, needle):
    s3 = S3(endpoint_url="http://127.0.0.1:9", access_key="AKEXAMPLEKEY", secret_key="very-secret-value")
    err = s3._error(_client_error(code, status), "HEAD bucket b", "b")
    assert isinstance(err, kind) and needle in str(err)
    assert "very-secret-value" not in str(err) + repr(s3)


def test_s3_connection_refused_is_unreachable():
    s3 = S3(endpoint_url="http://127.0.0.1:9", access_key="k" * 8, secret_key="s" * 16, connect_timeout=1)
    with pytest.raises(Unreachable, match="cannot connect to S3 at http://127.0.0.1:9"):
        s3.bucket_exists("b")


def test_postgres_dsn_and_errors_never_carry_the_password():
    db = Postgres(host="127.0.0.1", port=9, dbname="mlflow", user="mlflow", password="pw-secret-123",
                  connect_timeout=1)
    assert db.dsn == "postgresql://mlflow@127.0.0.1:9/mlflow" and "pw-secret" not in repr(db)
    with pytest.raises(Unreachable) as info:
        db.server_version()
    assert "pw-secret" not in str(info.value) and "postgresql://mlflow@127.0.0.1:9/mlflow" in str(info.value)


def test_mlflow_client_refuses_a_non_http_uri_and_reports_a_dead_server_fast():
    with pytest.raises(Invalid, match="expected http"):
        Mlflow("sqlite:///x.db")
    with pytest.raises(Unreachable, match="is not reachable"):
        Mlflow("http://127.0.0.1:9").health()
    assert run_url("http://h:5000/", "1", "abc") == "http://h:5000/#/experiments/1/runs/abc"


def test_local_server_paths_and_stop_command(tmp_path):
    srv = LocalServer(tmp_path / "m", port=5999)
    assert srv.url == "http://127.0.0.1:5999" and srv.backend_store_uri == f"sqlite:///{tmp_path}/m/mlflow.db"
    assert "server.pid" in srv.stop_command and srv.pid() is None and srv.stop() is False


def test_modes_follow_the_target_and_tracking_uri():
    assert make_context("mlflow-tracking-server").server_mode == "embedded"
    assert make_context("mlflow-tracking-server", tracking_uri="http://m:5000/").tracking_uri == "http://m:5000"
    assert make_context("mlflow-tracking-server", tracking_uri="http://m:5000").server_mode == "url"
    staging = Target(name="staging", kube_context="staging", mlflow_uri="https://mlflow.staging",
                     s3_endpoint="https://minio.staging")
    s = make_context("mlflow-tracking-server", mode="apply", target=staging)
    assert (s.server_mode, s.tracking_uri, s.s3_endpoint, s.applying) == ("cluster", "https://mlflow.staging",
                                                                         "https://minio.staging", True)


def test_manifests_take_credentials_from_secrets_only():
    ctx = make_context("mlflow-tracking-server", namespace="ml-platform", db_password="k8s:ml-platform/pg/pw",
                       s3_access_key="env:KEY", s3_endpoint="http://minio:9000", ingress_host="mlflow.example.com")
    ms = tracking.render_manifests(ctx)
    assert [m["kind"] for m in ms] == ["Deployment", "Service", "Ingress"]
    c = ms[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "pw"}
    # an env: reference cannot be read by a pod: the conventional Secret is used
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-s3", "key": "access-key-id"}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    args = c["args"]
    uri = args[args.index("--backend-store-uri") + 1]
    assert uri == "postgresql://mlflow:$(MLFLOW_DB_PASSWORD)@postgresql.ml-platform.svc.cluster.local:5432/mlflow"
    assert args[args.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts/mlflow"
    assert "mlflow.example.com" in args[args.index("--allowed-hosts") + 1].split(",")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"] and "value" not in env["MLFLOW_DB_PASSWORD"]
    assert "\"value\"" not in json.dumps([e for e in c["env"] if e["name"].startswith(("MLFLOW_DB", "AWS_SECRET", "AWS_ACCESS"))])
    assert tracking.required_secrets(ctx.settings) == {"pg": ["pw"], "mlflow-s3": ["access-key-id", "secret-access-key"]}


@pytest.mark.parametrize("location,expected", [
    ("mlflow-artifacts:/3/models/m-1/artifacts", ("proxied", "3/models/m-1/artifacts")),
    ("mlflow-artifacts://host:5000/3/models/m-1/artifacts", ("proxied", "3/models/m-1/artifacts")),
    ("s3://bucket/p/3/models/m-1/artifacts", ("s3", "bucket/p/3/models/m-1/artifacts")),
    ("file:///tmp/a/3", ("file", "/tmp/a/3")),
])
def test_artifact_locations(location, expected):
    assert tracking.artifact_path(location) == expected
