"""Judging the canary: the metrics of both tracks per analysis interval, the sequential judge over
them, the plot of its boundaries, and the decision.

Approval flow (risk high): a plan run judges the canary and records the verdict (step ``judge``);
the apply that names it (``--approve PLAN_RUN_ID``) reads that verdict back from the archived plan
record (``ctx.planned("judge")``) and acts on it (``decision=auto``), or on the ``decision``
parameter: the run acts on the evidence a person approved, not on a later look. On a cluster with
Prometheus the first plan has no canary to judge: its apply deploys the canary and holds; after
``monitor_minutes`` a second plan judges it and that plan's apply promotes or rolls back.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import math
from typing import Any

from opsbook.ops.base import Figure, Result, step
from opsbook.ops.deploy_new_model.cluster import existing_canary
from opsbook.ops.deploy_new_model.context import VERSION_KEY, Context


@step("collect-metrics", "Collect the metrics")
def collect(ctx: Context, *, now: Any = None) -> Result:
    """Stable and canary metrics per analysis interval: the recorded file, or Prometheus over the
    monitoring period (from the canary's start if it is younger than the period)."""
    from opsbook.ops.deploy_new_model.metrics import collect_metrics

    s = ctx.settings
    prom = ctx.prom
    if ctx.metrics_path is not None:
        result = collect_metrics(recorded=ctx.metrics_path, metrics=ctx.specs)
    elif prom is not None:
        canary = existing_canary(ctx)
        if ctx.kube is not None and canary is None:
            return Result(summary=f"no canary {ctx.canary_name} is running yet: nothing to judge. Apply this plan "
                          f"to start it, then plan again after {s.monitor_minutes} min", outcome="skipped")
        interval = float(s.interval_seconds)
        end = _dt.datetime.now(_dt.UTC).timestamp() if now is None else float(now)
        end = math.floor(end / interval) * interval
        start = end - s.monitor_minutes * 60
        born = ((canary or {}).get("metadata") or {}).get("creationTimestamp")
        if born:
            t = _dt.datetime.fromisoformat(str(born).replace("Z", "+00:00")).timestamp()
            start = max(start, math.ceil(t / interval) * interval)
        if end - start < interval:
            return Result(summary=f"the canary started less than one interval ({interval:g} s) ago: nothing to "
                          "judge yet", outcome="skipped")
        result = collect_metrics(prom=prom, model=s.model, start=start, end=end, interval=interval,
                                 metrics=ctx.specs)
    else:
        return Result(summary="no metrics source", outcome="failed")
    ctx.frame = result.value
    return result


@step("judge", "Judge the canary")
def judge(ctx: Context) -> Result:
    """The sequential judge over the intervals (stopping at the first final verdict): per metric the
    estimates, the change, the tolerance and the reason; the verdict goes into the record, where the
    apply that approves this plan reads it back."""
    from opsbook.canary import JudgeConfig
    from opsbook.ops.deploy_new_model.metrics import judge_metrics

    if ctx.frame is None:  # not a declared skip: the record says "no decision" in its details
        return Result(summary="no metrics to judge", outcome="skipped", details={"decision": None})
    s = ctx.settings
    config = JudgeConfig(window=ctx.window_intervals, alpha=s.alpha, warmup=s.warmup_intervals)
    result = judge_metrics(ctx.frame, metrics=ctx.specs, config=config)
    ctx.analysis = result.value
    ctx.verdict = {**result.details, "warmup_intervals": config.warmup, "metrics": result.rows}
    result.details = dict(ctx.verdict)
    result.outcome = "ok"
    return result


def _no_analysis(ctx: Context) -> str | None:
    return "no analysis to plot" if ctx.analysis is None else None


@step("plot", "Plot the analysis", skip_if=_no_analysis)
def plot(ctx: Context) -> Result:
    """Each metric, stable vs canary, over the window, with the judge's boundaries (shown inline; the
    PNG's sha256 goes into the record)."""
    from opsbook.ops.deploy_new_model.plots import plot_analysis

    fig = plot_analysis(ctx.analysis)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    png = buf.getvalue()
    warmup = ctx.analysis.judge.config.warmup
    return Result(summary=f"{len(ctx.analysis.judge.specs)} panels, stable vs canary, decision boundaries drawn"
                  + (f", warm-up ({warmup} interval(s), not judged) shaded" if warmup else ""),
                  details={"png_sha256": hashlib.sha256(png).hexdigest(), "png_bytes": len(png),
                           "warmup_intervals": warmup}, value=fig,
                  show=[Figure(png, alt="the canary analysis: each metric, stable vs canary")])


# ------------------------------------------------------------------------------------------ decision


def _details(ctx: Context, step_id: str) -> dict[str, Any]:
    return dict((ctx.planned(step_id) or {}).get("details") or {})


def planned_version(ctx: Context) -> str | None:
    """The version the approved plan was about: its registry step, else the canary it rendered."""
    reg = _details(ctx, "registry-version").get("version")
    if reg:
        return str(reg)
    rendered = _details(ctx, "canary-manifest")
    version = (((rendered.get("manifest") or {}).get("metadata") or {}).get("annotations") or {}).get(VERSION_KEY)
    return str(version) if version and not rendered.get("placeholder") else None


@step("decide", "Decide")
def decide(ctx: Context) -> Result:
    """The decision: in apply mode the verdict of the approved plan (read back from its archived
    record), else this run's; ``decision`` promote/rollback overrides it (recorded as an override)."""
    s = ctx.settings
    basis: dict[str, Any] = {"operator": ctx.operator, "run_id": ctx.run_id, "parameter": s.decision}
    verdict, why_verdict = ctx.verdict.get("decision"), ctx.verdict.get("reason", "")
    source = "this run's judge"
    plan = ctx.approved_plan if ctx.applying else None
    if plan:
        judged = _details(ctx, "judge")
        verdict, why_verdict = judged.get("decision"), judged.get("reason", "")
        source = f"the approved plan {plan}"
        basis["plan_run_id"] = plan
        planned = planned_version(ctx)
        if planned and ctx.target_version and planned != ctx.target_version:
            ctx.decision = None
            return Result(summary=f"the approved plan {plan} judged v{planned}, but this run would "
                          f"deploy v{ctx.target_version} (the registry changed since the plan): nothing is "
                          "decided; make a new plan", outcome="failed",
                          details={**basis, "planned_version": planned, "version": ctx.target_version,
                                   "decision": "hold"})
        if ctx.verdict.get("decision") and ctx.verdict.get("decision") != verdict:
            basis["this_run_verdict"] = ctx.verdict.get("decision")
    elif ctx.applying:
        source = "this run's judge (no approved plan: an interactive apply)"
    basis.update(verdict=verdict, verdict_reason=why_verdict, verdict_source=source)
    if s.decision in ("promote", "rollback"):
        ctx.decision = s.decision
        basis["override"] = verdict != s.decision
        why = (f"operator's decision {s.decision}" + (f", against the verdict {verdict}" if verdict and
                                                       verdict != s.decision else ""))
    elif verdict in ("promote", "rollback"):
        ctx.decision = verdict
        basis["override"] = False
        why = f"the verdict of {source}: {verdict}"
    else:
        ctx.decision = None
        said = f"the verdict of {source} is {verdict}" if verdict else f"{source} gave no verdict"
        why = (f"{said}: no automatic decision. " + (
            "Too little traffic to judge: extend monitor_minutes, or decide with decision=promote|rollback"
            if verdict == "inconclusive" else "Plan again when the canary has run longer"
            if verdict == "continue" else "Nothing was judged (no canary yet): apply this plan to start the "
            "canary, then plan again after the monitoring period"))
    ctx.decision_basis = {**basis, "decision": ctx.decision or "hold"}
    verb = "would " if not ctx.applying else ""
    summary = (f"{verb}{ctx.decision.upper()}: {why}" if ctx.decision else f"HOLD: {why}")
    if not ctx.applying and ctx.decision:
        summary += f"; the apply that approves this plan (--approve {ctx.run_id}) acts on this verdict"
    rows = [{"field": k, "value": v} for k, v in ctx.decision_basis.items()]
    return Result(summary=summary, rows=rows, details=dict(ctx.decision_basis))
