"""The `undo` runbook's logic: take back what a recorded apply changed (``opsbook undo RUN_ID``).

The apply's record holds, for each change it made, what taking it back needs (``undo`` in its step
records, written by :mod:`opsbook.ops.journal`). This runbook reads that record from the archive,
checks that everything is still what the apply left, and in apply mode reverses it, newest change
first, through the undoer each step names; then it checks that everything is back as it was before
the apply. Its plan is a record of its own, approved and consumed like any plan; both its records
name the apply they reverse (parameter ``undo_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from opsbook.errors import ArchiveError, Forbidden, NotFound, OpsbookError
from opsbook.ops import base
from opsbook.ops.base import Check, Result, change, check, preflight, step
from opsbook.ops.journal import Status, Undoer, irreversible, undoer_named

RUNBOOK_ID = "undo"
#: kinds looked at before a namespace the apply created is deleted: anything of these that the apply
#: did not create keeps it (pods, ReplicaSets and events belong to their owners)
NAMESPACE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Service", "ConfigMap", "Secret",
                   "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding")
#: what the cluster puts in every namespace
_DEFAULTS = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


@dataclass(frozen=True)
class Item:
    """One thing the apply changed: the step that changed it, how it is undone, and its entry."""

    step_id: str
    step: str
    undoer: Undoer | None  # None: the step's change cannot be undone (``why``)
    entry: dict[str, Any]
    why: str = ""
    partial: bool = False  # the step failed after making this change

    def describe(self) -> tuple[str, str]:
        if self.undoer is None:
            return f"step {self.step_id}", f"cannot be undone: {self.why}"
        return self.undoer.describe(self.entry)


class Context(base.Context):
    """The undo run: the apply's record, and the clients its entries need."""

    @property
    def kube(self) -> Any:
        return self.clients.kube

    def helm_for(self, namespace: str) -> Any:
        return self.clients.helm(namespace)

    def registry_for(self, tracking_uri: str) -> Any:
        return self.clients.registry(tracking_uri)

    @cached_property
    def applied(self) -> dict[str, Any]:
        """The manifest of the apply this run reverses (``ArchiveError`` if there is none)."""
        return self.archive().load_manifest(self.settings.undo_of)

    @cached_property
    def items(self) -> list[Item]:
        """Everything the apply changed, newest first (within a step, its last change first). Several
        changes of one thing (an object created then changed by a later step) are one item: before as
        the first found it, after as the last left it; changes that cancel out are none."""
        out: list[Item | None] = []
        where: dict[tuple[str, str], int] = {}  # (undoer, key) -> index in out
        for s in self.applied.get("steps") or []:
            undo = s.get("undo")
            if s.get("kind") != "change" or not isinstance(undo, dict):
                continue
            sid, title, partial = str(s.get("id", "")), str(s.get("title", "")), s.get("outcome") == "failed"
            if "none" in undo:
                out.append(Item(sid, title, None, {}, why=str(undo["none"]), partial=partial))
                continue
            undoer = undoer_named(str(undo.get("by", "")))
            for e in undo.get("entries") or []:
                if e.get("type") == "none":
                    out.append(Item(sid, title, None, e, why=str(e.get("why", "")), partial=partial))
                    continue
                key = undoer.key(e)
                if key is not None and (undoer.name, key) in where:
                    i = where.pop((undoer.name, key))
                    older = out[i]
                    out[i] = None
                    assert older is not None
                    merged = undoer.merge(older.entry, e)
                    if merged is None:
                        continue
                    sid_all = older.step_id if older.step_id == sid else f"{older.step_id}+{sid}"
                    out.append(Item(sid_all, title, undoer, merged, partial=partial or older.partial))
                else:
                    out.append(Item(sid, title, undoer, dict(e), partial=partial))
                if key is not None:
                    where[(undoer.name, key)] = len(out) - 1
        return [i for i in out if i is not None][::-1]

    @property
    def reversible(self) -> list[Item]:
        return [i for i in self.items if i.undoer is not None]

    def namespace_leftovers(self, name: str) -> list[str]:
        """Objects in namespace ``name`` that the apply did not create (it is deleted only without any)."""
        mine = {(i.entry.get("kind"), i.entry.get("name")) for i in self.reversible
                if i.entry.get("type") == "object" and i.entry.get("namespace") == name}
        left = []
        for kind in NAMESPACE_KINDS:
            try:
                objs = self.kube.list_objects(kind=kind, namespace=name)
            except NotFound:
                continue
            except Forbidden:
                left.append(f"{kind} (not allowed to list them: cannot tell)")
                continue
            for o in objs:
                meta = o.get("metadata") or {}
                key = (kind, meta.get("name"))
                if key in mine or key in _DEFAULTS or meta.get("deletionTimestamp"):
                    continue
                if kind == "Secret" and (o.get("type") == "kubernetes.io/service-account-token"
                                         or str(meta.get("name", "")).startswith("sh.helm.release.")):
                    continue  # a token of a ServiceAccount, a Helm release's own record
                left.append(f"{kind}/{meta.get('name')}")
        return left

    def status(self, item: Item) -> Status:
        if item.undoer is None:
            return Status("cannot", item.why)
        try:
            return item.undoer.status(self, item.entry)
        except (OpsbookError, OSError) as exc:
            return Status("drifted", f"cannot be read: {exc}")


