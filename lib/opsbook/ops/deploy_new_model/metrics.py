"""Stable-vs-canary metrics per analysis interval, from Prometheus or from a recorded file, and the
canary judge run over them (the ``deploy-new-model`` runbook's monitoring step).

Both sources give the same frame, the judge's schema (:mod:`opsbook.canary.frames`): one row per
interval and arm, missing data left as NaN (the judge treats it as "no data", never as zero)::

    frame = query_metrics(prom, model="proposer", start=t0, end=t1, interval=60)   # Prometheus
    frame = load_metrics("examples/metrics/proposer-canary-regressed.csv")         # recorded
    result = judge_metrics(frame)          # Result: per-metric table, verdict, history for the plots
    result.value.verdict.decision          # "rollback" / "promote" / "continue" / "inconclusive"

Metric names (what a model server exports; labels ``model`` = ``proposer``/``critic`` and ``track`` =
``stable``/``canary`` on every series):

=========================================== ========= ==============================================
series                                      type      meaning
=========================================== ========= ==============================================
``model_requests_total{code}``              counter   requests served, by HTTP status code; an error
                                                      is ``code=~"5.."``
``model_request_duration_seconds``          histogram request latency in seconds (``_bucket{le}``,
                                                      ``_sum``, ``_count``); buckets fine enough
                                                      around p50/p90 (e.g. log-spaced, x1.25)
``model_feedback_total{outcome}``           counter   requests whose ground truth came back:
                                                      ``outcome="correct"`` or ``"wrong"``
``model_dissonance``                        summary   the dissonance value ``d`` per prediction
                                                      (``_sum``, ``_count``)
``model_dissonance_squares_total``          counter   running sum of ``d**2`` (for the variance of
                                                      ``d``: m2 = sum(d^2) - sum(d)^2 / n)
=========================================== ========= ==============================================

PromQL templates, one per frame column (:data:`DEFAULT_TEMPLATES`), with placeholders
``{selector}`` (default ``model="{model}",track="{track}"``), ``{model}``, ``{track}``,
``{interval}`` (the analysis interval as a Prometheus duration, e.g. ``60s``) and any name given in
``variables``. Only those exact ``{name}`` tokens are replaced, so PromQL's own braces need no
escaping: a selector is written ``model_requests_total{{selector}}`` (PromQL's brace around the
placeholder), or with explicit labels ``model_requests_total{app="{model}",version="{track}"}``.
Change the label names everywhere at once with ``selector='app="{model}",track="{track}"'``. Override any column's template with ``templates={"errors": "..."}``; ``None`` drops the
column (its metric then has no data and fails; drop the metric from the judge too). Each template
must give at most one series per track. A range query evaluates it at the end of every interval, so
``increase(x[{interval}])`` is the interval's own count. Counters without any sample in the
interval give NaN (no data); the ``errors`` and ``correct`` templates fall back to ``0 *`` the total
when the error / correct series does not exist yet (a server that never failed has no ``code="500"``
series: that is zero errors, not missing data).

Counts from ``increase()`` are extrapolated to the interval's edges, so they are not integers; the
judge takes them as they are. ``errors`` above ``requests`` (or ``correct`` above ``labelled``) by
extrapolation is clipped to it, and a negative ``d_m2`` from rounding to 0.

The ``latency_buckets`` template (``sum by (le) (increase(..._bucket[{interval}]))``, one series per
``le``) gives the log-scale moments ``latency_logmean``/``latency_logstd`` and the cumulative bucket
counts themselves, one column per bound: ``latency_le_0.01``, ..., ``latency_le_+Inf`` (the bound as
the shortest text of its float, :func:`le_column`), the histograms of the judge's exceedance test on
p99 latency. Their number and names follow the exporter's buckets.

Recorded files (CSV, or Parquet with ``pyarrow``) hold the same columns; the frame's schema, and
reading, checking and writing those files, live in :mod:`.recorded` (re-exported here:
:func:`load_metrics`, :func:`validate_metrics`, :func:`save_metrics`, :class:`MetricsFileError`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbook.canary import (
    DEFAULT_METRICS,
    CanaryJudge,
    JudgeConfig,
    MetricSpec,
    Verdict,
    history_frame,
    judge_frame,
)
from opsbook.errors import Invalid
from opsbook.ops.deploy_new_model.recorded import (
    _COUNTS,
    ARMS,
    SCHEMA_COLUMNS,
    MetricsFileError,
    _plain,
    load_metrics,
    save_metrics,
    validate_metrics,
)
from opsbook.results import Result

__all__ = [
    "DEFAULT_TEMPLATES", "DEFAULT_SELECTOR", "SCHEMA_COLUMNS", "ARMS", "CanaryAnalysis", "MetricsFileError",
    "render_template", "query_metrics", "load_metrics", "save_metrics", "validate_metrics",
    "describe_metrics", "collect_metrics", "judge_metrics", "le_column",
]

DEFAULT_SELECTOR = 'model="{model}",track="{track}"'

_REQ = "model_requests_total{{selector}}"
_ERR = 'model_requests_total{{selector},code=~"5.."}'
_FB = "model_feedback_total{{selector}}"
_OK = 'model_feedback_total{{selector},outcome="correct"}'
_LAT = "model_request_duration_seconds"
_D = "model_dissonance"


def _inc(series: str) -> str:
    return "sum(increase(" + series + "[{interval}]))"


def _q(q: float) -> str:
    return "histogram_quantile(" + str(q) + ", sum by (le) (increase(" + _LAT + "_bucket{{selector}}[{interval}])))"


#: One PromQL template per frame column (see the module docstring for names and placeholders).
#: ``{{selector}}`` is PromQL's brace around the ``{selector}`` placeholder.
DEFAULT_TEMPLATES: dict[str, str] = {
    "requests": _inc(_REQ),
    "errors": "(" + _inc(_ERR) + " or 0 * " + _inc(_REQ) + ")",
    "labelled": _inc(_FB),
    "correct": "(" + _inc(_OK) + " or 0 * " + _inc(_FB) + ")",
    "latency_mean": _inc(_LAT + "_sum{{selector}}") + " / " + _inc(_LAT + "_count{{selector}}"),
    "latency_p50": _q(0.5),
    "latency_p90": _q(0.9),
    # the buckets themselves, one series per ``le``: give latency_logmean / latency_logstd
    "latency_buckets": "sum by (le) (increase(" + _LAT + "_bucket{{selector}}[{interval}]))",
    "d_count": _inc(_D + "_count{{selector}}"),
    "d_mean": _inc(_D + "_sum{{selector}}") + " / " + _inc(_D + "_count{{selector}}"),
    "d_m2": ("clamp_min(" + _inc(_D + "_squares_total{{selector}}") + " - " + _inc(_D + "_sum{{selector}}")
             + " ^ 2 / " + _inc(_D + "_count{{selector}}") + ", 0)"),
}

_PAIRS = (("errors", "requests"), ("correct", "labelled"))
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class CanaryAnalysis:
    """What :func:`judge_metrics` gives the cell: the final verdict, every verdict so far as a frame
    (one row per interval and metric: estimates, bounds, ``rollback_at``/``promote_at``), the judge,
    and the frame it judged."""

    verdict: Verdict
    history: Any  # pandas.DataFrame
    judge: CanaryJudge
    frame: Any  # pandas.DataFrame

    @property
    def decision(self) -> str:
        return self.verdict.decision


# -- Prometheus -----------------------------------------------------------------------------------


def _label_value(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_template(template: str, *, model: str, track: str, interval: float | str,
                    selector: str = DEFAULT_SELECTOR, variables: Mapping[str, str] | None = None) -> str:
    """The PromQL of one template for one model and track. Unknown ``{name}`` placeholders raise."""
    from opsbook.clients.prometheus import duration

    values = {"model": _label_value(model), "track": _label_value(track), "interval": duration(interval),
              **{k: str(v) for k, v in (variables or {}).items()}}
    text = template.replace("{selector}", selector)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise ValueError(f"unknown placeholder {{{name}}} in PromQL template {template!r}; "
                             f"known: {sorted(['selector', *values])}")
        return values[name]

    return _PLACEHOLDER.sub(sub, text)


def query_metrics(prom: Any, *, model: str, start: Any, end: Any, interval: float = 60.0,
                  templates: Mapping[str, str | None] | None = None,
                  tracks: Mapping[str, str] | None = None, selector: str = DEFAULT_SELECTOR,
                  variables: Mapping[str, str] | None = None) -> Any:
    """Per-interval stable/canary metrics of ``model`` over [start, end] from Prometheus.

    The window is split into ``n = floor((end - start) / interval)`` intervals of ``interval``
    seconds; interval ``i`` (1-based) covers (start + (i-1)*interval, start + i*interval]. For every
    column's template (:data:`DEFAULT_TEMPLATES`, updated by ``templates``) and both arms one range
    query evaluates it at the end of every interval. ``tracks`` maps arm to the ``track`` label value
    (default ``stable``/``canary``). Returns the judge's frame (columns ``interval, arm, start, end``
    and one per template), ``2 n`` rows; a value Prometheus did not return is NaN."""
    import numpy as np
    import pandas as pd

    from opsbook.clients.prometheus import to_unix

    t0, t1 = to_unix(start), to_unix(end)
    step = float(interval)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    n = int(math.floor((t1 - t0) / step + 1e-9))
    if n < 1:
        raise ValueError(f"the window [{t0:.0f}, {t1:.0f}] is shorter than one interval of {step:g} s")
    tpl: dict[str, str | None] = dict(DEFAULT_TEMPLATES)
    tpl.update(templates or {})
    unknown = {k for k in (templates or {}) if k not in DEFAULT_TEMPLATES and not re.fullmatch(r"\w+", k)}
    if unknown:
        raise ValueError(f"template column names must be identifiers, got {sorted(unknown)}")
    tracks = dict(tracks or {a: a for a in ARMS})
    if set(tracks) != set(ARMS):
        raise ValueError(f"tracks must map exactly {list(ARMS)} to label values, got {tracks}")

    ends = t0 + step * np.arange(1, n + 1)
    data: dict[str, dict[str, np.ndarray]] = {arm: {} for arm in ARMS}
    for column, template in tpl.items():
        if template is None:
            continue
        for arm in ARMS:
            promql = render_template(template, model=model, track=tracks[arm], interval=step,
                                     selector=selector, variables=variables)
            got = prom.query_range(promql, ends[0], ends[-1], step)
            if column.endswith("_buckets"):
                data[arm].update(_bucket_moments(got, column, promql, t0=t0, step=step, n=n))
                continue
            values = np.full(n, np.nan)
            if len(got):
                labels = [c for c in got.columns if c not in ("timestamp", "value")]
                if labels and len(got.groupby(labels, dropna=False)) > 1:
                    raise Invalid(f"template for column {column!r} gives {len(got.groupby(labels, dropna=False))} "
                                  f"series for track {tracks[arm]!r}, expected at most one (aggregate with "
                                  f"sum(...)): {promql}")
                idx = np.rint((got["timestamp"].to_numpy(float) - t0) / step).astype(int) - 1
                ok = (idx >= 0) & (idx < n)
                values[idx[ok]] = got["value"].to_numpy(float)[ok]
            values[~np.isfinite(values)] = np.nan  # Inf (x/0) is no data too
            data[arm][column] = values

    frames = []
    for arm in ARMS:
        part = pd.DataFrame({"interval": np.arange(1, n + 1), "arm": arm,
                             "start": pd.to_datetime(ends - step, unit="s", utc=True),
                             "end": pd.to_datetime(ends, unit="s", utc=True), **data[arm]})
        frames.append(part)
    frame = pd.concat(frames, ignore_index=True).sort_values(
        ["interval", "arm"], ascending=[True, False], ignore_index=True)  # stable first, as in the files
    return _tidy_counts(frame)


def le_column(prefix: str, bound: float) -> str:
    """The frame column of a cumulative bucket count: ``{prefix}_le_{bound}``, the bound as the shortest
    text that reads back as the same float (``0.005``, ``0.1``, ``1``, ``1e-05``), ``+Inf`` for the
    overflow bucket; the same name whatever text the exporter put in its ``le`` label."""
    b = float(bound)
    if math.isinf(b) and b > 0:
        text = "+Inf"
    else:
        text = repr(b)
        text = text[:-2] if text.endswith(".0") else text
    return f"{prefix}_le_{text}"


def _bucket_moments(got: Any, column: str, promql: str, *, t0: float, step: float, n: int) -> dict[str, Any]:
    """A ``{p}_buckets`` template's answer (one series per ``le``) -> ``{p}_logmean``/``{p}_logstd``
    per interval (:func:`opsbook.canary.frames.log_moments_from_buckets`), NaN where no requests,
    and the cumulative counts themselves as ``{p}_le_{bound}`` columns (:func:`le_column`; the
    judge's histograms, :mod:`opsbook.canary.frames`), NaN where Prometheus gave no value. A
    cumulative count below the previous bound's (extrapolation artefacts of ``increase()``) is
    raised to it, a negative one to 0."""
    import numpy as np

    from opsbook.canary.frames import log_moments_from_buckets

    prefix = column[: -len("_buckets")]
    mean, std = np.full(n, np.nan), np.full(n, np.nan)
    out: dict[str, Any] = {}
    if len(got):
        if "le" not in got.columns:
            raise Invalid(f"template for column {column!r} must give one series per bucket bound (sum by (le) "
                          f"(...)), got labels {[c for c in got.columns if c not in ('timestamp', 'value')]}: {promql}")
        extra = [c for c in got.columns if c not in ("le", "timestamp", "value")]
        if extra and len(got.groupby(extra, dropna=False)) > 1:
            raise Invalid(f"template for column {column!r} gives several histograms (labels {extra}), expected one "
                          f"per track (aggregate with sum by (le) (...)): {promql}")
        les = sorted({str(v) for v in got["le"]}, key=float)  # float() reads "+Inf" too
        cum = np.full((n, len(les)), np.nan)
        idx = np.rint((got["timestamp"].to_numpy(float) - t0) / step).astype(int) - 1
        col = {le: k for k, le in enumerate(les)}
        ok = (idx >= 0) & (idx < n)
        cum[idx[ok], [col[str(v)] for v in got["le"][ok]]] = got["value"].to_numpy(float)[ok]
        bounds = [float(le) for le in les]
        tidy = np.where(np.isfinite(cum), np.maximum.accumulate(np.maximum(np.nan_to_num(cum), 0.0), axis=1), np.nan)
        names = [le_column(prefix, b) for b in bounds]
        if len(set(names)) < len(names):  # "1" and "1.0": one bound twice
            raise Invalid(f"template for column {column!r} gives the same bucket bound twice (le values {les}): "
                          f"{promql}")
        out = dict(zip(names, tidy.T, strict=True))
        try:
            count, m, sd = log_moments_from_buckets(bounds, np.nan_to_num(cum))
        except ValueError as exc:  # too coarse a histogram, or values <= 0: judge from the linear columns
            warnings.warn(f"{prefix}: no log moments from the buckets ({exc}); the judge derives them from "
                          f"{prefix}_mean and the quantiles assuming a log-normal interval. Query: {promql}",
                          stacklevel=3)
            return {f"{prefix}_logmean": mean, f"{prefix}_logstd": std, **out}
        seen = np.isfinite(cum).any(axis=1) & (count > 0)
        mean, std = np.where(seen, m, np.nan), np.where(seen, sd, np.nan)
    return {f"{prefix}_logmean": mean, f"{prefix}_logstd": std, **out}


def _tidy_counts(frame: Any) -> Any:
    """Round off extrapolation artefacts: tiny negatives to 0, successes above trials to trials."""
    import numpy as np

    frame = frame.copy()
    for c in _COUNTS + ("latency_m2", "d_m2"):
        if c in frame.columns:
            x = frame[c].to_numpy(float)
            frame[c] = np.where(x < 0, 0.0, x)
    for k, n in _PAIRS:
        if k in frame.columns and n in frame.columns:
            frame[k] = np.fmin(frame[k].to_numpy(float), frame[n].to_numpy(float))
    return frame


# -- summaries and the judge ----------------------------------------------------------------------


def describe_metrics(frame: Any, *, source: str = "") -> Result:
    """A Result with one row per arm: intervals, intervals with requests, totals and overall rates
    (what the data holds, before judging)."""
    import numpy as np

    rows = []
    for arm in ARMS:
        part = frame[frame["arm"] == arm]

        def total(c: str, part: Any = part) -> float:
            return float(np.nansum(part[c].to_numpy(float))) if c in part.columns else math.nan

        req = total("requests")
        row: dict[str, Any] = {"arm": arm, "intervals": int(len(part)),
                               "with_data": int((part["requests"] > 0).sum()) if "requests" in part.columns else 0,
                               "requests": round(req)}
        if "errors" in part.columns:
            row["error_rate"] = _fmt(total("errors") / req if req else math.nan, pct=True)
        if "correct" in part.columns and "labelled" in part.columns:
            lab = total("labelled")
            row["accuracy"] = _fmt(total("correct") / lab if lab else math.nan, pct=True)
        for c, label in (("latency_mean", "latency_mean"), ("latency_p90", "latency_p90"), ("d_mean", "d_mean")):
            if c in part.columns:
                row[label] = _fmt(float(np.nanmean(part[c].to_numpy(float))) if part[c].notna().any() else math.nan)
        rows.append(row)
    n = int(frame["interval"].nunique())
    summary = f"{n} intervals of stable/canary metrics" + (f" from {source}" if source else "")
    return Result(summary=summary, rows=rows, details={"intervals": n, "source": source}, value=frame)


def collect_metrics(*, recorded: str | Path | None = None, prom: Any = None, model: str = "",
                    start: Any = None, end: Any = None, interval: float = 60.0,
                    templates: Mapping[str, str | None] | None = None,
                    metrics: Sequence[MetricSpec] = DEFAULT_METRICS, **query: Any) -> Result:
    """The runbook's "collect metrics" step: from the ``recorded`` file if given (the ``local``
    target, replays), else from ``prom`` over [start, end]. ``value`` is the validated frame; the
    rows summarise each arm (:func:`describe_metrics`)."""
    if recorded is not None:
        frame = load_metrics(recorded, metrics=metrics)
        source = f"recorded file {Path(recorded).name}"
    elif prom is not None:
        if not model or start is None or end is None:
            raise ValueError("collect_metrics from Prometheus needs model=, start= and end=")
        frame = query_metrics(prom, model=model, start=start, end=end, interval=interval, templates=templates,
                              **query)
        frame = validate_metrics(frame, metrics=metrics, source=f"Prometheus {getattr(prom, 'url', '')}")
        source = f"Prometheus {getattr(prom, 'url', '')} (model {model}, {interval:g} s intervals)"
    else:
        raise ValueError("collect_metrics needs recorded= (a CSV/Parquet file) or prom= (a Prometheus client)")
    return describe_metrics(frame, source=source)


def judge_metrics(frame: Any, *, metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
                  config: JudgeConfig | None = None) -> Result:
    """Run the canary judge over a per-interval frame, interval by interval, stopping at the first
    final verdict (``canary.judge_frame``). The Result's rows: per metric the stable and canary
    estimates (cumulative), the relative change, the tolerance, status and reason; ``details``: the
    decision, interval and reason; ``value``: a :class:`CanaryAnalysis` (verdict, history frame for
    :mod:`opsbook.ops.deploy_new_model.plots`)."""
    frame = validate_metrics(frame, metrics=metrics)
    judge = judge_frame(frame, metrics, config)
    verdict = judge.verdict
    if verdict is None:
        raise MetricsFileError("metrics frame: no interval to judge")
    history = history_frame(judge.history)
    rows = []
    for m in verdict.metrics.values():
        rows.append({
            "metric": m.name,
            "worse_when": "higher" if m.higher_is_worse else "lower",
            "stable": _fmt(m.stable),
            "canary": _fmt(m.canary),
            "change": _fmt(m.relative_change, pct=True, sign=True),
            "tolerance": f"{m.tolerance:.0%}",
            "rollback_at": _fmt(m.rollback_at, pct=True, sign=True),
            "status": m.status,
            "reason": m.reason,
        })
    n = int(frame["interval"].nunique())
    summary = f"{verdict.decision.upper()} at interval {verdict.interval} of {verdict.window}: {verdict.reason}"
    details = {"decision": verdict.decision, "interval": verdict.interval, "window": verdict.window,
               "reason": verdict.reason, "intervals_available": n,
               "decided_interval_label": _plain(_interval_label(frame, verdict.interval))}
    return Result(summary=summary, rows=rows, details=details, headline=verdict_headline(verdict),
                  value=CanaryAnalysis(verdict, history, judge, frame))


def verdict_headline(verdict: Any) -> str:
    """The verdict in one line, as an operator wants it first: the decision and the metrics behind
    it with their change, e.g. ``ROLLBACK at interval 2 of 60: latency +19.3%`` (regressed metrics for
    a rollback; every metric's change otherwise)."""
    ms = list(verdict.metrics.values())
    if verdict.decision == "rollback":
        ms = [m for m in ms if m.status in ("regressed", "no_data")] or ms
    parts = []
    for m in ms:
        what = "no data" if m.status == "no_data" else _fmt(m.relative_change, pct=True, sign=True)
        if m.status == "regressed" and m.exceed is not None and m.exceed.regressed and (
                m.relative_change is None or abs(m.relative_change) < m.tolerance):
            what = f"p{m.exceed.quantile * 100:g} tail ({_fmt(m.exceed.canary_share, pct=True)} of requests slow " \
                   f"vs {_fmt(m.exceed.stable_share, pct=True)})"
        parts.append(f"{m.name} {what}")
    head = {"continue": "UNDECIDED"}.get(verdict.decision, verdict.decision.upper())
    return f"{head} at interval {verdict.interval} of {verdict.window}: " + ", ".join(parts)


def _interval_label(frame: Any, k: int) -> Any:
    labels = sorted(frame["interval"].unique())
    return labels[k - 1] if 0 < k <= len(labels) else None


def _fmt(x: float | None, *, pct: bool = False, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if pct:
        return f"{x * 100:+.1f}%" if sign else f"{x * 100:.2f}%"
    return f"{x:.4g}"
