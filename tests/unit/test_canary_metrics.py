"""Canary metrics: recorded files, the judge over them, the plots, the Prometheus client's answers
(through a fake session) and the per-interval query assembly (through a fake client)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from opsbook.canary import DEFAULT_METRICS, LATENCY, inputs_from_frame
from opsbook.clients.prometheus import Prometheus, duration, to_unix
from opsbook.errors import ClientError, Invalid, TimedOut, Unreachable
from opsbook.ops.deploy_new_model import metrics as cm
from opsbook.ops.deploy_new_model.plots import DISPLAY, plot_analysis, plot_canary, plot_verdict_timeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "metrics"
HEALTHY = EXAMPLES / "proposer-canary-healthy.csv"
REGRESSED = EXAMPLES / "proposer-canary-regressed.csv"


@pytest.fixture(scope="module")
def healthy():
    return cm.judge_metrics(cm.load_metrics(HEALTHY))


@pytest.fixture(scope="module")
def regressed():
    return cm.judge_metrics(cm.load_metrics(REGRESSED))


def _write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# -- recorded files ---------------------------------------------------------------------------------


class TestLoader:
    def test_example_files_follow_the_schema(self):
        for path in (HEALTHY, REGRESSED):
            frame = cm.load_metrics(path)
            assert len(frame) == 120 and frame["interval"].nunique() == 60
            assert set(frame["arm"]) == {"stable", "canary"}
            assert (frame["requests"] == 200).all()
            assert str(frame["start"].dt.tz) == "UTC"

    def test_generator_is_reproducible(self, tmp_path):
        import subprocess
        import sys

        subprocess.run([sys.executable, str(EXAMPLES / "generate.py"), "--out", str(tmp_path)],
                       check=True, capture_output=True, timeout=60)
        for path in (HEALTHY, REGRESSED):
            assert (tmp_path / path.name).read_text() == path.read_text()

    def test_missing_column_is_named(self, tmp_path):
        lines = _lines(HEALTHY)
        header = lines[0].split(",")
        drop = header.index("correct")
        text = "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines)
        with pytest.raises(cm.MetricsFileError, match=r"m\.csv: column 'correct' missing.*accuracy"):
            cm.load_metrics(_write(tmp_path, text))

    def test_bad_number_names_line_and_column(self, tmp_path):
        lines = _lines(HEALTHY)
        cells = lines[5].split(",")
        cells[lines[0].split(",").index("latency_mean")] = "fast"
        lines[5] = ",".join(cells)
        with pytest.raises(cm.MetricsFileError) as excinfo:
            cm.load_metrics(_write(tmp_path, "\n".join(lines)))
        msg = str(excinfo.value)
        assert "m.csv line 6 (interval 3, arm 'stable')" in msg
        assert "column 'latency_mean' is not a number: 'fast'" in msg

    @pytest.mark.parametrize(("column", "value", "expected"), [
        ("errors", "500", r"line 4 .*column 'errors' \(500\) exceeds 'requests' \(200\)"),
        ("requests", "-1", r"line 4 .*column 'requests' must not be negative"),
        ("arm", "canry", r"line 4 .*column 'arm' is 'canry'; expected 'stable' or 'canary'"),
        ("latency_mean", "0", r"column 'latency_mean' must be positive"),
        ("d_std", "-0.5", r"line 4 .*column 'd_std' must not be negative"),
    ])
    def test_bad_values_are_refused_with_their_place(self, tmp_path, column, value, expected):
        lines = _lines(HEALTHY)
        header = lines[0].split(",")
        cells = lines[3].split(",")
        cells[header.index(column)] = value
        lines[3] = ",".join(cells)
        with pytest.raises(cm.MetricsFileError, match=expected):
            cm.load_metrics(_write(tmp_path, "\n".join(lines)))

    def test_duplicate_row_and_other_file_problems(self, tmp_path):
        lines = _lines(HEALTHY)
        with pytest.raises(cm.MetricsFileError, match="line 4 .*a second row for the same interval and arm"):
            cm.load_metrics(_write(tmp_path, "\n".join([*lines[:3], lines[2], *lines[3:]])))
        with pytest.raises(cm.MetricsFileError, match="does not exist"):
            cm.load_metrics(tmp_path / "nope.csv")
        with pytest.raises(cm.MetricsFileError, match="expected .csv or .parquet"):
            cm.load_metrics(_write(tmp_path, "x", "m.json"))
        with pytest.raises(cm.MetricsFileError, match="no rows"):
            cm.load_metrics(_write(tmp_path, lines[0]))
        assert isinstance(cm.MetricsFileError("x"), ValueError)

    @pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # the judge on an arm without data
    def test_empty_cells_stay_missing_never_zero(self, tmp_path):
        lines = _lines(HEALTHY)
        header = lines[0].split(",")
        for row in range(1, len(lines)):
            cells = lines[row].split(",")
            if cells[1] == "canary":
                for c in ("d_count", "d_mean", "d_std"):
                    cells[header.index(c)] = ""
            lines[row] = ",".join(cells)
        frame = cm.load_metrics(_write(tmp_path, "\n".join(lines)))
        assert frame.loc[frame["arm"] == "canary", "d_mean"].isna().all()
        result = cm.judge_metrics(frame)
        assert result.value.verdict.metrics["d"].status == "no_data"
        assert result.value.verdict.decision != "promote"

    def test_parquet_round_trip(self, tmp_path):
        pytest.importorskip("pyarrow")
        frame = cm.load_metrics(REGRESSED)
        path = cm.save_metrics(frame, tmp_path / "m.parquet")
        back = cm.load_metrics(path)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)


# -- the judge over recorded files --------------------------------------------------------------------


class TestJudge:
    def test_healthy_canary_is_not_rolled_back(self, healthy):
        verdict = healthy.value.verdict
        assert verdict.decision != "rollback"
        assert all(v.decision != "rollback" for v in healthy.value.judge.history)
        assert {r["metric"]: r["status"] for r in healthy.rows}["latency"] == "ok"
        assert healthy.details["decision"] == verdict.decision

    def test_regressed_latency_is_rolled_back_early(self, regressed):
        verdict = regressed.value.verdict
        assert verdict.decision == "rollback"
        assert verdict.interval <= 5
        assert verdict.metrics["latency"].status == "regressed"
        row = next(r for r in regressed.rows if r["metric"] == "latency")
        assert row["status"] == "regressed" and row["change"].startswith("+")
        assert regressed.summary.startswith(f"ROLLBACK at interval {verdict.interval}")

    def test_history_has_the_boundaries(self, regressed):
        h = regressed.value.history
        assert len(h) == regressed.value.verdict.interval * len(DEFAULT_METRICS)
        assert {"interval", "metric", "stable", "canary", "rollback_at", "promote_at"} <= set(h.columns)

    def test_judge_refuses_a_bad_frame(self):
        frame = cm.load_metrics(HEALTHY).drop(columns=["errors"])
        with pytest.raises(cm.MetricsFileError, match="'errors'"):
            cm.judge_metrics(frame)

    def test_describe(self):
        result = cm.describe_metrics(cm.load_metrics(HEALTHY), source=HEALTHY.name)
        assert [r["arm"] for r in result.rows] == ["stable", "canary"]
        assert result.rows[0]["requests"] == 12000 and result.rows[0]["with_data"] == 60


# -- plots ----------------------------------------------------------------------------------------------


class TestPlots:
    def test_one_panel_per_metric_with_boundaries(self, regressed, tmp_path):
        fig = plot_analysis(regressed.value)
        axes = fig.get_axes()
        assert len(axes) == len(DEFAULT_METRICS)
        decided = regressed.value.verdict.interval
        for ax, spec in zip(axes, DEFAULT_METRICS, strict=True):
            gids = [line.get_gid() for line in ax.get_lines()]
            assert "rollback-boundary" in gids and "promote-boundary" in gids
            assert "decision-interval" in gids
            rollback = next(line for line in ax.get_lines() if line.get_gid() == "rollback-boundary")
            assert len(rollback.get_xdata()) == decided
            assert ax.get_title(loc="left").startswith(DISPLAY[spec.name][0])
            assert ax.get_ylabel()
        lat = axes[1]
        assert "ms" in lat.get_ylabel()
        assert "regressed" in lat.get_title(loc="left")
        stable_line = next(line for line in lat.get_lines() if line.get_label() == "stable, per interval")
        assert 80 < np.nanmean(stable_line.get_ydata()) < 200  # seconds shown as ms
        fig.savefig(tmp_path / "canary.png")
        assert (tmp_path / "canary.png").stat().st_size > 10_000

    def test_without_history_and_custom_metrics(self):
        frame = cm.load_metrics(HEALTHY)
        fig = plot_canary(frame, None, metrics=[LATENCY])
        assert len(fig.get_axes()) == 1
        assert not any(line.get_gid() == "rollback-boundary" for line in fig.get_axes()[0].get_lines())

    def test_warmup_is_shaded_and_labelled_on_every_panel(self, regressed):
        fig = plot_canary(regressed.value.frame, regressed.value.history, warmup=3)
        for ax in fig.get_axes():
            (span,) = [patch for patch in ax.patches if patch.get_gid() == "warmup"]
            bbox = span.get_bbox()
            assert (bbox.x0, bbox.x1) == (0.5, 3.5)  # intervals 1-3
            assert span.get_label() == "warm-up (not judged)"
        assert "warm-up (not judged)" in [t.get_text() for t in fig.legends[0].get_texts()]
        none = plot_canary(regressed.value.frame, regressed.value.history, warmup=0)
        assert not [patch for ax in none.get_axes() for patch in ax.patches if patch.get_gid() == "warmup"]

    def test_the_analysis_plot_shades_the_judges_warmup(self):
        from opsbook.canary import JudgeConfig

        frame = cm.load_metrics(REGRESSED)
        for warmup in (0, 2):
            result = cm.judge_metrics(frame, config=JudgeConfig(warmup=warmup))
            spans = [patch.get_bbox().x1 for ax in plot_analysis(result.value).get_axes() for patch in ax.patches
                     if patch.get_gid() == "warmup"]
            assert spans == ([warmup + 0.5] * len(DEFAULT_METRICS) if warmup else [])

    def test_verdict_timeline(self, healthy):
        fig = plot_verdict_timeline(healthy.value.history)
        (ax,) = fig.get_axes()
        assert [t.get_text() for t in ax.get_yticklabels()] == [s.name for s in DEFAULT_METRICS]
        assert healthy.value.verdict.decision in ax.get_title(loc="left")


# -- the Prometheus client, through a fake session ----------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, body: object) -> None:
        self.status_code = status
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.reason = "whatever"
        self.url = "http://prom/api"

    def json(self):
        return json.loads(self.text)

    def raise_for_status(self):
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} error", response=self)


class FakeSession:
    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict]] = []

    def request(self, method, url, params=None, timeout=None):
        self.calls.append((method, url, dict(params or {})))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _ok(data):
    return FakeResponse(200, {"status": "success", "data": data})


class TestPrometheusClient:
    def test_vector_rows(self):
        s = FakeSession(_ok({"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "a"}, "value": [100.5, "1"]},
            {"metric": {"job": "b"}, "value": [100.5, "NaN"]}]}))
        rows = Prometheus("http://prom:9090/", timeout=3, session=s).query("up", time=100)
        assert rows[0] == {"__name__": "up", "job": "a", "timestamp": 100.5, "value": 1.0}
        assert math.isnan(rows[1]["value"])
        assert s.calls == [("GET", "http://prom:9090/api/v1/query", {"query": "up", "time": 100.0})]

    def test_matrix_frame(self):
        s = FakeSession(_ok({"resultType": "matrix", "result": [
            {"metric": {"track": "stable"}, "values": [[1, "2"], [2, "3"]]},
            {"metric": {"track": "canary"}, "values": [[2, "+Inf"]]}]}))
        frame = Prometheus("http://prom", session=s).query_range("x", "2024-01-01T00:00:00Z", 1704067260, "1m")
        assert list(frame.columns) == ["track", "timestamp", "value"]
        assert frame["value"].tolist()[:2] == [2.0, 3.0] and math.isinf(frame["value"].iloc[2])
        assert s.calls[0][2] == {"query": "x", "start": 1704067200.0, "end": 1704067260.0, "step": "1m"}

    def test_bad_data_is_invalid_with_prometheus_message(self):
        body = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unclosed left parenthesis"}
        s = FakeSession(FakeResponse(400, body))
        with pytest.raises(Invalid, match="bad_data: 1:5: parse error: unclosed left parenthesis \\(HTTP 400\\)") as e:
            Prometheus("http://prom", session=s).query("rate(")
        assert isinstance(e.value.__cause__, requests.HTTPError)
        assert e.value.error_type == "bad_data" and e.value.status_code == 400

    @pytest.mark.parametrize(("answer", "cls"), [
        (FakeResponse(503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}), Unreachable),
        (FakeResponse(503, {"status": "error", "errorType": "timeout", "error": "query timed out"}), TimedOut),
        (FakeResponse(502, "<html>bad gateway</html>"), Unreachable),
        (FakeResponse(422, {"status": "error", "errorType": "execution", "error": "many-to-many"}), Invalid),
        (requests.ConnectionError("Connection refused"), Unreachable),
        (requests.ConnectTimeout("slow"), TimedOut),
        (requests.ReadTimeout("slow"), TimedOut),
    ])
    def test_error_mapping(self, answer, cls):
        with pytest.raises(cls) as e:
            Prometheus("http://prom", session=FakeSession(answer)).query("up")
        assert isinstance(e.value, ClientError)

    def test_alerts_and_health(self):
        alert = {"labels": {"alertname": "HighErrorRate", "severity": "page"}, "annotations": {"summary": "s"},
                 "state": "firing", "activeAt": "2024-01-01T00:00:00Z", "value": "1e+00"}
        s = FakeSession(_ok({"alerts": [alert]}), FakeResponse(200, "Prometheus is Healthy."),
                        requests.ConnectionError("refused"))
        prom = Prometheus("http://prom", session=s)
        (row,) = prom.alerts()
        assert (row["alertname"], row["state"], row["severity"], row["value"]) == ("HighErrorRate", "firing", "page", 1.0)
        assert prom.healthy() is True
        assert prom.healthy() is False

    def test_helpers(self):
        assert duration(60) == "60s" and duration(1.5) == "1500ms" and duration("5m") == "5m"
        assert to_unix(pd.Timestamp("2024-01-01", tz="UTC")) == 1704067200.0
        with pytest.raises(ValueError):
            Prometheus("localhost:9090")


# -- query assembly, through a fake client ---------------------------------------------------------------


class FakeProm:
    """Answers every range query with one series: ``value(promql, timestamps)``, or none."""

    def __init__(self, value) -> None:
        self.value = value
        self.queries: list[tuple[str, float, float, float]] = []

    def query_range(self, promql, start, end, step):
        self.queries.append((promql, start, end, step))
        ts = np.arange(start, end + step / 2, step)
        v = self.value(promql, ts)
        if v is None:
            return pd.DataFrame(columns=["timestamp", "value"])
        if promql.startswith("sum by (le)"):  # a histogram's buckets: v requests spread over four
            share = {"0.1": 0.25, "0.2": 0.5, "0.4": 0.9, "+Inf": 1.0}
            return pd.DataFrame([{"le": le, "timestamp": t, "value": x * f}
                                 for le, f in share.items() for t, x in zip(ts, v, strict=True)])
        return pd.DataFrame({"timestamp": ts, "value": v})


class TestQueryMetrics:
    def test_templates_render(self):
        q = cm.render_template(cm.DEFAULT_TEMPLATES["errors"], model='pro"poser', track="canary", interval=60)
        assert q == ('(sum(increase(model_requests_total{model="pro\\"poser",track="canary",code=~"5.."}[60s])) '
                     'or 0 * sum(increase(model_requests_total{model="pro\\"poser",track="canary"}[60s])))')
        with pytest.raises(ValueError, match=r"unknown placeholder \{namespace\}"):
            cm.render_template("up{{namespace}}", model="m", track="t", interval=1)
        assert cm.render_template("up{{selector}}", model="m", track="t", interval=1,
                                  selector='app="{model}",ns="{namespace}"',
                                  variables={"namespace": "prod"}) == 'up{app="m",ns="prod"}'

    def test_frame_per_interval_and_arm(self):
        def value(promql, ts):
            canary = 'track="canary"' in promql
            if promql.startswith("(sum(increase(model_requests_total"):  # errors
                return np.full(len(ts), 30.0 if canary else 2.0)
            if promql.startswith("sum(increase(model_requests_total"):  # requests
                return np.full(len(ts), 200.0)
            if "model_dissonance" in promql and canary:
                return None  # the canary exports no d
            if promql.startswith("clamp_min"):
                return np.full(len(ts), -1e-9)
            return np.full(len(ts), 0.25)

        prom = FakeProm(value)
        frame = cm.query_metrics(prom, model="proposer", start=1000, end=1000 + 5 * 60 + 30, interval=60,
                                 templates={"correct": None, "labelled": None})
        assert len(frame) == 10 and frame["interval"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        assert "correct" not in frame.columns
        assert len(prom.queries) == 2 * (len(cm.DEFAULT_TEMPLATES) - 2)
        assert {(q[1], q[2], q[3]) for q in prom.queries} == {(1060.0, 1300.0, 60.0)}
        c = frame[frame["arm"] == "canary"]
        s = frame[frame["arm"] == "stable"]
        assert (c["errors"] == 30).all() and (s["errors"] == 2).all()
        assert c["d_mean"].isna().all() and c["d_count"].isna().all()  # missing, not zero
        assert (s["d_m2"] == 0).all()  # rounding below zero clipped
        assert frame["start"].iloc[0] == pd.Timestamp(1000, unit="s", tz="UTC")
        assert frame["end"].iloc[-1] == pd.Timestamp(1300, unit="s", tz="UTC")

    def test_missing_steps_are_nan_and_errors_clipped(self):
        def value(promql, ts):
            v = np.full(len(ts), 10.0 if "code=~" in promql else 8.0)
            v[1] = np.nan  # Prometheus said NaN (0/0)
            return v

        frame = cm.query_metrics(FakeProm(value), model="m", start=0, end=180, interval=60)
        assert frame.loc[frame["interval"] == 2, "requests"].isna().all()
        assert (frame.loc[frame["interval"] != 2, "errors"] == 8.0).all()  # 10 > 8 requests: clipped

    def test_refuses_bad_window_and_multi_series(self):
        with pytest.raises(ValueError, match="shorter than one interval"):
            cm.query_metrics(FakeProm(lambda q, t: None), model="m", start=0, end=30, interval=60)

        class Two(FakeProm):
            def query_range(self, promql, start, end, step):
                return pd.DataFrame({"pod": ["a", "b"], "timestamp": [start, start], "value": [1.0, 2.0]})

        with pytest.raises(Invalid, match="2 series"):
            cm.query_metrics(Two(None), model="m", start=0, end=60, interval=60)


class BucketProm(FakeProm):
    """As FakeProm, but the histogram's answer is ``buckets``: (le label, timestamp index, value) rows."""

    def __init__(self, value, buckets) -> None:
        super().__init__(value)
        self.buckets = buckets

    def query_range(self, promql, start, end, step):
        if not promql.startswith("sum by (le)"):
            return super().query_range(promql, start, end, step)
        self.queries.append((promql, start, end, step))
        ts = np.arange(start, end + step / 2, step)
        return pd.DataFrame([{"le": le, "timestamp": ts[i], "value": v} for le, i, v in self.buckets])