def _undo_runs(ctx: Context) -> dict[str, list[tuple[str, str]]]:
    """The undo applies in the archive (other than this run), by the apply each reverses: (run id,
    status), oldest first; one that never finished as ``started``."""
    archive = ctx.archive()
    out: dict[str, list[tuple[str, str]]] = {}
    for e in archive.history(runbook=RUNBOOK_ID):
        if e.mode != "apply" or e.run_id == ctx.run_id:
            continue
        try:
            if e.is_start:  # never finished: what it reverses is in the plan it carried out
                params = archive.load_manifest(e.plan).get("parameters") or {} if e.plan else {}
            else:
                params = archive.load_manifest(e.run_id).get("parameters") or {}
        except ArchiveError:
            continue
        out.setdefault(str(params.get("undo_of")), []).append((e.run_id, "started" if e.is_start else str(e.status)))
    return out


def _no_apply_named(ctx: Context) -> str | None:
    return None if ctx.settings.undo_of else "no apply named (undo_of is empty): see the applies that can be undone"


def _changes(manifest: dict[str, Any]) -> tuple[int, list[str]]:
    """How many changes an apply recorded for an undo, and the steps whose change cannot be undone."""
    n, cannot = 0, []
    for s in manifest.get("steps") or []:
        undo = s.get("undo")
        if s.get("kind") != "change" or not isinstance(undo, dict):
            continue
        if "none" in undo:
            cannot.append(str(s.get("id") or s.get("title")))
        n += sum(e.get("type") != "none" for e in undo.get("entries") or [])
    return n, cannot


