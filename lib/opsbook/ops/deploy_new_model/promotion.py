"""Carrying out the decision: promote (the stable Deployment to the new version, the canary deleted)
or roll back (the canary deleted, the stable Deployment on exactly what served before), point the
registry's production alias at what now serves, and verify every instance.

Each change's declaration skips it when the decision is not its own, and in apply mode on a target
without a cluster; in plan mode without a cluster it still says what it would do.

Each journals what it changes (``opsbook undo RUN_ID`` takes it back, :data:`~opsbook.ops.journal.JOURNAL`):
the stable Deployment around its patch (put back as it was), the canary's deletion when the run did
not deploy it itself (re-created), the alias (pointed back, or deleted if it was not set).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import ClientError, TimedOut
from opsbook.ops.base import Result, change, check
from opsbook.ops.deploy_new_model.cluster import delete_canary, existing_canary, model_of, patch_stable
from opsbook.ops.deploy_new_model.context import TRACK_LABEL, Context, Serving
from opsbook.ops.journal import JOURNAL


def _unless_decided(wanted: str, nothing: str) -> Callable[[Context], str | None]:
    """A skip condition: the decision is not ``wanted``, or an apply has no cluster to change."""

    def reason(ctx: Context) -> str | None:
        if ctx.decision != wanted:
            return f"the decision is {ctx.decision or 'hold'}, not {wanted}"
        if ctx.applying and ctx.kube is None:
            return f"target {ctx.target_name} has no cluster: {nothing}"
        return None

    return reason


def plan_promote(ctx: Context) -> Result:
    serving_v = getattr(ctx.serving, "version", "") or ctx.settings.serving_version or "?"
    what = (f"patch {ctx.stable_name or 'the stable Deployment'} from v{serving_v} "
            f"to v{ctx.target_version or '?'}" + (f" ({ctx.target_uri})" if ctx.target_uri else "")
            + f", delete {ctx.canary_name}")
    if ctx.kube is None:
        return Result(summary=f"target {ctx.target_name} has no cluster: would {what}", outcome="planned")
    dry = patch_stable(ctx, version=ctx.target_version, uri=ctx.target_uri, dry_run=True)
    v, _, _ = model_of(dry)
    return Result(summary=f"would {what} (server-side dry run: the template would serve v{v})", outcome="planned",
                  details={"dry_run_version": v})


@change("promote", "Promote to every instance", plan=plan_promote,
        skip_if=_unless_decided("promote", "nothing rolled out"), undo=JOURNAL)
def promote(ctx: Context) -> Result:
    """Full rollout: the stable Deployment to the new version (rolling update, waited for), then the
    canary deleted. The chart values to carry on are listed: the next ``helm upgrade`` would
    otherwise put the old version back."""
    s = ctx.settings
    before = ctx.serving.version if ctx.serving else ""
    with ctx.journal.object(ctx.kube, kind="Deployment", name=ctx.stable_name, namespace=s.namespace):
        patch_stable(ctx, version=ctx.target_version, uri=ctx.target_uri)
    done = ctx.kube.wait_rollout(namespace=s.namespace, name=ctx.stable_name, timeout=s.timeout)
    deleted = delete_canary(ctx)
    helm_values = {f"services.{s.model}.model.version": ctx.target_version,
                   f"services.{s.model}.model.uri": ctx.target_uri}
    rows = [{"field": "deployment", "value": ctx.stable_name},
            {"field": "version", "value": f"v{before or '?'} -> v{ctx.target_version} ({ctx.target_uri})"},
            {"field": "rolled out", "value": f"{done.replicas} replica(s) in {done.seconds:.1f} s"},
            {"field": "canary", "value": "deleted" if deleted else "was not there"},
            {"field": "chart values to carry on (else the next helm upgrade reverts this)",
             "value": ", ".join(f"{k}={v}" for k, v in helm_values.items())}]
    return Result(summary=f"{ctx.stable_name}: v{before or '?'} -> v{ctx.target_version}, {done.replicas} replica(s) "
                  f"rolled out in {done.seconds:.1f} s; canary {ctx.canary_name} "
                  + ("deleted" if deleted else "was not there"), outcome="changed", rows=rows,
                  details={"deployment": ctx.stable_name, "from_version": before, "to_version": ctx.target_version,
                           "uri": ctx.target_uri, "canary_deleted": deleted, "helm_values": helm_values,
                           **ctx.decision_basis})


def rollback_target(ctx: Context) -> tuple[str, str, str]:
    """(version, uri, where from): what served before, from the approved plan's record of the
    ``serving-version`` step if there is one, else this run's preflight."""
    d = (ctx.planned("serving-version") or {}).get("details") or {}
    if d.get("version"):
        return str(d["version"]), str(d.get("uri") or ""), f"the approved plan {ctx.approved_plan}"
    sv = ctx.serving or Serving(version="")
    return sv.version, sv.uri, "this run's preflight"


