"""Per-interval aggregates (a pandas DataFrame) -> the judge's inputs.

Prometheus queries and recorded CSV/Parquet files give aggregates per analysis interval and arm, not
raw requests. The schema, long format, one row per interval and arm:

============== ======= ==================================================================
column         type    meaning
============== ======= ==================================================================
interval       any     analysis interval label (int index or timestamp); sorted ascending
arm            str     ``stable`` or ``canary``
requests       count   requests served in the interval (trials of ``error_rate``; the count
                       behind ``latency_*`` and, without ``d_count``, behind ``d_*``)
errors         count   failed requests, <= requests                       (error_rate)
labelled       count   requests with ground-truth feedback                (accuracy)
correct        count   labelled requests predicted correctly, <= labelled (accuracy)
latency_mean   float   mean latency in the interval (any unit, the same for both arms)
latency_std    float   sample standard deviation (ddof=1) of latency; or instead
latency_m2     float   sum of squared deviations from the interval mean (Welford's M2)
latency_p50    float   median latency (optional; see below)
latency_p90    float   90th percentile latency (the tail guard's input)
d_mean         float   mean dissonance value ``d``
d_std / d_m2   float   as for latency
d_count        count   number of ``d`` values (optional, defaults to ``requests``)
latency_logmean float  mean of ln(latency) in the interval (optional; see below)
latency_logstd  float  sample standard deviation (ddof=1) of ln(latency), with ``_logmean``
latency_le_B   count   requests with latency <= B (cumulative, as Prometheus' ``_bucket{le="B"}``),
                       one column per bucket bound B, e.g. ``latency_le_0.005``, ...,
                       ``latency_le_+Inf`` (optional; see below)
============== ======= ==================================================================

Latency is judged on the log scale (its geometric mean, ``MetricSpec.scale="log"``): from
``latency_logmean``/``latency_logstd`` when present (a recorded file of per-request values, or
Prometheus histogram buckets, see :func:`log_moments_from_buckets`), else derived from the linear
columns assuming a log-normal interval: sigma**2 = ln(1 + std**2/mean**2), mu = ln(mean) - sigma**2/2.

Without ``*_std`` and ``*_m2`` but with ``*_p50`` and ``*_p90`` (what Prometheus histograms give),
the standard deviation is derived assuming a log-normal distribution within the interval:
sigma = ln(p90/p50)/1.2816, std = mean*sqrt(exp(sigma**2) - 1).

Histograms (for the exceedance test on p99 latency, metrics with ``MetricSpec.tail``): cumulative
bucket columns ``{prefix}_le_{bound}``, the bound read as a number from the name (``0.005``, ``1``,
``1e-05``; ``+Inf``/``inf`` for the overflow bucket), in any order, the same for every row. The
``+Inf`` column is optional: without it the metric's count column (``requests``) is the total. They
become per-bucket counts (differences of the cumulative ones, overflow last), ``Summary.hist``.
Cumulative counts must not decrease as the bound grows, nor be negative (``ValueError`` naming the
column and the interval); a missing value in any of a row's bucket columns means no histogram for
that interval (the other tests still use the row). A frame without bucket columns has no histograms.

Custom metrics name their columns in their :class:`~opsbook.canary.spec.MetricSpec`. A column the
specs need that the frame lacks, a negative count, successes above trials, a negative std, a
non-positive mean, an unknown arm or a duplicated (interval, arm) row raise ``ValueError`` naming the
column. A missing value (NaN) or a missing row means "no data for that arm in that interval": the
judge then treats the metric as unobserved there (and fails it if it never gets data).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from opsbook.canary.judge import CanaryJudge
from opsbook.canary.spec import (
    DEFAULT_METRICS,
    Counts,
    JudgeConfig,
    MetricSpec,
    Observation,
    Summary,
    lognormal_moments,
)

ARMS = ("stable", "canary")
Z90 = 1.2815515655446004


@dataclass(frozen=True)
class IntervalInput:
    """One interval's observations, ready for ``CanaryJudge.update(item.stable, item.canary)``."""

    interval: Any
    stable: dict[str, Observation | None]
    canary: dict[str, Observation | None]


def _require(frame: Any, column: str, spec: MetricSpec | None = None) -> None:
    if column not in frame.columns:
        who = f" (needed by metric {spec.name!r})" if spec else ""
        raise ValueError(f"column {column!r} missing from the metrics frame{who}; columns: {list(frame.columns)}")