@preflight("undoable")
def undoable(ctx: Context) -> list[Check]:
    """The apply's record exists and verifies, it is an apply of this target, it has not been undone
    already, and it recorded something to undo. Without ``undo_of`` (a plan only) the run lists the
    applies that can be undone instead."""
    run_id = ctx.settings.undo_of
    if not run_id:
        return [Check("apply named", not ctx.applying, "apply mode needs undo_of (the apply to take back)"
                      if ctx.applying else "none (undo_of is empty): this run lists the applies that can be undone")]
    archive = ctx.archive()
    try:
        m = ctx.applied
    except ArchiveError as exc:
        return [Check("apply record", False, f"{run_id}: {exc}")]
    report = archive.verify(only=run_id)
    problems = [p for p in report.problems if run_id in (p.record or "")]
    checks = [Check("apply record", not problems, "; ".join(f"{p.kind}: {p.detail}" for p in problems)
                    or f"{m.get('runbook_id')} {run_id} ({m.get('status')}, by {m.get('operator')}), verified")]
    if m.get("mode") != "apply" or m.get("runbook_id") == RUNBOOK_ID:
        checks.append(Check("an apply", False, f"{run_id} is a {m.get('mode')} run of {m.get('runbook_id')}: "
                            + ("an undo is not undone (run the runbook again)" if m.get("runbook_id") == RUNBOOK_ID
                               else "only an apply changed anything")))
        return checks
    checks.append(Check("same target", ctx.settings.target == m.get("target"),
                        f"the apply ran on target {m.get('target')}; this run is on {ctx.settings.target}"))
    done = [(r, st) for r, st in _undo_runs(ctx).get(run_id, []) if st in ("succeeded", "started")]
    checks.append(Check("not undone yet", not done, "; ".join(
        f"already undone by {r}" if st == "succeeded" else f"undo run {r} started and never finished: see its "
        "record and the cluster" for r, st in done) or "no undo of it succeeded"))
    try:
        items = ctx.items
    except OpsbookError as exc:
        checks.append(Check("something to undo", False, str(exc)))
        return checks
    reversible = [i for i in items if i.undoer is not None]
    cannot = [i for i in items if i.undoer is None]
    why = "; ".join(f"{i.step_id}: {i.why}" for i in cannot)
    checks.append(Check("something to undo", bool(reversible),
                        f"{len(reversible)} change(s) to take back" + (f"; cannot be undone: {why}" if cannot else "")
                        if reversible else "the apply recorded no change that can be undone" + (f" ({why})" if why else "")))
    if reversible and not ctx.has_cluster and any(i.entry.get("type") in ("object", "helm") for i in reversible):
        checks.append(Check("cluster", False, f"target {ctx.target_name} has no cluster, and the apply changed one"))
    return checks


@step("applies", "Applies that can be undone", skip_if=lambda ctx: "an apply is named" if ctx.settings.undo_of else None)
def applies(ctx: Context, limit: int = 20) -> Result:
    """The newest applies in the archive on this target (``limit``), with the number of changes each
    recorded for an undo and whether an undo of it succeeded already."""
    archive = ctx.archive()
    entries = [e for e in archive.history() if e.mode == "apply" and not e.is_start]
    undone = {applied: next((r for r, st in runs if st == "succeeded"), "") for applied, runs in _undo_runs(ctx).items()}
    rows = []
    for e in reversed(entries):
        if e.runbook_id == RUNBOOK_ID or e.target != ctx.settings.target:
            continue
        try:
            n, cannot = _changes(archive.load_manifest(e.run_id))
        except ArchiveError:
            continue
        rows.append({"run id": e.run_id, "runbook": e.runbook_id, "status": e.status, "ended": e.ended,
                     "changes": n, "cannot be undone": ", ".join(cannot), "undone by": undone.get(e.run_id, "")})
        if len(rows) >= limit:
            break
    todo = [r for r in rows if r["changes"] and not r["undone by"]]
    if not rows:
        return Result(summary=f"no apply on target {ctx.settings.target} in this archive", rows=rows, outcome="ok")
    rest = len(rows) - len(todo)
    return Result(summary=f"{len(todo)} of the {len(rows)} newest applies on target {ctx.settings.target} can be undone "
                  "(`opsbook undo RUN_ID`)" + (f"; {rest} recorded nothing that can be taken back, or were undone "
                                             "already (see the table)" if rest else ""), rows=rows, outcome="ok")


def _rows(ctx: Context, items: list[Item]) -> tuple[list[dict[str, Any]], list[tuple[Item, Status]]]:
    rows, states = [], []
    for i in items:
        st = ctx.status(i)
        thing, action = i.describe()
        rows.append({"step": i.step_id + (" (failed)" if i.partial else ""), "what": thing, "undo": action,
                     "now": st.state, "detail": st.detail})
        states.append((i, st))
    return rows, states


