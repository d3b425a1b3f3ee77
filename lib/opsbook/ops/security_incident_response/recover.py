"""Phase 5, recovery: the isolation lifted, the accounts re-enabled and the replicas restored, then
health verified (pods Ready, the error rate back under its limit).

Recovery usually runs in a later run than the containment it undoes, so it restores from the copies
containment saved as evidence: this run's own, and those in the records of earlier runs of the same
incident, each checked against its record's manifest before it is trusted. Everything that puts
something back from a saved copy lives here (:func:`saved_copies`, :func:`restore_item`), the undo of
disabling the accounts too (:data:`ACCOUNTS`: ``opsbook undo`` of a containment re-enables them with
the same :func:`restore_item`; of a recovery, disables them again with containment's
:func:`~opsbook.ops.security_incident_response.objects.disable_item`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import NotFound, OpsbookError, TimedOut
from opsbook.ops.base import Result, change, check
from opsbook.ops.journal import (
    JOURNAL,
    Status,
    Undoer,
    comparable,
    differences,
    kept_copy,
    register,
    same_state,
)
from opsbook.ops.security_incident_response import objects, tokens
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
from opsbook.ops.security_incident_response.objects import item_rows

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


def restore_item(ctx: Context, item: Mapping[str, Any]) -> str | None:
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


# ------------------------------------------------------------------------------- the undo of accounts

_ITEM = ("kind", "namespace", "name", "action", "removed_subjects")


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


def _subjects(subjects: list[Mapping[str, Any]]) -> str:
    return ", ".join(f"{x.get('kind')}:{x.get('name')}" for x in subjects)


def disabled_entry(item: Mapping[str, Any], after: Mapping[str, Any] | None) -> dict[str, Any]:
    """The undo entry of one saved item that disabling the accounts took away (``after``: the
    binding as it left it; None: deleted): the item itself, which :func:`restore_item` puts back, and
    the binding's copy and resourceVersion after, to tell a change made since."""
    return {"type": "account", "op": "disabled", **{k: item[k] for k in _ITEM}, "object": item["object"],
            "after": kept_copy(after), "resourceVersion": _rv(after)}


def reenabled_entry(item: Mapping[str, Any], before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                    done: str) -> dict[str, Any]:
    """The undo entry of one saved item that re-enabling put back (``done``: what :func:`restore_item`
    did), with the object before and after it."""
    return {"type": "account", "op": "reenabled", **{k: item[k] for k in _ITEM}, "done": done,
            "before": kept_copy(before), "after": kept_copy(after), "resourceVersion": _rv(after)}


