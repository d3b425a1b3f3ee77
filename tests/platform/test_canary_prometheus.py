"""The canary metric queries against the real ``prometheus`` fixture.

One exporter plays both arms of ``proposer`` (``track`` label ``stable`` / ``canary``): it serves
requests at a known rate and records them in the metric names ``opsbook.ops.deploy_new_model.metrics``
documents. The canary is worse: 10% errors instead of 1%, latency x1.5, accuracy 80% instead of 90%,
``d`` x1.2. Prometheus scrapes it every second; ``query_metrics`` must give the judge's frame with
those differences, and the judge must roll back.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from opsbook.canary import JudgeConfig
from opsbook.clients.prometheus import Prometheus
from opsbook.errors import Invalid, Unreachable
from opsbook.ops.deploy_new_model.metrics import judge_metrics, query_metrics
from opsbook.testing.model_exporter import ModelServer, TrackParams
from opsbook.testing.services import free_port

pytestmark = pytest.mark.services

RATE = 80.0  # requests per second per arm
INTERVAL = 3.0  # seconds per analysis interval (3 scrapes)
N_INTERVALS = 4
ARMS = {  # track -> (error rate, latency median s, accuracy, d scale)
    "stable": TrackParams(0.01, 0.100, 0.90, 0.10),
    "canary": TrackParams(0.10, 0.150, 0.80, 0.12),
}
# latency buckets: the helper's default, x1.25 from 10 ms (25 buckets, up to ~2.6 s)


def test_query_metrics_sees_the_worse_canary_and_the_judge_rolls_back(prometheus, metrics_exporter):
    exporter = metrics_exporter()
    prom = Prometheus(prometheus.url, timeout=10)
    try:
        with ModelServer(exporter.registry, model="proposer", rate=RATE, tracks=ARMS, seed=11):
            prometheus.add_target(exporter.host_port, job="canary-test")  # waits for the first scrape
            # the series must be older than one interval before the window starts (rate() extrapolation)
            prometheus.wait_for_series(
                f'count_over_time(model_requests_total{{job="canary-test"}}[{INTERVAL:g}s]) >= {INTERVAL:g}',
                timeout=30)
            start = time.time()
            end = start + N_INTERVALS * INTERVAL
            time.sleep(end - time.time() + 1.5)  # the last interval's final scrape is in
        frame = query_metrics(prom, model="proposer", start=start, end=end, interval=INTERVAL)
    finally:
        prometheus.remove_target(exporter.host_port, job="canary-test")

    assert len(frame) == 2 * N_INTERVALS
    assert list(frame["interval"].unique()) == list(range(1, N_INTERVALS + 1))
    s = frame[frame["arm"] == "stable"].set_index("interval")
    c = frame[frame["arm"] == "canary"].set_index("interval")
    expected = RATE * INTERVAL
    for arm in (s, c):
        assert arm["requests"].between(0.7 * expected, 1.3 * expected).all(), arm["requests"].tolist()
        assert arm["labelled"].between(0.7 * expected, 1.3 * expected).all()
        assert (arm["d_count"] > 0).all() and (arm["d_m2"] > 0).all()
        assert not arm[["errors", "correct", "latency_mean", "latency_p50", "latency_p90", "d_mean"]].isna().any().any()

    def total(arm, k, n):
        return arm[k].sum() / arm[n].sum()

    assert total(c, "errors", "requests") > 3 * total(s, "errors", "requests")
    assert total(s, "correct", "labelled") == pytest.approx(0.90, abs=0.05)
    assert total(c, "correct", "labelled") == pytest.approx(0.80, abs=0.05)
    assert (c["latency_mean"].mean() / s["latency_mean"].mean()) == pytest.approx(1.5, rel=0.15)
    assert (c["latency_p50"] > s["latency_p50"]).all()
    # the log-scale moments from the x1.25 buckets: ln 1.5 apart, sigma 0.5 (the exporter's truth)
    log_ratio = c["latency_logmean"] - s["latency_logmean"]
    assert log_ratio.mean() == pytest.approx(math.log(1.5), abs=0.08), log_ratio.tolist()
    for arm in (s, c):
        assert arm["latency_logstd"].mean() == pytest.approx(0.5, abs=0.06), arm["latency_logstd"].tolist()
        assert np.exp(arm["latency_logmean"]).between(0.7 * arm["latency_p50"], 1.3 * arm["latency_p50"]).all()
    assert (c["latency_p90"] > s["latency_p90"]).all()
    assert c["d_mean"].mean() / s["d_mean"].mean() == pytest.approx(1.2, rel=0.12)
    d_std = np.sqrt(s["d_m2"] / (s["d_count"] - 1))  # gamma(2, 0.1): sd 0.141
    assert d_std.mean() == pytest.approx(0.1414, rel=0.25)

    result = judge_metrics(frame, config=JudgeConfig(window=N_INTERVALS, min_samples=50))
    verdict = result.value.verdict
    assert verdict.decision == "rollback", result.summary
    assert verdict.metrics["latency"].status == "regressed"
    assert {r["metric"] for r in result.rows} == {"accuracy", "latency", "error_rate", "d"}


def test_promql_syntax_error_is_invalid_with_prometheus_message(prometheus):
    prom = Prometheus(prometheus.url, timeout=10)
    with pytest.raises(Invalid) as excinfo:
        prom.query("rate(model_requests_total[5m]")
    err = excinfo.value
    assert err.error_type == "bad_data" and err.status_code == 400
    assert "parse error" in str(err)  # Prometheus's own words
    assert err.__cause__ is not None  # the HTTPError of the answer
    assert prom.healthy()


def test_query_and_alerts_shapes(prometheus):
    prom = Prometheus(prometheus.url, timeout=10)
    rows = prom.query('up{job="prometheus"}')
    assert rows and rows[0]["job"] == "prometheus" and rows[0]["value"] == 1.0
    assert prom.query("1 + 1") == [{"timestamp": pytest.approx(time.time(), abs=60), "value": 2.0}]
    now = time.time()
    frame = prom.query_range('up{job="prometheus"}', now - 5, now, 1)
    assert {"job", "instance", "timestamp", "value"} <= set(frame.columns)
    assert prom.alerts() == []  # no rules configured


def test_closed_port_is_unreachable():
    prom = Prometheus(f"http://127.0.0.1:{free_port()}", timeout=5)
    assert prom.healthy() is False
    with pytest.raises(Unreachable, match="connection refused") as excinfo:
        prom.query("up")
    assert excinfo.value.__cause__ is not None