def plan_rollback(ctx: Context) -> Result:
    version, _, src = rollback_target(ctx)
    return Result(summary=f"would delete {ctx.canary_name} and keep {ctx.stable_name or 'the stable Deployment'} on "
                  f"v{version or '?'} (recorded by {src})" + ("" if ctx.kube is not None else
                                                              f"; target {ctx.target_name} has no cluster"),
                  outcome="planned")


@change("rollback", "Roll back", plan=plan_rollback, skip_if=_unless_decided("rollback", "nothing to roll back"),
        undo=JOURNAL)
def rollback(ctx: Context) -> Result:
    """Delete the canary; the stable Deployment keeps (or gets back) exactly the version recorded
    before any change."""
    s = ctx.settings
    version, uri, src = rollback_target(ctx)
    deleted = delete_canary(ctx)
    stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=s.namespace)
    now_v, now_uri, _ = model_of(stable)
    restored = False
    if version and (now_v != version or (uri and now_uri != uri)):
        with ctx.journal.object(ctx.kube, kind="Deployment", name=ctx.stable_name, namespace=s.namespace):
            patch_stable(ctx, version=version, uri=uri or now_uri)
        ctx.kube.wait_rollout(namespace=s.namespace, name=ctx.stable_name, timeout=s.timeout)
        restored = True
    return Result(summary=f"canary {ctx.canary_name} " + ("deleted" if deleted else "was not there") + f"; "
                  f"{ctx.stable_name} " + (f"restored from v{now_v} to v{version}" if restored else
                                           f"unchanged on v{now_v}") + f" (recorded by {src})",
                  outcome="changed", details={"canary_deleted": deleted, "stable_version": version, "restored": restored,
                                              "recorded_by": src, **ctx.decision_basis})


# ------------------------------------------------------------------------------------------ alias


def _alias_untouched(ctx: Context) -> str | None:
    s = ctx.settings
    if not s.move_alias:
        return f"move_alias is false: @{s.production_alias} is not touched"
    if ctx.decision is None:
        return "no decision: the alias is not touched"
    if ctx.registry is None and ctx.applying:
        return "no registry on this target (give tracking_uri): the alias move is only planned"
    return None


def _alias_plan(ctx: Context) -> tuple[str | None, str, Result | None]:
    """(version the alias should point at, why, the step's Result when nothing is to be moved)."""
    s = ctx.settings
    if ctx.registry is None:
        return None, "", Result(summary="no registry on this target (give tracking_uri): the alias move is only "
                                "planned", outcome="planned")
    current = ctx.registry.by_alias(ctx.registry_name, s.production_alias)
    cur = current.version if current else None
    if ctx.decision == "promote":
        to = ctx.target_version
        if cur == to:
            return None, "", Result(summary=f"@{s.production_alias} already points at v{to}", outcome="ok",
                                    details={"alias": s.production_alias, "version": to, "moved": False})
        return to, f"promote: v{to} now serves every instance", None
    version, _, _ = rollback_target(ctx)
    if cur != ctx.target_version:
        return None, "", Result(summary=f"@{s.production_alias} points at v{cur or '(nothing)'}, not the rolled back "
                                f"v{ctx.target_version}: left as it is", outcome="ok",
                                details={"alias": s.production_alias, "version": cur, "moved": False})
    if not version:
        return None, "", Result(summary=f"@{s.production_alias} points at the rolled back v{cur}, but the version "
                                "that served before is unknown: move it by hand", outcome="failed")
    return version, f"rollback: v{version} serves again, v{cur} was rejected", None


def plan_alias(ctx: Context) -> Result:
    to, why, done = _alias_plan(ctx)
    if done:
        return done
    return Result(summary=f"would point @{ctx.settings.production_alias} of {ctx.registry_name} at v{to} ({why})",
                  outcome="planned", details={"alias": ctx.settings.production_alias, "to_version": to})