class AccountsUndoer(Undoer):
    """The undo of disabling the accounts (entries ``op: disabled``: each saved item put back by
    :func:`restore_item`, as recovery does) and of re-enabling them (``op: reenabled``: taken away
    again by :func:`~opsbook.ops.security_incident_response.objects.disable_item`, as containment
    does). An entry is as the apply left it while the object is still deleted, or the binding
    unchanged since (its resourceVersion); already restored when there is nothing left to do;
    otherwise changed since, with the difference (refused)."""

    name = "opsbook.ops.security_incident_response.recover:accounts"

    def key(self, entry: Mapping[str, Any]) -> str | None:
        return f"{entry['kind']}:{entry['namespace'] or ''}:{entry['name']}"

    def merge(self, older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any] | None:
        """Disabled, then re-enabled by the same apply (containment and recovery in one run): nothing
        to undo when it is back as it was; else the older entry, as the newer left the object."""
        if same_state(self._before(older), newer.get("after")):
            return None
        return {**older, "after": newer.get("after"), "resourceVersion": newer.get("resourceVersion")}

    @staticmethod
    def _before(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return entry["object"] if entry["op"] == "disabled" else entry.get("before")

    @staticmethod
    def _recreated(entry: Mapping[str, Any]) -> bool:
        return entry["kind"] == "Secret" or str(entry.get("done", "")).startswith("re-created")

    def describe(self, entry: Mapping[str, Any]) -> tuple[str, str]:
        removed = _subjects(entry["removed_subjects"])
        if entry["op"] == "disabled":
            return objects.ref(entry), (
                "re-create it empty (restore_item: the cluster mints a new token, never the leaked one)"
                if entry["kind"] == "Secret" else
                "re-create it from the copy saved before the apply deleted it (restore_item)"
                if entry["action"] == "delete" else f"re-add {removed} (restore_item)")
        return objects.ref(entry), ("delete it again (the apply re-created it)" if self._recreated(entry)
                                    else f"remove {removed} again (the apply re-added them)")

    def status(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        cur = objects.read(ctx, entry)
        rv = _rv(cur)
        subjects = list((cur or {}).get("subjects") or [])
        if cur is not None and entry.get("after") is not None and (
                rv == entry.get("resourceVersion") or same_state(cur, entry["after"])):
            return Status("as-left", f"resourceVersion {rv}")

        def since(what: Mapping[str, Any] | None) -> str:
            return "; ".join(differences(comparable(what), comparable(cur))[:5])

        if entry["op"] == "disabled":
            if cur is None:
                return Status("as-left", "absent (the apply deleted it)") if entry["action"] == "delete" else \
                    Status("drifted", "deleted since the apply")
            missing = [x for x in entry["removed_subjects"] if x not in subjects]
            if not missing:  # restore_item would do nothing
                return Status("restored", "present" if entry["action"] == "delete" else "the subjects are back")
            if entry["action"] == "delete":
                return Status("drifted", f"exists again since the apply, without {_subjects(missing)}: "
                              + since(entry["object"]))
            return Status("drifted", f"changed since the apply (resourceVersion {entry.get('resourceVersion')} -> "
                          f"{rv}): " + since(entry.get("after")))
        # re-enabled by the apply: the undo takes it away again
        if cur is None:
            return Status("restored", "absent, as before the apply") if self._recreated(entry) else \
                Status("drifted", "deleted since the apply")
        if entry["kind"] == "Secret":
            return Status("as-left", "present (the apply re-created it)")
        if not self._recreated(entry) and not any(x in subjects for x in entry["removed_subjects"]):
            return Status("restored", "the subjects are removed again")
        return Status("drifted", f"changed since the apply (resourceVersion {entry.get('resourceVersion')} -> {rv}): "
                      + since(entry.get("after")))

    def reverse(self, ctx: Any, entry: Mapping[str, Any]) -> str:
        if entry["op"] == "disabled":
            return restore_item(ctx, entry) or "already there"
        delete = self._recreated(entry)
        objects.disable_item(ctx, {**entry, "action": "delete" if delete else "remove_subjects"})
        return "deleted again" if delete else f"{len(entry['removed_subjects'])} subject(s) removed again"


#: ``@change(..., undo=ACCOUNTS)``: the entries of disabling (or re-enabling) the accounts
ACCOUNTS = register(AccountsUndoer())


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
        skip_if=first(_NOT_LIFTING, apply_needs_cluster), undo=JOURNAL)
def lift_isolation(ctx: Context) -> Result:
    """Remove the quarantine label from the pods of this incident and delete the policy (idempotent)."""
    s = ctx.settings
    pods = ctx.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={ctx.quarantine_value}")
    rows = []
    for p in pods:
        with ctx.journal.object(ctx.kube, kind="Pod", name=p["metadata"]["name"], namespace=s.namespace,
                                api_version="v1"):
            objects.patch_labels(ctx, p["metadata"]["name"], {QUARANTINE_LABEL: None})
        rows.append({"object": f"Pod/{p['metadata']['name']}", "action": "label removed"})
    deleted = ctx.journal.delete(ctx.kube, kind="NetworkPolicy", name=ctx.policy_name, namespace=s.namespace)
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
        skip_if=first(_NOT_REENABLING, apply_needs_cluster), undo=ACCOUNTS)
def reenable_accounts(ctx: Context) -> Result:
    """Put back what containment removed, from the saved copies (:func:`restore_item`). Idempotent."""
    rows, changed = [], 0
    items = accounts_to_restore(ctx)
    for it in items:
        label = objects.ref(it)
        before = objects.read(ctx, it)
        done = restore_item(ctx, it)
        changed += done is not None
        if done is not None:  # the undo takes it away again
            ctx.journal.record(reenabled_entry(it, before, objects.read(ctx, it), done))
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


@change("scale-back", "Scale the workload back", plan=plan_scale_back, phase="recovery", needs_cluster=True,
        undo=JOURNAL)
def scale_back(ctx: Context) -> Result:
    """Restore the replica counts saved by the scale-down (this run's or an earlier run's of the incident)."""
    wanted = replicas_to_restore(ctx)
    if not wanted:
        return Result(summary="nothing was scaled down", outcome="skipped")
    for d, r in wanted.items():
        with ctx.journal.object(ctx.kube, kind="Deployment", name=d, namespace=ctx.settings.namespace,
                                api_version="apps/v1"):
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
