"""The embedded server: on the ``local`` target an ``mlflow server`` on loopback stands in for the
deployment, with a SQLite database and an artifact folder under its state folder. It is started in
apply mode, or reused when one already answers on ``local_port``, and keeps running after the run
(so that the UI stays available and the next run reuses it).

Undo: starting it is declared irreversible (``opsbook undo`` lists it and says how to stop it). It
is a process on the operator's machine, not a change to the target, and it is meant to outlive the
run; an undo runs later from the record, possibly elsewhere, where a recorded pid may by then be
another process, so stopping it is left to the explicit ``opsbook mlflow stop``. A reused server
is not a change: nothing is recorded for it.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from opsbook.ops.base import Check, Result, change, step
from opsbook.ops.journal import irreversible
from opsbook.ops.mlflow_tracking_server.context import Context


def not_embedded(ctx: Context) -> str | None:
    """Why the embedded server's steps do not apply: the server under test is another one."""
    if ctx.embedded:
        return None
    return f"not the embedded mode: the server is {ctx.configured_uri or 'on the cluster'}"


def skipped(name: str, reason: str) -> Check:
    """A prerequisite that does not apply here: passed, saying why it was not checked."""
    return Check(name, True, f"skipped: {reason}")


def embedded_preflight(ctx: Context) -> list[Check]:
    """The state folder can be written (or, in plan mode, created) and the port is free or already
    the server's; the stores a cluster would need are not checked here."""
    from opsbook.clients.mlflow import port_taken

    local = ctx.local
    out = []
    if not ctx.applying and not local.state_dir.exists():  # plan mode creates nothing
        parent = next(p for p in local.state_dir.parents if p.exists())
        ok = os.access(parent, os.W_OK | os.X_OK)
        out.append(Check("state folder writable", ok, f"{local.state_dir} can be created under {parent}" if ok
                         else f"{parent} is not writable: {local.state_dir} cannot be created"))
    else:
        try:
            local.state_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=local.state_dir, prefix=".probe-"):
                pass
            out.append(Check("state folder writable", True, str(local.state_dir)))
        except OSError as exc:
            out.append(Check("state folder writable", False, f"{local.state_dir}: {exc.strerror}"))
    if local.running():
        out.append(Check("embedded server port", True, f"an MLflow server answers at {local.url}: it is reused"))
    elif port_taken(local.host, local.port):
        out.append(Check("embedded server port", False, f"{local.host}:{local.port} is taken by something that "
                         "is not an MLflow server: choose another local_port"))
    else:
        out.append(Check("embedded server port", True, f"{local.host}:{local.port} is free: the server "
                         + ("starts in the next steps" if ctx.applying else "would start in apply mode")))
    reason = "the embedded server on target local uses SQLite and a local folder"
    out += [skipped("PostgreSQL backend store", reason), skipped("S3 bucket exists and is writable", reason),
            skipped("namespace and Secrets", "target local has no cluster")]
    return out


def plan_embedded(ctx: Context) -> Result:
    local = ctx.local
    if local.running():
        return Result(summary=f"an MLflow server already answers at {local.url}: it would be reused",
                      outcome="planned")
    return Result(summary=f"would start `mlflow server` on {local.url} (SQLite {local.db_path}, artifacts in "
                  f"{local.artifacts_dir})", outcome="planned")


#: why starting the embedded server is not undone (see the module docstring)
NOT_UNDONE = ("a local process on this machine, not a change to the target, and kept running on purpose (its UI, "
              "the next run reuses it): stop it with `opsbook mlflow stop` (add --state-dir/--port if not the "
              "defaults); its SQLite database and artifact folder stay")


@change("start-embedded", "Start the embedded server", plan=plan_embedded, skip_if=not_embedded,
        undo=irreversible(NOT_UNDONE))
def start_embedded(ctx: Context) -> Result:
    """Start the embedded server (or reuse the one answering on the port)."""
    status = ctx.local.ensure(timeout=ctx.settings.timeout)
    rows = [{"field": k, "value": str(v)} for k, v in (
        ("url", status.url), ("pid", status.pid), ("backend store", status.backend_store_uri),
        ("artifacts", status.artifacts_destination), ("log", status.log_file), ("stop with", status.stop_command))]
    verb = "reused the server" if status.reused else f"started in {status.started_seconds:.1f} s"
    return Result(summary=f"{verb} at {status.url}", outcome="ok" if status.reused else "changed", rows=rows,
                  details={"pid": status.pid, "reused": status.reused})


@step("embedded-server", "Embedded server", skip_if=not_embedded)
def embedded_status(ctx: Context) -> Result:
    """How the embedded server is running and how to stop it."""
    local = ctx.local
    running = local.running()
    rows = [{"field": "url", "value": local.url}, {"field": "running", "value": "yes" if running else "no"},
            {"field": "pid file", "value": str(local.pid_file)}, {"field": "log", "value": str(local.log_file)},
            {"field": "stop with", "value": local.stop_command}]
    return Result(summary=(f"running at {local.url} (pid {local.pid() or '?'}); stop it with: {local.stop_command}"
                           if running else f"not running at {local.url}"), rows=rows)


# -- the embedded server's SQLite backend store, read-only ----------------------------------------


def sqlite_rows(db_path: Path, run_id: str) -> dict[str, int]:
    """Rows of one run in each of MLflow's run tables."""
    from opsbook.clients.postgres import MLFLOW_RUN_TABLES

    out = {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, column in MLFLOW_RUN_TABLES.items():
            if table in tables:
                out[table] = int(conn.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" = ?',  # noqa: S608
                                              (run_id,)).fetchone()[0])
    return out


def sqlite_revision(db_path: Path) -> str | None:
    """The alembic revision of MLflow's schema; None when the database or the schema does not exist."""
    if not db_path.exists():
        return None
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return str(row[0]) if row else ""
