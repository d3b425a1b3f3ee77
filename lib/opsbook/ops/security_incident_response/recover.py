"""Phase 5, recovery: the isolation lifted, the accounts re-enabled and the replicas restored, then
health verified (pods Ready, the error rate back under its limit).

Recovery usually runs in a later run than the containment it undoes, so it restores from the copies
containment saved as evidence: this run's own, and those in the records of earlier runs of the same
incident, each checked against its record's manifest before it is trusted. Everything that puts
something back from a saved copy lives here (:func:`saved_copies`, :func:`restore_item`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import NotFound, OpsbookError, TimedOut
from opsbook.ops.base import Result, change, check
from opsbook.ops.security_incident_response import objects, tokens
from opsbook.ops.security_incident_response.contain import item_rows
from opsbook.ops.security_incident_response.context import (
    ACCOUNTS_EVIDENCE,
    QUARANTINE_LABEL,
    SA_ANNOTATION,
    SCALE_EVIDENCE,
    Context,
    apply_needs_cluster,
    first,
    unless,
)

_NOT_LIFTING = unless("lift_isolation", why="lift_isolation is false (set it to lift the quarantine)")
_NOT_REENABLING = unless("reenable_accounts", why="reenable_accounts is false: the compromised accounts stay disabled")


# ------------------------------------------------------------------------------------ saved copies


def saved_copies(ctx: Context, name: str) -> list[dict[str, Any]]:
    """Every copy of evidence ``name`` saved by earlier runs of this incident (oldest first), each
    checked against its record's manifest before it is trusted."""
    out: list[dict[str, Any]] = []
    for r in ctx.incident_runs(ctx.settings.incident_id):
        rel = f"evidence/{name}"
        digest = (r.manifest.get("files") or {}).get(rel)
        path = r.path / rel
        if not digest or not path.is_file():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise OpsbookError(f"{r.record}/{rel} does not match its manifest: not trusted for a restore")
        out.append({"run_id": r.run_id, **json.loads(data)})
    return out


def accounts_to_restore(ctx: Context) -> list[dict[str, Any]]:
    """What disabling the accounts removed: the earlier runs' copies, then this run's own."""
    items: list[dict[str, Any]] = []
    for copy_ in saved_copies(ctx, ACCOUNTS_EVIDENCE):
        items.extend(copy_.get("items") or [])
    items.extend(ctx.disabled)
    return items


def replicas_to_restore(ctx: Context) -> dict[str, int]:
    """The replica counts before a scale-down: the earlier runs', then this run's (later wins)."""
    wanted: dict[str, int] = {}
    for c in saved_copies(ctx, SCALE_EVIDENCE):
        wanted.update(c.get("replicas") or {})
    wanted.update(ctx.scaled)
    return wanted


def restore_item(ctx: Context, item: dict[str, Any]) -> str | None:
    """Put one saved object back: a deleted binding re-created, removed subjects re-added (in their
    saved order), a token Secret re-created empty (a new token is minted, never the leaked one).
    Returns what was done, or None when it is already there (idempotent)."""
    ns = item["namespace"] or None
    obj = copy.deepcopy(item["object"])
    try:
        cur = ctx.kube.get(kind=item["kind"], name=item["name"], namespace=ns)
    except NotFound:
        cur = None
    if item["kind"] == "Secret":
        if cur is not None:
            return None
        obj.pop("dataSha256", None)
        objects.create(ctx, obj)
        return "re-created (a new token is minted)"
    if cur is None:
        objects.create(ctx, obj)
        return "re-created"
    subjects = list(cur.get("subjects") or [])
    missing = [x for x in item["removed_subjects"] if x not in subjects]
    if not missing:
        return None
    want = obj.get("subjects") or []
    cur["subjects"] = [x for x in want if x in subjects or x in missing] + [x for x in subjects if x not in want]
    objects.put(ctx, cur)
    return f"{len(missing)} subject(s) re-added"


# ------------------------------------------------------------------------------------------ isolation


def plan_lift_isolation(ctx: Context) -> Result:
    s = ctx.settings
    if not ctx.has_cluster:
        return Result(summary=f"would remove label {QUARANTINE_LABEL} and NetworkPolicy {ctx.policy_name} "
                      "(no cluster)", outcome="planned")
    pods = ctx.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={ctx.quarantine_value}")
    rows = [{"object": f"Pod/{p['metadata']['name']}", "action": f"remove label {QUARANTINE_LABEL}"} for p in pods]
    rows.append({"object": f"NetworkPolicy/{ctx.policy_name}", "action": "delete"})
    return Result(summary=f"would release {len(pods)} pod(s) from quarantine", outcome="planned", rows=rows)


@change("lift-isolation", "Lift the isolation", plan=plan_lift_isolation, phase="recovery",
        skip_if=first(_NOT_LIFTING, apply_needs_cluster))
def lift_isolation(ctx: Context) -> Result:
    """Remove the quarantine label from the pods of this incident and delete the policy (idempotent)."""
    s = ctx.settings
    pods = ctx.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={ctx.quarantine_value}")
    rows = []
    for p in pods:
        objects.patch_labels(ctx, p["metadata"]["name"], {QUARANTINE_LABEL: None})
        rows.append({"object": f"Pod/{p['metadata']['name']}", "action": "label removed"})
    deleted = ctx.kube.delete(kind="NetworkPolicy", name=ctx.policy_name, namespace=s.namespace)
    rows.append({"object": f"NetworkPolicy/{ctx.policy_name}", "action": "deleted" if deleted else "already gone"})
    changed = bool(pods) or deleted
    return Result(summary=f"{len(pods)} pod(s) released" + ("" if changed else " (nothing was isolated)"),
                  outcome="changed" if changed else "ok", rows=rows)