def _numeric(frame: Any, column: str) -> np.ndarray:
    import pandas as pd

    try:
        return pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column {column!r} must be numeric: {exc}") from None


def _where(frame: Any, mask: np.ndarray) -> str:
    i = int(np.argmax(mask))
    iv, arm = frame["interval"].iloc[i], frame["arm"].iloc[i]
    iv = iv.item() if isinstance(iv, np.generic) else iv  # 2, not np.int64(2)
    return f"interval {iv!r}, arm {arm!r}"


def _counts(frame: Any, column: str) -> np.ndarray:
    x = _numeric(frame, column)
    bad = x < 0
    if bad.any():
        raise ValueError(f"column {column!r} has a negative count ({x[bad][0]:g}) at {_where(frame, bad)}")
    return x


def _count_column(frame: Any, spec: MetricSpec) -> str:
    if spec.count in frame.columns:
        return spec.count
    if spec.count != "requests" and "requests" in frame.columns:
        return "requests"
    _require(frame, spec.count, spec)
    return spec.count


def _metric_fields(frame: Any, spec: MetricSpec) -> dict[str, np.ndarray]:
    if spec.kind == "bernoulli":
        if not spec.successes or not spec.trials:
            raise ValueError(f"metric {spec.name!r}: a Bernoulli spec needs successes= and trials= columns")
        for c in (spec.successes, spec.trials):
            _require(frame, c, spec)
        k, n = _counts(frame, spec.successes), _counts(frame, spec.trials)
        bad = k > n
        if bad.any():
            raise ValueError(f"column {spec.successes!r} exceeds {spec.trials!r} at {_where(frame, bad)}")
        return {"successes": k, "trials": n}

    p = spec.prefix
    n = _counts(frame, _count_column(frame, spec))
    has_linear = f"{p}_mean" in frame.columns
    if spec.scale == "log" and f"{p}_logmean" in frame.columns:
        out = _log_fields(frame, spec, n)
        cols = set(frame.columns)
        if has_linear and ({f"{p}_std", f"{p}_m2"} & cols or {f"{p}_p50", f"{p}_p90"} <= cols):
            # intervals without log moments (no buckets then) fall back to the linear columns
            lin = _linear_fields(frame, spec, n)
            gap = ~np.isfinite(out["log_mean"])
            mu, sigma = lognormal_moments(lin["mean"], lin["std"])
            out["log_mean"] = np.where(gap, mu, out["log_mean"])
            out["log_std"] = np.where(gap, sigma, out["log_std"])
            out["mean"], out["std"] = lin["mean"], lin["std"]
        return _with_tail(frame, spec, out)
    out = _linear_fields(frame, spec, n)
    if spec.scale == "log":  # no ln-x columns: assume a log-normal interval
        out["log_mean"], out["log_std"] = lognormal_moments(out["mean"], out["std"])
    return _with_tail(frame, spec, out)


def _linear_fields(frame: Any, spec: MetricSpec, n: np.ndarray) -> dict[str, np.ndarray]:
    """``n``, ``mean`` and ``std`` of a continuous metric from ``{p}_mean`` and ``{p}_std`` (or
    ``{p}_m2``, or ``{p}_p50``/``{p}_p90`` under a log-normal assumption)."""
    p = spec.prefix
    _require(frame, f"{p}_mean", spec)
    mean = _numeric(frame, f"{p}_mean")
    bad = (n > 0) & (mean <= 0)
    if bad.any():
        raise ValueError(f"column {p + '_mean'!r} must be positive (relative change of a mean), "
                         f"got {mean[bad][0]:g} at {_where(frame, bad)}")
    if f"{p}_std" in frame.columns:
        std = _numeric(frame, f"{p}_std")
        col = f"{p}_std"
    elif f"{p}_m2" in frame.columns:
        m2 = _numeric(frame, f"{p}_m2")
        col = f"{p}_m2"
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(n > 1, np.sqrt(np.where(m2 >= 0, m2, np.nan) / (n - 1)), 0.0)
        std = np.where(m2 < 0, -1.0, std)
    elif f"{p}_p50" in frame.columns and f"{p}_p90" in frame.columns:
        p50, p90 = _numeric(frame, f"{p}_p50"), _numeric(frame, f"{p}_p90")
        col = f"{p}_p90"
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = np.log(p90 / p50) / Z90
        bad = (n > 0) & ~(sigma >= 0)
        if bad.any():
            raise ValueError(f"columns {p + '_p50'!r}/{p + '_p90'!r} need 0 < p50 <= p90 at {_where(frame, bad)}")
        std = mean * np.sqrt(np.expm1(sigma * sigma))
    else:
        raise ValueError(f"column {p + '_std'!r} missing from the metrics frame (needed by metric {spec.name!r}; "
                         f"or give {p + '_m2'!r}, or {p + '_p50'!r} and {p + '_p90'!r}); columns: {list(frame.columns)}")
    bad = std < 0
    if bad.any():
        raise ValueError(f"column {col!r} must not be negative at {_where(frame, bad)}")
    return {"n": n, "mean": mean, "std": std}