@check("as-left", "Everything is as the apply left it", skip_if=_no_apply_named)
def as_left(ctx: Context) -> Result:
    """Each thing the apply changed is still what it left (its resourceVersion, Helm revision or
    alias target); a thing changed since fails this check, with the difference: the undo would
    overwrite someone else's change."""
    rows, states = _rows(ctx, ctx.items)
    drifted = [(i, st) for i, st in states if st.state == "drifted"]
    if drifted:
        return Result(summary=f"{len(drifted)} thing(s) changed since the apply: " + "; ".join(
            f"{i.describe()[0]}: {st.detail}" for i, st in drifted), outcome="failed", rows=rows,
            headline=f"undo refused: {len(drifted)} thing(s) changed since apply {ctx.settings.undo_of}")
    todo = sum(st.state == "as-left" for _, st in states)
    return Result(summary=f"{todo} thing(s) as the apply left them, "
                  f"{sum(st.state == 'restored' for _, st in states)} already as before", outcome="ok", rows=rows)


def plan_reverse(ctx: Context) -> Result:
    rows, states = _rows(ctx, ctx.items)
    todo = [i for i, st in states if st.state == "as-left"]
    return Result(summary=f"would take back {len(todo)} change(s) of apply {ctx.settings.undo_of}, newest first",
                  outcome="planned", rows=rows, headline=f"undo of {ctx.settings.undo_of}: {len(todo)} change(s)",
                  details={"undoes": ctx.settings.undo_of})


@change("reverse", "Take the changes back", plan=plan_reverse, skip_if=_no_apply_named,
        undo=irreversible("an undo is not undone: to make the change again, run its runbook again (plan, approve, apply)"))
def reverse(ctx: Context) -> Result:
    """Check everything again (refused, nothing touched, if anything changed since the apply), then
    reverse each change, newest first. Stops at the first one that fails, saying what was done."""
    rows, states = _rows(ctx, ctx.items)
    drifted = [(i, st) for i, st in states if st.state == "drifted"]
    if drifted:
        return Result(summary="refused, nothing changed: " + "; ".join(
            f"{i.describe()[0]}: {st.detail}" for i, st in drifted), outcome="failed", rows=rows)
    done: list[dict[str, Any]] = []
    for (item, st), row in zip(states, rows, strict=True):
        if st.state != "as-left" or item.undoer is None:
            done.append({**row, "result": "nothing to do" if st.state == "restored" else "not undone"})
            continue
        try:
            what = item.undoer.reverse(ctx, item.entry)
        except Exception as exc:
            done.append({**row, "result": f"FAILED: {exc}"})
            raise OpsbookError(f"{row['what']}: {exc} (taken back before it: "
                               f"{sum(d['result'] not in ('nothing to do', 'not undone') for d in done) - 1} "
                               "change(s); see the table)") from exc
        done.append({**row, "result": what})
    n = sum(r["result"] not in ("nothing to do", "not undone") for r in done)
    return Result(summary=f"{n} change(s) of apply {ctx.settings.undo_of} taken back", outcome="changed", rows=done,
                  headline=f"apply {ctx.settings.undo_of} undone: {n} change(s) taken back",
                  details={"undoes": ctx.settings.undo_of})


@check("back-as-before", "Everything is back as before the apply", skip_if=lambda ctx: _no_apply_named(ctx) or (
       None if ctx.applying else "plan mode: nothing was taken back"))
def back_as_before(ctx: Context) -> Result:
    """Each thing compared with the copy taken before the apply, ignoring the fields the server sets
    (uid, resourceVersion, managedFields, status): the same, or gone again if the apply created it."""
    rows, bad = [], []
    for i in ctx.items:
        thing, _ = i.describe()
        if i.undoer is None:
            rows.append({"what": thing, "state": "not undone", "detail": i.why})
            continue
        try:
            st = i.undoer.back_as_before(ctx, i.entry)
        except (OpsbookError, OSError) as exc:
            st = Status("drifted", f"cannot be read: {exc}")
        rows.append({"what": thing, "state": "as before" if st.state == "restored" else st.state, "detail": st.detail})
        if st.state == "drifted":
            bad.append(f"{thing}: {st.detail}")
    return Result(summary=(f"{len(bad)} thing(s) not back as before: " + "; ".join(bad)) if bad else
                  f"{sum(r['state'] == 'as before' for r in rows)} thing(s) back as before the apply",
                  outcome="failed" if bad else "ok", rows=rows)
