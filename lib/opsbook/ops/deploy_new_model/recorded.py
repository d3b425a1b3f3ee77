"""The per-interval metrics frame's schema, and recorded metrics files: what the judge reads,
whether it came from Prometheus or from a file, checked in one place so that both sources fail
the same way, naming where.

Recorded files (CSV, or Parquet with ``pyarrow``): the columns of :data:`SCHEMA_COLUMNS`, written by
:func:`save_metrics` or by ``examples/metrics/generate.py``; ``start``/``end`` (interval bounds, ISO
8601 UTC) and the ``latency_le_*`` bucket columns are optional. :func:`load_metrics` validates them
and names the file, line and column of every problem (:class:`MetricsFileError`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opsbook.canary import DEFAULT_METRICS, MetricSpec, inputs_from_frame
from opsbook.errors import UsageError

ARMS = ("stable", "canary")
#: Columns of the per-interval frame, in order (optional ones may be absent; extra columns are kept).
SCHEMA_COLUMNS = ("interval", "arm", "start", "end", "requests", "errors", "labelled", "correct",
                  "latency_mean", "latency_std", "latency_m2", "latency_p50", "latency_p90",
                  "latency_logmean", "latency_logstd", "d_count", "d_mean", "d_std", "d_m2")
_COUNTS = ("requests", "errors", "labelled", "correct", "d_count")
_LE = re.compile(r"_le_[^_]+$")  # a cumulative bucket count column, latency_le_0.005


class MetricsFileError(UsageError, ValueError):
    """A metrics frame or recorded file does not follow the schema; the message names the file, the
    line (CSV, header = line 1) or row (Parquet), and the column."""


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def load_metrics(path: str | Path, *, metrics: Sequence[MetricSpec] = DEFAULT_METRICS) -> Any:
    """Read and validate a recorded per-interval metrics file (``.csv``, or ``.parquet``/``.pq`` with
    pyarrow). Returns the frame sorted by interval and arm; raises :class:`MetricsFileError` naming
    the file, line/row and column of the first problem found."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise MetricsFileError(f"metrics file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(p, skipinitialspace=True)
        elif suffix in (".parquet", ".pq"):
            if not _has_pyarrow():
                raise MetricsFileError(f"{p.name}: reading Parquet needs pyarrow (pip install pyarrow), "
                                       "or record the metrics as CSV")
            frame = pd.read_parquet(p)
        else:
            raise MetricsFileError(f"{p.name}: unknown metrics file type {suffix!r}; expected .csv or .parquet")
    except MetricsFileError:
        raise
    except Exception as exc:  # pandas' parser errors are many types
        raise MetricsFileError(f"{p.name}: cannot be read as {suffix[1:].upper()}: {exc}") from exc
    return validate_metrics(frame, metrics=metrics, source=p.name, csv=suffix == ".csv")


def validate_metrics(frame: Any, *, metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
                     source: str = "metrics frame", csv: bool = False) -> Any:
    """Check a per-interval frame against the schema (and the judge's needs for ``metrics``); return
    it cleaned (arm names normalised, numeric columns as float, sorted). Errors name the line (CSV,
    ``csv=True``: header is line 1) or row (0-based frame row) and the column."""
    import numpy as np
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise MetricsFileError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]

    def where(i: int) -> str:
        at = f"line {i + 2}" if csv else f"row {i}"
        iv = _plain(frame["interval"].iloc[i]) if "interval" in frame.columns else "?"
        arm = _plain(frame["arm"].iloc[i]) if "arm" in frame.columns else "?"
        return f"{source} {at} (interval {iv!r}, arm {arm!r})"

    if frame.empty:
        raise MetricsFileError(f"{source}: no rows")
    missing = [c for c in ("interval", "arm") if c not in frame.columns]
    if missing:
        raise MetricsFileError(f"{source}: column(s) {missing} missing; columns: {list(frame.columns)}")
    bad = frame["interval"].isna().to_numpy()
    if bad.any():
        raise MetricsFileError(f"{where(int(np.argmax(bad)))}: column 'interval' is empty")
    arms = frame["arm"].astype(str).str.strip().str.lower()
    bad = ~arms.isin(ARMS).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricsFileError(f"{where(i)}: column 'arm' is {frame['arm'].iloc[i]!r}; expected 'stable' or 'canary'")
    frame["arm"] = arms
    dup = frame.duplicated(["interval", "arm"]).to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise MetricsFileError(f"{where(i)}: a second row for the same interval and arm")

    numeric = [c for c in frame.columns if c in SCHEMA_COLUMNS[4:] or _spec_column(c, metrics)]
    for c in numeric:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = (values.isna() & frame[c].notna() & (frame[c].astype(str).str.strip() != "")).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise MetricsFileError(f"{where(i)}: column {c!r} is not a number: {frame[c].iloc[i]!r}")
        frame[c] = values.astype(float)
        x = frame[c].to_numpy(float)
        bad = np.isinf(x)
        if bad.any():
            raise MetricsFileError(f"{where(int(np.argmax(bad)))}: column {c!r} is infinite")
        if c in _COUNTS or c.endswith(("_std", "_m2", "_count")) or _LE.search(c) or c in {
                s.trials for s in metrics} | {s.successes for s in metrics}:
            bad = x < 0
            if bad.any():
                i = int(np.argmax(bad))
                raise MetricsFileError(f"{where(i)}: column {c!r} must not be negative, got {x[i]:g}")
    for spec in metrics:
        if spec.kind == "bernoulli" and spec.successes in frame.columns and spec.trials in frame.columns:
            k, n = frame[spec.successes].to_numpy(float), frame[spec.trials].to_numpy(float)
            bad = k > n
            if bad.any():
                i = int(np.argmax(bad))
                raise MetricsFileError(f"{where(i)}: column {spec.successes!r} ({k[i]:g}) exceeds "
                                       f"{spec.trials!r} ({n[i]:g})")
    for c in ("start", "end"):
        if c in frame.columns:
            try:
                frame[c] = pd.to_datetime(frame[c], utc=True)
            except (ValueError, TypeError) as exc:
                raise MetricsFileError(f"{source}: column {c!r} must hold ISO 8601 times: {exc}") from exc
    try:
        inputs_from_frame(frame, metrics)  # what the judge will need: columns per metric, positivity
    except ValueError as exc:
        raise MetricsFileError(f"{source}: {exc}") from exc
    return frame.sort_values(["interval", "arm"], ascending=[True, False], ignore_index=True)


def _spec_column(column: str, metrics: Sequence[MetricSpec]) -> bool:
    for s in metrics:
        if column in (s.successes, s.trials, s.count):
            return True
        if s.kind == "continuous" and column.startswith(s.prefix + "_"):
            return True
    return False


def save_metrics(frame: Any, path: str | Path) -> Path:
    """Write a per-interval frame as CSV or Parquet (by the suffix), times as ISO 8601 UTC."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    if p.suffix.lower() == ".csv":
        for c in ("start", "end"):
            if c in out.columns:
                out[c] = out[c].map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(t, "strftime") else t)
        out.to_csv(p, index=False, float_format="%.6g")
    elif p.suffix.lower() in (".parquet", ".pq"):
        if not _has_pyarrow():
            raise MetricsFileError("writing Parquet needs pyarrow (pip install pyarrow)")
        out.to_parquet(p, index=False)
    else:
        raise MetricsFileError(f"{p.name}: unknown metrics file type {p.suffix!r}; expected .csv or .parquet")
    return p


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x