def _log_fields(frame: Any, spec: MetricSpec, n: np.ndarray) -> dict[str, np.ndarray]:
    """A log-scale metric from its ``{p}_logmean`` / ``{p}_logstd`` columns (mean and sample std of
    ln x); ``mean``/``std`` for display are those of the log-normal with these moments."""
    p = spec.prefix
    if f"{p}_logstd" not in frame.columns:
        raise ValueError(f"column {p + '_logstd'!r} missing from the metrics frame (needed with {p + '_logmean'!r} "
                         f"by metric {spec.name!r}: the sample std of ln x); columns: {list(frame.columns)}")
    log_mean, log_std = _numeric(frame, f"{p}_logmean"), _numeric(frame, f"{p}_logstd")
    bad = log_std < 0
    if bad.any():
        raise ValueError(f"column {p + '_logstd'!r} must not be negative at {_where(frame, bad)}")
    bad = (n > 0) & np.isfinite(log_mean) & ~np.isfinite(log_std)
    if bad.any():
        raise ValueError(f"column {p + '_logstd'!r} is missing where {p + '_logmean'!r} is given, at {_where(frame, bad)}")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.exp(log_mean + log_std ** 2 / 2)
        std = mean * np.sqrt(np.expm1(log_std ** 2))
    return {"n": n, "mean": mean, "std": std, "log_mean": log_mean, "log_std": log_std}


