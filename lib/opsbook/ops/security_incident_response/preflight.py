"""Before any phase: the incident as this run understands it, and its prerequisites."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Invalid, OpsbookError
from opsbook.ops.base import Check, Result, preflight, step
from opsbook.ops.security_incident_response.context import Context


@step("settings", "Settings")
def incident_settings(ctx: Context) -> Result:
    """The incident, the phases this run covers, the affected workloads, the accounts and the
    known-good state to restore: what the operator confirms before anything is read or changed."""
    s = ctx.settings
    phases = ctx.phases  # a phase that does not exist fails here, before any other step
    accounts = [str(a) for a in ctx.accounts()]
    rows = [
        {"setting": "incident", "value": s.incident_id},
        {"setting": "severity (given)", "value": s.severity},
        {"setting": "phases", "value": ", ".join(phases)},
        {"setting": "affected workloads", "value": f"namespace {s.namespace}, selector {s.selector or '(every pod)'}"},
        {"setting": "compromised accounts", "value": ", ".join(accounts) or "(none named)"},
        {"setting": "responders", "value": ", ".join(s.responders) or "(none recorded)"},
        {"setting": "cluster", "value": "yes" if ctx.has_cluster else "no: Kubernetes steps plan only"},
        {"setting": "prometheus", "value": ctx.prometheus_url or "(none: alerts and error rate not read)"},
        {"setting": "known-good state", "value": "; ".join(x for x in (
            f"helm {s.release} revision {s.rollback_revision}" if s.release and s.rollback_revision else "",
            f"image {s.known_good_image}" if s.known_good_image else "",
            f"database {s.db_name} from {s.backup_file}" if s.backup_file else "") if x) or "(none given)"},
    ]
    return Result(summary=f"incident {s.incident_id}: phases {', '.join(phases)}", rows=rows,
                  details={"incident_id": s.incident_id, "phases": list(phases), "accounts": accounts})


@preflight("preflight", "Preflight")
def incident_preflight(ctx: Context) -> list[Check]:
    """A real incident id for an apply, accounts that parse, the Kubernetes API and Prometheus
    reachable when configured, the backup present when a restore is asked, evidence captured before a
    containment is applied, and an archive to re-enable accounts from."""
    s = ctx.settings
    out = [Check("incident id", bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", s.incident_id)),
                 f"{s.incident_id!r} links every run of this incident")]
    if ctx.applying:
        out.append(Check("incident id is real", s.incident_id != "INC-0000",
                         "an apply must name the real incident (the default INC-0000 is for plans only)"))
    try:
        accounts = ctx.accounts()
        out.append(Check("accounts parse", True, f"{len(accounts)} account(s)"))
    except Invalid as exc:
        out.append(Check("accounts parse", False, str(exc)))
    if ctx.has_cluster:
        try:
            v = ctx.kube.version()
            out.append(Check("Kubernetes API", True, f"reachable, {v.get('gitVersion', '?')}"))
        except ClientError as exc:
            out.append(Check("Kubernetes API", False, str(exc)))
    if ctx.prometheus is not None:
        out.append(Check("Prometheus", bool(_safe(ctx.prometheus.ready)), f"{ctx.prometheus_url} ready"))
    if ctx.backup_file and ctx.wants("eradication"):
        p = Path(ctx.backup_file)
        out.append(Check("backup file", p.exists(), f"{p} " + ("exists" if p.exists() else "does not exist")))
        out.append(Check("database named", bool(s.db_host and s.db_name), "db_host and db_name name the restore target"))
    if ctx.applying and ctx.wants("containment") and not ctx.wants("evidence"):
        earlier = sum(len(r.manifest.get("evidence") or []) for r in ctx.incident_runs(s.incident_id))
        out.append(Check("evidence before containment", earlier > 0,
                         f"{earlier} evidence file(s) in earlier runs of {s.incident_id}" if earlier else
                         "no evidence captured yet for this incident: add phase evidence (or run a plan first)"))
    if s.reenable_accounts and ctx.wants("recovery") and not _has_archive(ctx):
        out.append(Check("archive", False, "re-enabling needs the archive of earlier runs"))
    return out


def _has_archive(ctx: Context) -> bool:
    try:
        ctx.archive()
    except OpsbookError:
        return False
    return True


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClientError:
        return None
