"""The prerequisites, checked for real before anything is deployed: a PostgreSQL connection with the
referenced credentials, the bucket (a probe object written, read back and deleted), and on a cluster
the namespace and Secrets; on the embedded server, its folder and port. A prerequisite that does not
apply where the run goes passes, saying why it was skipped, so the table always shows every one.
"""

from __future__ import annotations

from importlib import metadata

from opsbook.errors import ClientError, OpsbookError
from opsbook.ops import base
from opsbook.ops.base import Check
from opsbook.ops.mlflow_tracking_server.cluster import cluster_preflight, fail_reason
from opsbook.ops.mlflow_tracking_server.context import Context
from opsbook.ops.mlflow_tracking_server.embedded import embedded_preflight, skipped


@base.preflight("preflight", "Preflight")
def preflight(ctx: Context) -> list[Check]:
    """The prerequisites: MLflow client, database, bucket, namespace and Secrets (or the local folder)."""
    checks: list[Check] = []
    try:
        checks.append(Check("MLflow client installed", True, f"mlflow {metadata.version('mlflow')}"))
    except metadata.PackageNotFoundError:
        checks.append(Check("MLflow client installed", False, "the mlflow package is not installed"))
    if ctx.embedded:
        return checks + embedded_preflight(ctx)
    checks += database_preflight(ctx)
    checks += bucket_preflight(ctx)
    if ctx.server_mode == "cluster":
        checks += cluster_preflight(ctx)
    else:
        checks.append(skipped("namespace and Secrets", f"target {ctx.target_name} has no cluster: nothing is deployed"))
    return checks


def database_preflight(ctx: Context) -> list[Check]:
    name = "PostgreSQL backend store"
    if not ctx.settings.db_host:
        return [skipped(name, "db_host is empty")]
    try:
        db = ctx.db()
        info = db.info()
    except (ClientError, OpsbookError) as exc:
        return [Check(name, False, fail_reason(exc))]
    schema = (f"MLflow schema at revision {info['mlflow_schema']}" if info["mlflow_schema"] else
              "no MLflow schema yet: the server creates it on its first start")
    return [Check(name, True, f"PostgreSQL {info['server_version']} at {db.dsn}, connected as {info['user']}; "
                  f"{schema}", evidence=info)]


def bucket_preflight(ctx: Context) -> list[Check]:
    s = ctx.settings
    if not s.s3_bucket:
        return [skipped("S3 bucket exists and is writable", "s3_bucket is empty")]
    try:
        s3 = ctx.s3()
        if not s3.bucket_exists(s.s3_bucket):
            return [Check("S3 bucket exists", False, f"bucket {s.s3_bucket!r} does not exist on {s3.where}")]
    except (ClientError, OpsbookError) as exc:
        return [Check("S3 bucket exists", False, fail_reason(exc))]
    out = [Check("S3 bucket exists", True, f"{s.s3_bucket} on {s3.where}")]
    try:
        probe = s3.probe(s.s3_bucket, s.s3_prefix)
        out.append(Check("S3 bucket writable", probe["deleted"], f"put, read back and deleted {probe['key']} "
                         f"in {probe['seconds']} s" if probe["deleted"] else
                         f"the probe object {probe['key']} could not be deleted", evidence=probe))
    except ClientError as exc:
        out.append(Check("S3 bucket writable", False, fail_reason(exc)))
    return out