def _with_tail(frame: Any, spec: MetricSpec, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if spec.tail:
        _require(frame, spec.tail_column, spec)
        out["tail"] = _numeric(frame, spec.tail_column)
        hist = histogram_fields(frame, spec, out["n"])
        if hist is not None:
            out["hist"] = hist
    return out


def bucket_columns(columns: Sequence[Any], prefix: str) -> list[tuple[float, str]]:
    """The cumulative bucket columns ``{prefix}_le_{bound}`` among ``columns``, as (bound, column)
    sorted by bound (``inf`` for ``+Inf``). A bound that is not a number, NaN or -Inf, or two columns
    of the same bound, raise ``ValueError`` naming the columns."""
    pattern = re.compile(re.escape(prefix) + r"_le_(.+)")
    found: dict[float, str] = {}
    for c in columns:
        m = pattern.fullmatch(str(c))
        if not m:
            continue
        try:
            bound = float(m.group(1))
        except ValueError:
            raise ValueError(f"column {c!r}: bucket bound {m.group(1)!r} is not a number (expected e.g. "
                             f"{prefix + '_le_0.005'!r} or {prefix + '_le_+Inf'!r})") from None
        if math.isnan(bound) or bound == -math.inf:
            raise ValueError(f"column {c!r}: bucket bound {m.group(1)!r} must be a number or +Inf")
        if bound in found:
            raise ValueError(f"columns {found[bound]!r} and {c!r} are the same bucket bound ({bound:g})")
        found[bound] = str(c)
    return sorted(found.items())


def histogram_fields(frame: Any, spec: MetricSpec, n: np.ndarray) -> np.ndarray | None:
    """Per row, the per-bucket counts (overflow last; shape (rows, finite bounds + 1)) from the
    frame's cumulative ``{prefix}_le_{bound}`` columns, NaN rows where a value is missing; None when the
    frame has no bucket columns. Without a ``+Inf`` column, ``n`` (the metric's count) is the total."""
    buckets = bucket_columns(list(frame.columns), spec.prefix)
    if not buckets:
        return None
    finite = [(b, c) for b, c in buckets if math.isfinite(b)]
    if not finite:
        raise ValueError(f"column {buckets[0][1]!r} alone is no histogram: give the cumulative counts of at least "
                         f"one finite bound too, e.g. {spec.prefix + '_le_0.1'!r}")
    columns = [c for _, c in finite]
    cum = np.column_stack([_numeric(frame, c) for c in columns])
    overflow = buckets[-1][1] if math.isinf(buckets[-1][0]) else None
    total_col = overflow or _count_column(frame, spec)
    total = _numeric(frame, overflow) if overflow else np.asarray(n, dtype=float)
    cum = np.column_stack([cum, total])
    columns.append(total_col)
    for k, c in enumerate(columns[:-1] if not overflow else columns):
        bad = cum[:, k] < 0
        if bad.any():
            raise ValueError(f"column {c!r} has a negative count ({cum[bad, k][0]:g}) at {_where(frame, bad)}")
    step = np.diff(cum, axis=1)
    slack = 1e-9 * np.maximum(1.0, np.abs(cum[:, 1:]))  # float noise is no decrease
    with np.errstate(invalid="ignore"):
        down = step < -slack
    if down.any():
        rows, ks = np.nonzero(down)
        i, k = int(rows[0]), int(ks[0])
        mask = np.zeros(len(cum), dtype=bool)
        mask[i] = True
        note = ("" if overflow or k + 1 < len(columns) - 1 else
                f" (without a {spec.prefix + '_le_+Inf'!r} column, {total_col!r} is the histogram's total)")
        raise ValueError(f"column {columns[k + 1]!r} ({cum[i, k + 1]:g}) is below {columns[k]!r} ({cum[i, k]:g}) at "
                         f"{_where(frame, mask)}: cumulative bucket counts must not decrease as the bound "
                         f"grows{note}")
    missing = ~np.isfinite(cum).all(axis=1)
    hist = np.diff(np.maximum.accumulate(np.nan_to_num(cum), axis=1), axis=1, prepend=0.0)
    hist[missing] = np.nan
    return hist


def log_moments_from_buckets(upper_bounds: Sequence[float], cumulative: Any) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """(count, mean of ln x, sample std of ln x) from a histogram's cumulative bucket counts.

    ``upper_bounds``: the buckets' ``le`` bounds (any order, ``inf`` for ``+Inf``); ``cumulative``:
    counts per bound, shape (..., buckets) in the same order, as ``sum by (le) (increase(x_bucket[i]))``
    gives them (not integers after ``increase()``'s extrapolation; a bucket's negative difference is
    taken as 0). Each bucket's requests are put at the geometric midpoint of its bounds: the first
    bucket at half a step below its bound, ``+Inf`` at half a step above the last finite bound (the
    step is the neighbouring buckets' ratio). The midpoint rule adds about w**2/12 to the variance for
    buckets w wide in ln x (0.004 for x1.25 buckets, against sigma**2 = 0.25 for a typical latency),
    which only makes the test a little more cautious; and both arms go through the same buckets, so
    equal distributions give equal estimates. Needs two positive finite bounds; buckets at or below 0
    must be empty. Where the count is 0 the moments are NaN (no data).
    """
    bounds = np.asarray(upper_bounds, dtype=float)
    cum = np.asarray(cumulative, dtype=float)
    if bounds.ndim != 1 or cum.shape[-1] != bounds.size:
        raise ValueError(f"{bounds.size} bucket bounds but counts of shape {cum.shape}")
    order = np.argsort(bounds)
    bounds, cum = bounds[order], cum[..., order]
    nonpos = bounds <= 0
    if nonpos.any():  # e.g. an le="0" bucket: fine while nothing is in it, ln x needs x > 0
        at_zero = np.nan_to_num(cum[..., nonpos]).max(initial=0.0)
        if at_zero > 0:
            raise ValueError(f"{at_zero:g} observations at or below {bounds[nonpos].max():g}: "
                             "a log-scale metric needs positive values")
        bounds, cum = bounds[~nonpos], cum[..., ~nonpos]
    finite = bounds[np.isfinite(bounds)]
    if finite.size < 2 or not (finite[0] > 0):
        raise ValueError(f"log moments need at least two positive finite bucket bounds, got {finite.tolist()}")
    cum = np.maximum.accumulate(np.nan_to_num(cum), axis=-1)  # counts are cumulative: never decreasing
    counts = np.diff(cum, axis=-1, prepend=0.0)
    ln_b = np.log(finite)
    mids = np.empty(bounds.size)
    mids[0] = ln_b[0] - (ln_b[1] - ln_b[0]) / 2.0
    mids[1:finite.size] = (ln_b[:-1] + ln_b[1:]) / 2.0
    if bounds.size > finite.size:  # +Inf
        mids[finite.size:] = ln_b[-1] + (ln_b[-1] - ln_b[-2]) / 2.0
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, (counts * mids).sum(axis=-1) / n, np.nan)
        ss = (counts * (mids - mean[..., None]) ** 2).sum(axis=-1)
        std = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1.0, 1e-12)), np.where(n > 0, 0.0, np.nan))
    return n, mean, std


