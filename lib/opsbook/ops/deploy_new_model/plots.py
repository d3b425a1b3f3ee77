"""Plots of a canary analysis (matplotlib, no pyplot: safe under Agg and headless papermill runs).

    result = metrics.judge_metrics(frame)        # opsbook.ops.deploy_new_model.metrics
    fig = plot_analysis(result.value)            # one panel per metric, stable vs canary
    fig.savefig("canary.png")
    fig2 = plot_verdict_timeline(result.value.history)

Each metric panel shows, over the window (x = analysis interval):

* the per-interval value of each arm (thin line with dots: the rate, or the interval's mean; for a
  log-scale metric such as latency the geometric mean, exp of the mean of ln x);
* the judge's cumulative estimate of each arm up to the decision (thick line);
* the decision boundaries from the judge's history: ``stable x (1 + rollback_at)`` (red dashed: a
  canary estimate beyond it is a certain regression -> rollback) and ``stable x (1 + promote_at)``
  (green dotted: a canary estimate inside it passes the metric); they narrow as evidence accumulates;
* the decision interval (vertical line, with the decision), and the panel title gives the metric's
  direction, tolerance, final status and change;
* the warm-up (``JudgeConfig.warmup``: the first intervals, which the judge does not judge) as a grey
  band labelled "warm-up (not judged)".

Latency is shown in milliseconds (the frame holds seconds), rates in percent. Boundaries far outside
the data's range (early on, or for a rare event like a 1% error rate) are clipped by the axis limits.
Every function returns a :class:`matplotlib.figure.Figure`; nothing is shown or kept globally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from opsbook.canary import DEFAULT_METRICS, MetricSpec
from opsbook.canary.frames import interval_values

__all__ = ["plot_canary", "plot_analysis", "plot_verdict_timeline", "DISPLAY"]

STABLE_COLOR, CANARY_COLOR = "#1f77b4", "#ff7f0e"
ROLLBACK_COLOR, PROMOTE_COLOR = "#d62728", "#2ca02c"
WARMUP_COLOR = "#7f7f7f"
DECISION_COLORS = {"rollback": ROLLBACK_COLOR, "promote": PROMOTE_COLOR, "inconclusive": "#7f7f7f",
                   "continue": "#9467bd"}
STATUS_COLORS = {"pending": "#c7c7c7", "ok": PROMOTE_COLOR, "regressed": ROLLBACK_COLOR,
                 "insufficient": "#bcbd22", "no_data": "#000000"}

#: How a metric is displayed: (label, unit, scale from the frame's unit). Unknown metrics: as they are.
DISPLAY: dict[str, tuple[str, str, float]] = {
    "accuracy": ("accuracy (correct / labelled)", "%", 100.0),
    "latency": ("latency, geometric mean", "ms", 1000.0),
    "error_rate": ("error rate (errors / requests)", "%", 100.0),
    "d": ("dissonance d, mean", "", 1.0),
}


def _per_interval(frame: Any, spec: MetricSpec, arm: str, labels: list[Any]) -> np.ndarray:
    part = frame[frame["arm"].astype(str).str.lower() == arm].set_index("interval")
    part = part[~part.index.duplicated()].reindex(labels)
    try:
        return interval_values(part.reset_index(), spec)
    except ValueError:  # the frame lacks this metric's columns: nothing to draw per interval
        return np.full(len(labels), np.nan)


def _finite(*arrays: np.ndarray) -> np.ndarray:
    x = np.concatenate([np.asarray(a, float).ravel() for a in arrays]) if arrays else np.array([])
    return x[np.isfinite(x)]


def plot_canary(frame: Any, history: Any, *, metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
                title: str | None = None, width: float = 11.0, panel_height: float = 2.6,
                warmup: int = 0) -> Any:
    """One panel per metric (in ``metrics`` order): stable vs canary over the frame's window, the
    judge's cumulative estimates and decision boundaries from ``history`` (``canary.history_frame``,
    or :attr:`CanaryAnalysis.history`), the decision interval marked, and the first ``warmup``
    intervals (not judged) shaded. Returns the Figure."""
    from matplotlib.figure import Figure

    labels = sorted(frame["interval"].unique())
    x_all = np.arange(1, len(labels) + 1)
    fig = Figure(figsize=(width, panel_height * len(metrics) + 0.8), layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]

    decided_at, decision = None, None
    if history is not None and len(history):
        decided_at = int(history["interval"].max())
        decision = str(history.loc[history["interval"] == decided_at, "decision"].iloc[0])

    warmup = max(0, min(int(warmup), len(labels)))
    for ax, spec in zip(axes, metrics, strict=True):
        label, unit, scale = DISPLAY.get(spec.name, (spec.name, "", 1.0))
        if warmup:
            ax.axvspan(0.5, warmup + 0.5, color=WARMUP_COLOR, alpha=0.15, lw=0, zorder=0,
                       label="warm-up (not judged)", gid="warmup")
        s = _per_interval(frame, spec, "stable", labels) * scale
        c = _per_interval(frame, spec, "canary", labels) * scale
        ax.plot(x_all, s, color=STABLE_COLOR, lw=0.8, marker=".", ms=3, alpha=0.45, label="stable, per interval")
        ax.plot(x_all, c, color=CANARY_COLOR, lw=0.8, marker=".", ms=3, alpha=0.45, label="canary, per interval")
        data = [s, c]
        status, change = "no verdict", None
        if history is not None and len(history):
            h = history[history["metric"] == spec.name].sort_values("interval")
            if len(h):
                hx = h["interval"].to_numpy(int)
                est_s = h["stable"].to_numpy(float) * scale
                est_c = h["canary"].to_numpy(float) * scale
                roll = est_s * (1.0 + h["rollback_at"].to_numpy(float))
                prom = est_s * (1.0 + h["promote_at"].to_numpy(float))
                ax.plot(hx, est_s, color=STABLE_COLOR, lw=2.2, label="stable, cumulative estimate")
                ax.plot(hx, est_c, color=CANARY_COLOR, lw=2.2, label="canary, cumulative estimate")
                ax.plot(hx, roll, color=ROLLBACK_COLOR, lw=1.4, ls="--", drawstyle="steps-mid",
                        label="rollback boundary", gid="rollback-boundary")
                ax.plot(hx, prom, color=PROMOTE_COLOR, lw=1.4, ls=":", drawstyle="steps-mid",
                        label="promote boundary", gid="promote-boundary")
                data += [est_s, est_c]
                last = h.iloc[-1]
                status = str(last["status"])
                change = float(last["relative_change"]) if np.isfinite(last["relative_change"]) else None
                _limits(ax, _finite(*data), _finite(roll, prom))
            else:
                _limits(ax, _finite(*data), np.array([]))
        else:
            _limits(ax, _finite(*data), np.array([]))
        if decided_at is not None:
            ax.axvline(decided_at, color=DECISION_COLORS.get(decision or "", "k"), lw=1.2, alpha=0.8,
                       gid="decision-interval")
        worse = "higher" if spec.higher_is_worse else "lower"
        ch = "" if change is None else f", change {change * 100:+.1f}%"
        ax.set_title(f"{label}: {status}{ch}  (worse when {worse}, tolerance {spec.tolerance:.0%})",
                     fontsize=10, loc="left")
        ax.set_ylabel(f"{spec.name} ({unit})" if unit else spec.name)
        ax.grid(True, alpha=0.3)
    if decided_at is not None:
        top = axes[0]
        top.annotate(f"{decision} at interval {decided_at}", xy=(decided_at, 1.0),
                     xycoords=("data", "axes fraction"), xytext=(4, -12), textcoords="offset points",
                     color=DECISION_COLORS.get(decision or "", "k"), fontsize=9, fontweight="bold")
    axes[-1].set_xlabel("analysis interval")
    axes[-1].set_xlim(0.5, len(labels) + 0.5)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(title or "Canary vs stable, per analysis interval", fontsize=12)
    return fig


def _limits(ax: Any, data: np.ndarray, bounds: np.ndarray) -> None:
    """Y limits from the data, widened to show boundaries that are near it (not the far-off ones)."""
    if data.size == 0:
        return
    lo, hi = float(np.min(data)), float(np.max(data))
    span = hi - lo if hi > lo else max(abs(hi), 1e-9) * 0.1
    near = bounds[(bounds > lo - span) & (bounds < hi + span)]
    if near.size:
        lo, hi = min(lo, float(near.min())), max(hi, float(near.max()))
    pad = 0.08 * (hi - lo if hi > lo else span)
    ax.set_ylim(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)


def plot_analysis(analysis: Any, *, metrics: Sequence[MetricSpec] | None = None, title: str | None = None) -> Any:
    """:func:`plot_canary` of a :class:`~opsbook.ops.deploy_new_model.metrics.CanaryAnalysis` (its frame,
    history, the judge's metrics and warm-up); the title names the verdict."""
    specs = metrics or analysis.judge.specs
    v = analysis.verdict
    warmup = int(getattr(getattr(analysis.judge, "config", None), "warmup", 0) or 0)
    return plot_canary(analysis.frame, analysis.history, metrics=specs, warmup=warmup,
                       title=title or f"Canary vs stable: {v.decision} at interval {v.interval} of {v.window}")


def plot_verdict_timeline(history: Any, *, width: float = 11.0) -> Any:
    """One small panel: per metric (rows), its status after every interval as coloured cells, and
    the decision at the last interval."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(dict.fromkeys(history["metric"]))
    fig = Figure(figsize=(width, 0.45 * len(names) + 1.2), layout="constrained")
    ax = fig.subplots()
    for row, name in enumerate(names):
        h = history[history["metric"] == name]
        segments = [(float(i) - 0.5, 1.0) for i in h["interval"]]
        colors = [STATUS_COLORS.get(s, "#ffffff") for s in h["status"]]
        ax.broken_barh(segments, (row - 0.4, 0.8), facecolors=colors, edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("analysis interval")
    if len(history):
        last = int(history["interval"].max())
        decision = str(history.loc[history["interval"] == last, "decision"].iloc[0])
        ax.axvline(last + 0.5, color=DECISION_COLORS.get(decision, "k"), lw=1.5)
        ax.set_title(f"Verdict timeline: {decision} at interval {last}", fontsize=10, loc="left")
        ax.set_xlim(0.5, max(last, 1) + 0.5 + max(1, math.ceil(last * 0.02)))
    used = [s for s in STATUS_COLORS if s in set(history["status"])]
    ax.legend([Patch(color=STATUS_COLORS[s]) for s in used], used, loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig
