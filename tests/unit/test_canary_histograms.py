"""Histograms for the exceedance test: the per-interval frame's cumulative ``{prefix}_le_{bound}``
columns -> per-bucket counts (``Summary.hist``, the engine's ``hist`` field), their validation, and a
frame without them left exactly as before."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opsbook.canary import DEFAULT_METRICS, DISSONANCE, LATENCY, JudgeConfig, inputs_from_frame, judge_frame
from opsbook.canary.frames import _metric_fields, bucket_columns, interval_values
from opsbook.ops.deploy_new_model import metrics as cm

ROOT = Path(__file__).resolve().parents[2]
HEALTHY = ROOT / "examples" / "metrics" / "proposer-canary-healthy.csv"

# cumulative counts per (interval, arm) at le = 0.05, 0.1, 0.25, +Inf, and the per-bucket counts
CUMULATIVE = {
    (1, "stable"): (10, 60, 95, 100),
    (1, "canary"): (5, 40, 90, 100),
    (2, "stable"): (0, 0, 100, 100),
    (2, "canary"): (20, 20, 20, 20),
}
PER_BUCKET = {
    (1, "stable"): (10, 50, 35, 5),
    (1, "canary"): (5, 35, 50, 10),
    (2, "stable"): (0, 0, 100, 0),
    (2, "canary"): (20, 0, 0, 0),
}
# deliberately out of order: the bounds come from the names, not the column order
BUCKET_COLUMNS = {"latency_le_+Inf": 3, "latency_le_0.25": 2, "latency_le_0.05": 0, "latency_le_0.1": 1}


def _frame(*, buckets: bool = True, inf: str | None = "latency_le_+Inf") -> pd.DataFrame:
    rows = []
    for (iv, arm), cum in CUMULATIVE.items():
        row = {"interval": iv, "arm": arm, "requests": float(cum[-1]), "latency_mean": 0.12, "latency_std": 0.06,
               "latency_p90": 0.2, "latency_logmean": math.log(0.1), "latency_logstd": 0.5}
        if buckets:
            for col, k in BUCKET_COLUMNS.items():
                if col == "latency_le_+Inf":
                    if inf is None:
                        continue
                    col = inf
                row[col] = float(cum[k])
        rows.append(row)
    return pd.DataFrame(rows)


def _summaries(frame: pd.DataFrame, metrics=(LATENCY,)) -> dict:
    out = {}
    for item in inputs_from_frame(frame, metrics):
        for arm in ("stable", "canary"):
            out[(item.interval, arm)] = getattr(item, arm)[metrics[0].name]
    return out


def test_cumulative_bucket_columns_become_per_bucket_counts_overflow_last():
    got = _summaries(_frame())
    for key, expected in PER_BUCKET.items():
        assert got[key].hist == tuple(float(x) for x in expected), key
    fields = _metric_fields(_frame(), LATENCY)
    assert fields["hist"].shape == (4, 4)  # 3 finite bounds + overflow
    assert bucket_columns(list(_frame().columns), "latency") == [
        (0.05, "latency_le_0.05"), (0.1, "latency_le_0.1"), (0.25, "latency_le_0.25"), (math.inf, "latency_le_+Inf")]


@pytest.mark.parametrize("inf", ["latency_le_+Inf", "latency_le_inf", "latency_le_Inf", None])
def test_the_overflow_column_may_be_spelt_inf_or_left_out(inf):
    """Without a +Inf column the count column (requests) is the histogram's total."""
    got = _summaries(_frame(inf=inf))
    assert {k: s.hist for k, s in got.items()} == {k: tuple(map(float, v)) for k, v in PER_BUCKET.items()}


def test_the_count_is_the_total_without_inf_and_the_overflow_is_what_is_left():
    frame = _frame(inf=None)
    frame.loc[(frame["interval"] == 1) & (frame["arm"] == "stable"), "requests"] = 130.0
    assert _summaries(frame)[(1, "stable")].hist == (10.0, 50.0, 35.0, 35.0)


def test_a_decreasing_cumulative_count_is_refused_naming_the_column_and_the_interval():
    frame = _frame()
    frame.loc[(frame["interval"] == 2) & (frame["arm"] == "canary"), "latency_le_0.1"] = 15.0
    with pytest.raises(ValueError, match=r"column 'latency_le_0.1' \(15\) is below 'latency_le_0.05' \(20\) at "
                                         r"interval 2, arm 'canary': cumulative bucket counts must not decrease"):
        inputs_from_frame(frame, [LATENCY])


def test_a_total_below_the_last_bucket_is_refused_naming_the_total():
    frame = _frame()
    frame.loc[(frame["interval"] == 1) & (frame["arm"] == "stable"), "latency_le_+Inf"] = 90.0
    with pytest.raises(ValueError, match=r"column 'latency_le_\+Inf' \(90\) is below 'latency_le_0.25' \(95\) at "
                                         r"interval 1, arm 'stable'"):
        inputs_from_frame(frame, [LATENCY])
    frame = _frame(inf=None)
    frame.loc[(frame["interval"] == 1) & (frame["arm"] == "stable"), "requests"] = 90.0
    with pytest.raises(ValueError, match=r"column 'requests' \(90\) is below 'latency_le_0.25' \(95\) .*without a "
                                         r"'latency_le_\+Inf' column, 'requests' is the histogram's total"):
        inputs_from_frame(frame, [LATENCY])