def _flat(promql, ts):
    if "model_dissonance" in promql or "model_feedback" in promql:
        return np.full(len(ts), 100.0)
    return np.full(len(ts), 0.0 if "code=~" in promql else 150.0 if "quantile" not in promql else 0.2)


class TestBucketColumns:
    def test_prometheus_buckets_become_le_columns_and_the_judges_histograms(self):
        frame = cm.query_metrics(FakeProm(_flat), model="proposer", start=0, end=180, interval=60)
        assert [c for c in frame.columns if "_le_" in c] == [
            "latency_le_0.1", "latency_le_0.2", "latency_le_0.4", "latency_le_+Inf"]
        assert frame["latency_le_0.2"].tolist() == [75.0] * 6 and frame["latency_le_+Inf"].tolist() == [150.0] * 6
        frame = cm.validate_metrics(frame)
        for item in inputs_from_frame(frame, DEFAULT_METRICS):
            for arm in (item.stable, item.canary):  # 150 requests: 25% / 50% / 90% / 100% cumulative
                assert arm["latency"].hist == (37.5, 37.5, 60.0, 15.0)

    def test_le_labels_are_normalised_artefacts_tidied_and_gaps_left_missing(self):
        rows = [("0.5", 0, 40.0), ("1.0", 0, 90.0), ("+Inf", 0, 100.0),  # interval 1
                ("0.5", 1, 50.0), ("1.0", 1, 49.99), ("+Inf", 1, -0.0),  # 2: increase() artefacts
                ("0.5", 2, 10.0), ("+Inf", 2, 12.0)]  # 3: no le="1.0" sample
        frame = cm.query_metrics(BucketProm(_flat, rows), model="m", start=0, end=180, interval=60)
        s = frame[frame["arm"] == "stable"].set_index("interval")
        assert [c for c in frame.columns if "_le_" in c] == ["latency_le_0.5", "latency_le_1", "latency_le_+Inf"]
        assert s.loc[1, ["latency_le_0.5", "latency_le_1", "latency_le_+Inf"]].tolist() == [40.0, 90.0, 100.0]
        assert s.loc[2, ["latency_le_0.5", "latency_le_1", "latency_le_+Inf"]].tolist() == [50.0, 50.0, 50.0]
        assert math.isnan(s.loc[3, "latency_le_1"]) and s.loc[3, "latency_le_+Inf"] == 12.0
        frame = frame.assign(latency_logmean=-1.0, latency_logstd=0.5)  # the moments are not this test's concern
        hists = {item.interval: item.stable["latency"].hist for item in inputs_from_frame(frame, [LATENCY])}
        assert hists == {1: (40.0, 50.0, 10.0), 2: (50.0, 0.0, 0.0), 3: None}

    def test_one_bound_spelt_twice_is_invalid(self):
        rows = [("1", 0, 5.0), ("1.0", 0, 5.0), ("+Inf", 0, 6.0)]
        with pytest.raises(Invalid, match="same bucket bound twice"):
            cm.query_metrics(BucketProm(_flat, rows), model="m", start=0, end=60, interval=60)

    @pytest.mark.parametrize(("bound", "name"), [
        (0.005, "latency_le_0.005"), (0.1, "latency_le_0.1"), (1.0, "latency_le_1"), (2.5, "latency_le_2.5"),
        (1e-05, "latency_le_1e-05"), (0.0125, "latency_le_0.0125"), (float("inf"), "latency_le_+Inf"),
        ("+Inf", "latency_le_+Inf"), ("0.30000000000000004", "latency_le_0.30000000000000004"),
    ])
    def test_column_names_are_the_shortest_text_of_the_bound(self, bound, name):
        assert cm.le_column("latency", bound) == name
        assert float(name.rsplit("_", 1)[1]) == float(bound)


def test_collect_metrics_from_a_file_or_prometheus():
    result = cm.collect_metrics(recorded=REGRESSED)
    assert "recorded file proposer-canary-regressed.csv" in result.summary
    assert len(result.value) == 120 and len(result.rows) == 2

    def value(promql, ts):
        if "model_dissonance" in promql or "model_feedback" in promql:
            return np.full(len(ts), 100.0)
        return np.full(len(ts), 0.0 if "code=~" in promql else 150.0 if "quantile" not in promql else 0.2)

    result = cm.collect_metrics(prom=FakeProm(value), model="proposer", start=0, end=600, interval=60)
    assert len(result.value) == 20 and result.rows[0]["requests"] == 1500
    with pytest.raises(ValueError, match="recorded= .* or prom="):
        cm.collect_metrics()
