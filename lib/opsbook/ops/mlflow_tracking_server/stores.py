"""The two stores behind the server, checked directly rather than through MLflow: the backend store
must hold MLflow's schema once the server has started, and the artifact store must exist (the bucket
and prefix, or the embedded server's folder).
"""

from __future__ import annotations

from opsbook.ops.base import Result, check
from opsbook.ops.mlflow_tracking_server.context import Context
from opsbook.ops.mlflow_tracking_server.embedded import sqlite_revision
from opsbook.ops.mlflow_tracking_server.manifests import artifacts_destination


def no_database(ctx: Context, what: str = "the backend store") -> str | None:
    """Why the database is not checked: no ``db_host`` (the embedded server has its own SQLite)."""
    return None if ctx.embedded or ctx.settings.db_host else f"db_host is empty: {what} is not checked"


def no_bucket(ctx: Context, what: str = "the artifact store") -> str | None:
    """Why the bucket is not checked: no ``s3_bucket`` (the embedded server has its own folder)."""
    return None if ctx.embedded or ctx.settings.s3_bucket else f"s3_bucket is empty: {what} is not checked"


@check("backend-store", "Backend store", skip_if=no_database)
def backend_store(ctx: Context) -> Result:
    """Where runs are stored, and that MLflow's schema is there (after the server has started)."""
    if ctx.embedded:
        db_path = ctx.local.db_path
        rev = sqlite_revision(db_path)
        if rev is None:
            return Result(summary=f"{db_path} has no MLflow schema yet" + (
                "" if ctx.applying else " (the embedded server creates it when it starts in apply mode)"),
                outcome="failed" if ctx.applying else "skipped")
        return Result(summary=f"SQLite {db_path}: MLflow schema at revision {rev}", outcome="ok",
                      details={"revision": rev})
    db = ctx.db()
    info = db.info()
    if not info["mlflow_schema"]:
        if ctx.applying:
            return Result(summary=f"{db.dsn}: no MLflow schema: the server has not initialised its database",
                          outcome="failed", details=info)
        return Result(summary=f"{db.dsn}: no MLflow schema yet (created on the server's first start)",
                      outcome="ok", details=info)
    return Result(summary=f"PostgreSQL {info['server_version']} at {db.dsn}: MLflow schema at revision "
                  f"{info['mlflow_schema']}", outcome="ok", details=info)


@check("artifact-store", "Artifact store", skip_if=no_bucket)
def artifact_store(ctx: Context) -> Result:
    """Where artifacts are stored: the bucket and prefix (or the local folder), and what is there."""
    s = ctx.settings
    if ctx.embedded:
        d = ctx.local.artifacts_dir
        if not d.is_dir():
            return Result(summary=f"{d} does not exist yet" + ("" if ctx.applying else " (created in apply mode)"),
                          outcome="failed" if ctx.applying else "skipped")
        n = sum(1 for p in d.rglob("*") if p.is_file())
        return Result(summary=f"local folder {d}: {n} file(s)", outcome="ok", details={"path": str(d), "files": n})
    s3 = ctx.s3()
    if not s3.bucket_exists(s.s3_bucket):
        return Result(summary=f"bucket {s.s3_bucket!r} does not exist on {s3.where}", outcome="failed")
    prefix = s.s3_prefix.strip("/")
    objs = s3.list(s.s3_bucket, prefix + "/" if prefix else "", limit=5000)
    return Result(summary=f"{artifacts_destination(s)} on {s3.where}: {len(objs)} object(s) under the prefix",
                  outcome="ok", details={"objects": len(objs)})