def interval_values(frame: Any, spec: MetricSpec) -> np.ndarray:
    """Per row of ``frame``, that interval's own value of what the judge estimates for ``spec``: the
    rate (Bernoulli), the mean, or for a log-scale metric the geometric mean exp(mean of ln x), read
    from the same columns with the same fallbacks as the judge; NaN where there is no data."""
    f = _metric_fields(frame.reset_index(drop=True), spec)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if spec.kind == "bernoulli":
            return np.where(f["trials"] > 0, f["successes"] / f["trials"], np.nan)
        return np.exp(f["log_mean"]) if spec.scale == "log" else f["mean"]


def inputs_from_frame(frame: Any, metrics: Sequence[MetricSpec] = DEFAULT_METRICS) -> list[IntervalInput]:
    """Validate a per-interval aggregate frame (schema in the module docstring) and turn it into one
    :class:`IntervalInput` per interval, in interval order."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    for c in ("interval", "arm"):
        _require(frame, c)
    frame = frame.reset_index(drop=True)
    arms = frame["arm"].astype(str).str.strip().str.lower()
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"column 'arm' has unknown value(s) {unknown}; expected 'stable' or 'canary'")
    frame = frame.assign(arm=arms)
    if frame["interval"].isna().any():
        raise ValueError("column 'interval' has missing values")
    dup = frame.duplicated(["interval", "arm"])
    if dup.any():
        raise ValueError(f"column 'interval' repeats interval {frame['interval'][dup].iloc[0]!r} "
                         f"for arm {frame['arm'][dup].iloc[0]!r}")
    fields = {s.name: _metric_fields(frame, s) for s in metrics}

    intervals = sorted(frame["interval"].unique())
    where = {(iv, a): i for i, (iv, a) in enumerate(zip(frame["interval"], frame["arm"], strict=True))}
    out = []
    for iv in intervals:
        per_arm: dict[str, dict[str, Observation | None]] = {}
        for arm in ARMS:
            i = where.get((iv, arm))
            per_arm[arm] = {s.name: (None if i is None else _observation(s, fields[s.name], i)) for s in metrics}
        out.append(IntervalInput(iv, per_arm["stable"], per_arm["canary"]))
    return out


def _observation(spec: MetricSpec, f: dict[str, np.ndarray], i: int) -> Observation | None:
    if spec.kind == "bernoulli":
        k, n = f["successes"][i], f["trials"][i]
        if not (math.isfinite(k) and math.isfinite(n)) or n <= 0:
            return None
        return Counts(float(k), float(n))
    n, mean, std = f["n"][i], f["mean"][i], f["std"][i]
    if not (math.isfinite(n) and math.isfinite(mean)) or n <= 0:
        return None
    tail = float(f["tail"][i]) if "tail" in f and math.isfinite(f["tail"][i]) else None
    log_mean = log_std = None
    if "log_mean" in f:
        lm, ls = f["log_mean"][i], f["log_std"][i]
        if not (math.isfinite(lm) and math.isfinite(ls)):
            return None
        log_mean, log_std = float(lm), float(ls)
    hist = None
    if "hist" in f and np.isfinite(f["hist"][i]).all():
        hist = tuple(float(v) for v in f["hist"][i])
    return Summary(float(n), float(mean), float(std) if math.isfinite(std) else 0.0, tail, log_mean, log_std, hist)


def judge_frame(frame: Any, metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
                config: JudgeConfig | None = None) -> CanaryJudge:
    """Feed a whole recorded frame to a new judge, interval by interval, stopping at the first final
    verdict (or when the frame or the window ends). The judge's ``history`` holds every verdict."""
    judge = CanaryJudge(metrics, config)
    for item in inputs_from_frame(frame, metrics):
        verdict = judge.update(item.stable, item.canary)
        if verdict.final:
            break
    return judge