@change("move-alias", "Move the registry alias", plan=plan_alias, skip_if=_alias_untouched, undo=JOURNAL)
def move_alias(ctx: Context) -> Result:
    """Point the production alias at the version that serves after the decision. The record says which
    version, when, by whom, and on what evidence (approved plan, verdict)."""
    to, why, done = _alias_plan(ctx)
    if done:
        return done
    s, reg, name = ctx.settings, ctx.registry, ctx.registry_name
    current = reg.by_alias(name, s.production_alias)
    at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    ctx.journal.alias(reg, model=name, alias=s.production_alias, version=str(to))
    evidence = {k: ctx.decision_basis.get(k) for k in ("plan_run_id", "verdict", "verdict_reason", "verdict_source",
                                                          "override", "decision")}
    note = (f"@{s.production_alias} -> v{to} by {ctx.operator} at {at} (run {ctx.run_id}, "
            f"plan {evidence.get('plan_run_id') or '-'}, verdict {evidence.get('verdict')})")
    try:
        reg.set_version_tag(name, to, "opsbook.alias_moved", note)
    except ClientError:
        pass  # the record below is the evidence; the tag is a convenience
    ctx.alias_move = {"alias": s.production_alias, "model": name, "from_version":
                      current.version if current else None, "to_version": to, "at": at, "by": ctx.operator,
                      "run_id": ctx.run_id, "why": why, "evidence": evidence}
    rows = [{"field": k, "value": v} for k, v in ctx.alias_move.items() if k != "evidence"]
    rows += [{"field": f"evidence: {k}", "value": v} for k, v in evidence.items()]
    return Result(summary=note, outcome="changed", rows=rows, details=dict(ctx.alias_move))


# ------------------------------------------------------------------------------------------ verify


def _nothing_to_verify(ctx: Context) -> str | None:
    if not ctx.applying:
        return "plan mode: the instances are verified after the apply"
    if ctx.decision is None:
        return "no decision was carried out: nothing to verify"
    if ctx.kube is None:
        return f"target {ctx.target_name} has no cluster: nothing to verify"
    return None


@check("verify-instances", "Every instance serves the decided version", skip_if=_nothing_to_verify)
def verify_instances(ctx: Context, *, wait: float | None = None, poll: float = 0.5) -> Result:
    """Every pod of the stable Deployment is Ready and serves the version the decision put there, their
    number is the Deployment's replicas, and no canary pod is left (waits for old pods to go)."""
    from opsbook.clients.kube import pod_row

    s = ctx.settings
    want = ctx.target_version if ctx.decision == "promote" else rollback_target(ctx)[0]
    stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=s.namespace)
    replicas = int(stable["spec"].get("replicas", 1))
    service_sel = ",".join(f"{k}={v}" for k, v in sorted(stable["spec"]["selector"]["matchLabels"].items())
                           if k != TRACK_LABEL)
    seen: dict[str, Any] = {"rows": [], "problems": []}

    def settled() -> Any:
        pods = ctx.kube.pod_objects(namespace=s.namespace, selector=service_sel)
        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        for p in sorted(pods, key=lambda p: p["metadata"]["name"]):
            v, _, _ = model_of(p)
            track = (p["metadata"].get("labels") or {}).get(TRACK_LABEL, "")
            row = pod_row(p)
            rows.append({"pod": row["pod"], "track": track, "version": v, "ready": row["ready"], "phase": row["phase"]})
            if track != "stable":
                problems.append(f"{row['pod']} is a {track or 'unlabelled'} pod")
            elif v != want:
                problems.append(f"{row['pod']} serves v{v}")
            elif not row["ready"] or row["ready"].split("/")[0] != row["ready"].split("/")[1] or \
                    p["metadata"].get("deletionTimestamp"):
                problems.append(f"{row['pod']} is not Ready ({row['ready']} {row['phase']})")
        stable_pods = [r for r in rows if r["track"] == "stable"]
        if len(stable_pods) != replicas:
            problems.append(f"{len(stable_pods)} stable pod(s), the Deployment wants {replicas}")
        if existing_canary(ctx) is not None:
            problems.append(f"Deployment {ctx.canary_name} still exists")
        seen.update(rows=rows, problems=problems)
        return True if not problems else Pending("; ".join(problems))

    try:  # old pods take a while to go: look again until the wait runs out
        wait_until(settled, timeout=min(s.timeout, 120.0) if wait is None else wait, interval=poll,
                   what=f"instances of {ctx.stable_name} not settled")
    except TimedOut:
        if not seen["rows"] and not seen["problems"]:
            raise
    rows, problems = seen["rows"], seen["problems"]
    return Result(summary=(f"all {replicas} instance(s) of {ctx.stable_name} serve v{want}, Ready; no canary left"
                           if not problems else "; ".join(problems)), outcome="ok" if not problems else "failed",
                  rows=rows, details={"version": want, "replicas": replicas, "pods": rows, "problems": problems})