# ------------------------------------------------------------------------------------------- accounts


def plan_reenable_accounts(ctx: Context) -> Result:
    items = accounts_to_restore(ctx)
    return Result(summary=f"would restore {len(items)} object(s) from the saved copies", outcome="planned",
                  rows=item_rows(items, "undo: "))


@change("reenable-accounts", "Re-enable the accounts", plan=plan_reenable_accounts, phase="recovery",
        skip_if=first(_NOT_REENABLING, apply_needs_cluster))
def reenable_accounts(ctx: Context) -> Result:
    """Put back what containment removed, from the saved copies (:func:`restore_item`). Idempotent."""
    rows, changed = [], 0
    items = accounts_to_restore(ctx)
    for it in items:
        label = f"{it['kind']}/{it['namespace'] + '/' if it['namespace'] else ''}{it['name']}"
        done = restore_item(ctx, it)
        changed += done is not None
        rows.append({"object": label, "action": done or "present"})
    # token Secrets the copies do not hold: issued since containment (a legacy token controller)
    restored = {(it["namespace"], it["name"]) for it in items if it["kind"] == "Secret"}
    accounts = {(it["namespace"], (it["object"]["metadata"].get("annotations") or {}).get(SA_ANNOTATION, ""))
                for it in items if it["kind"] == "Secret"}
    extra = [f"{ns}/{n}" for ns, sa in sorted(accounts) if sa for n in tokens.token_names(ctx, (ns, sa))
             if (ns, n) not in restored]
    rows += [{"object": f"Secret/{name}", "action": "also present: not from the saved copy (issued after containment "
              "by a legacy token controller?)"} for name in extra]
    return Result(summary=f"{changed} object(s) restored" + ("" if changed else " (nothing to restore)")
                  + (f"; {len(extra)} other token Secret(s) of these accounts: {', '.join(extra)}" if extra else ""),
                  outcome="changed" if changed else "ok", rows=rows, details={"other_tokens": extra} if extra else {})


# -------------------------------------------------------------------------------------------- replicas


def plan_scale_back(ctx: Context) -> Result:
    wanted = replicas_to_restore(ctx)
    if not wanted:
        return Result(summary="nothing was scaled down", outcome="skipped")
    return Result(summary=f"would scale {len(wanted)} Deployment(s) back", outcome="planned",
                  rows=[{"deployment": d, "replicas": r} for d, r in wanted.items()])


@change("scale-back", "Scale the workload back", plan=plan_scale_back, phase="recovery", needs_cluster=True)
def scale_back(ctx: Context) -> Result:
    """Restore the replica counts saved by the scale-down (this run's or an earlier run's of the incident)."""
    wanted = replicas_to_restore(ctx)
    if not wanted:
        return Result(summary="nothing was scaled down", outcome="skipped")
    for d, r in wanted.items():
        objects.scale(ctx, d, r)
    return Result(summary=f"{len(wanted)} Deployment(s) scaled back", outcome="changed",
                  rows=[{"deployment": d, "replicas": r} for d, r in wanted.items()])


# --------------------------------------------------------------------------------------------- health


@check("pods-ready", "Pods Ready", phase="recovery", needs_cluster=True)
def pods_ready(ctx: Context, *, poll: float = 1.0) -> Result:
    """Check: every affected pod is Running and Ready (in apply mode, waits up to ``timeout``; a plan
    reports how they are now and does not fail on it)."""
    s = ctx.settings
    seen: dict[str, list[dict[str, Any]]] = {}

    def all_ready() -> Any:
        pods = ctx.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
        rows = [{"pod": p["metadata"]["name"], "phase": (p.get("status") or {}).get("phase", ""),
                 "ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                              for c in (p.get("status") or {}).get("conditions") or [])} for p in pods]
        seen["rows"] = rows
        return rows if rows and all(r["ready"] for r in rows) else Pending(f"{sum(r['ready'] for r in rows)}/{len(rows)} Ready")

    try:  # a plan looks once; an apply waits up to the run's timeout
        rows = wait_until(all_ready, timeout=s.timeout if ctx.applying else 0, interval=poll,
                          what="affected pods not Ready")
    except TimedOut:
        if "rows" not in seen:
            raise
        rows = seen["rows"]
        return Result(summary=f"{sum(r['ready'] for r in rows)}/{len(rows)} pod(s) Ready",
                      outcome="failed" if ctx.applying else "ok", rows=rows)
    return Result(summary=f"{len(rows)} pod(s) Ready", outcome="ok", rows=rows)


def _no_error_rate(ctx: Context) -> str | None:
    if ctx.prometheus_url and ctx.settings.error_rate_query:
        return None
    return "no Prometheus URL or error_rate_query: error rate not checked"


@check("error-rate", "Error rate back to baseline", phase="recovery", skip_if=_no_error_rate)
def error_rate(ctx: Context) -> Result:
    """Check: the error rate (``error_rate_query``) stayed at or below ``error_rate_max`` over the last
    ``monitor_seconds`` seconds."""
    s = ctx.settings
    end = time.time()
    data = ctx.prometheus.query_range(s.error_rate_query, end - s.monitor_seconds, end,
                                      max(1, s.monitor_seconds // 30))
    # the client's DataFrame: one row per series and step, column ``value``
    values = [float(v) for v in data["value"].tolist() if v == v] if len(data) else []  # v == v: not NaN
    if not values:
        return Result(summary=f"no samples for {s.error_rate_query} over {s.monitor_seconds} s", outcome="failed")
    worst = max(values)
    return Result(summary=f"max error rate {worst:g} over {s.monitor_seconds} s (limit {s.error_rate_max:g})",
                  outcome="ok" if worst <= s.error_rate_max else "failed",
                  details={"max": worst, "samples": len(values)})