def test_a_negative_count_is_refused():
    frame = _frame()
    frame.loc[(frame["interval"] == 1) & (frame["arm"] == "canary"), "latency_le_0.05"] = -1.0
    with pytest.raises(ValueError, match=r"column 'latency_le_0.05' has a negative count \(-1\) at interval 1, "
                                         r"arm 'canary'"):
        inputs_from_frame(frame, [LATENCY])


def test_float_noise_is_no_decrease():
    frame = _frame()
    frame.loc[(frame["interval"] == 2) & (frame["arm"] == "canary"), "latency_le_0.1"] = 20.0 - 1e-12
    assert _summaries(frame)[(2, "canary")].hist == (20.0, 0.0, 0.0, 0.0)


def test_a_missing_value_means_no_histogram_for_that_interval_only():
    frame = _frame()
    frame.loc[(frame["interval"] == 1) & (frame["arm"] == "canary"), "latency_le_0.1"] = np.nan
    fields = _metric_fields(frame, LATENCY)
    assert np.isnan(fields["hist"][1]).all() and np.isfinite(np.delete(fields["hist"], 1, axis=0)).all()
    got = _summaries(frame)
    assert got[(1, "canary")] is not None and got[(1, "canary")].hist is None  # the other tests keep the row
    assert got[(1, "canary")].n == 100 and got[(1, "canary")].log_mean == pytest.approx(math.log(0.1))
    assert got[(1, "stable")].hist == (10.0, 50.0, 35.0, 5.0)
    # a missing total (the +Inf column) too
    frame = _frame()
    frame.loc[(frame["interval"] == 2) & (frame["arm"] == "stable"), "latency_le_+Inf"] = np.nan
    assert _summaries(frame)[(2, "stable")].hist is None


def test_a_frame_without_bucket_columns_is_judged_as_before():
    frame = cm.load_metrics(HEALTHY)
    assert not [c for c in frame.columns if "_le_" in c]
    plain = inputs_from_frame(frame, DEFAULT_METRICS)
    assert "hist" not in _metric_fields(frame, LATENCY)
    assert all(s.hist is None for item in plain for s in (item.stable["latency"], item.canary["latency"]))
    # the same frame with bucket columns: only ``hist`` differs
    with_buckets = _frame()
    without = _frame(buckets=False)
    for key, s in _summaries(with_buckets).items():
        assert dataclasses.replace(s, hist=None) == _summaries(without)[key]
    np.testing.assert_array_equal(interval_values(with_buckets, LATENCY), interval_values(without, LATENCY))


def test_only_metrics_with_tail_tests_read_buckets():
    frame = _frame().assign(d_count=100.0, d_mean=0.2, d_std=0.1,
                            **{"d_le_0.1": 50.0, "d_le_0.05": 70.0})  # decreasing: would be refused
    (item, *_) = inputs_from_frame(frame, [DISSONANCE])
    assert not DISSONANCE.tail and item.stable["d"].hist is None


@pytest.mark.parametrize(("columns", "message"), [
    ({"latency_le_fast": 1.0}, r"column 'latency_le_fast': bucket bound 'fast' is not a number"),
    ({"latency_le_0.1": 1.0, "latency_le_0.10": 1.0}, r"columns 'latency_le_0.1' and 'latency_le_0.10' are the same "
                                                      r"bucket bound"),
    ({"latency_le_nan": 1.0}, r"bucket bound 'nan' must be a number or \+Inf"),
])
def test_bad_bucket_column_names_are_refused(columns, message):
    frame = _frame(buckets=False).assign(**columns)
    with pytest.raises(ValueError, match=message):
        inputs_from_frame(frame, [LATENCY])


def test_an_overflow_column_alone_is_no_histogram():
    frame = _frame(buckets=False).assign(**{"latency_le_+Inf": 100.0})
    with pytest.raises(ValueError, match=r"column 'latency_le_\+Inf' alone is no histogram"):
        inputs_from_frame(frame, [LATENCY])


def test_recorded_files_with_bucket_columns_load_and_errors_name_the_line(tmp_path):
    path = tmp_path / "m.csv"
    frame = cm.load_metrics(HEALTHY)
    n = frame["requests"].to_numpy(float)
    frame = frame.assign(**{"latency_le_0.1": np.floor(0.4 * n), "latency_le_0.2": np.floor(0.9 * n),
                            "latency_le_+Inf": n})
    cm.save_metrics(frame, path)
    back = cm.load_metrics(path)
    assert {"latency_le_0.1", "latency_le_0.2", "latency_le_+Inf"} <= set(back.columns)
    first = inputs_from_frame(back, DEFAULT_METRICS)[0]
    assert first.stable["latency"].hist == (80.0, 100.0, 20.0)
    # a negative count: the file's line and the column
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("latency_le_0.1")] = "-3"
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]))
    with pytest.raises(cm.MetricsFileError, match=r"m\.csv line 4 .*column 'latency_le_0.1' must not be negative"):
        cm.load_metrics(path)
    # decreasing: the interval and the column
    cells[header.index("latency_le_0.1")] = "190"
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]))
    with pytest.raises(cm.MetricsFileError, match=r"m\.csv: column 'latency_le_0.2' \(180\) is below "
                                                  r"'latency_le_0.1' \(190\) at interval 2"):
        cm.load_metrics(path)


def test_the_judge_takes_a_frame_with_histograms():
    """Only that the histograms reach the judge without error; what it concludes is the engine's."""
    judge = judge_frame(_frame(), (LATENCY,), JudgeConfig(window=4, warmup=0))
    assert 1 <= len(judge.history) <= 2
