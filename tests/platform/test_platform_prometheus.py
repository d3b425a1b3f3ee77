"""The ``prometheus`` fixture is a real Prometheus: it scrapes exporters and evaluates PromQL."""

from __future__ import annotations

import threading
import time

import pytest
from opsbook.testing.services import PromQLError
from prometheus_client import Counter

pytestmark = pytest.mark.services

RATE = 40.0  # events per second


def test_rate_of_a_scraped_counter(prometheus, metrics_exporter):
    exporter = metrics_exporter()
    counter = Counter(
        "opsbook_test_events", "events counted by the platform test", registry=exporter.registry
    )
    stop = threading.Event()
    t0 = time.monotonic()

    def tick() -> None:  # keep the counter at RATE * elapsed, whatever the sleep jitter
        done = 0
        while not stop.is_set():
            due = int(RATE * (time.monotonic() - t0))
            if due > done:
                counter.inc(due - done)
                done = due
            time.sleep(0.005)

    worker = threading.Thread(target=tick, daemon=True)
    worker.start()
    try:
        prometheus.add_target(exporter.host_port, job="rate-test")  # waits for the first good scrape
        # rate() extrapolates to the window's edges only where the series already existed: wait until
        # the series is older than the window (5 scrapes in the last 5 s) and take the rate over 3 s.
        prometheus.wait_for_series(
            'count_over_time(opsbook_test_events_total{job="rate-test"}[5s]) >= 5', timeout=30
        )
        value = prometheus.query_value('rate(opsbook_test_events_total{job="rate-test"}[3s])')
    finally:
        stop.set()
        worker.join()
        prometheus.remove_target(exporter.host_port, job="rate-test")
    assert value == pytest.approx(RATE, rel=0.1)


def test_prometheus_scrapes_itself(prometheus):
    result = prometheus.wait_for_series('up{job="prometheus"} == 1', timeout=20)
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{prometheus.port}"


def test_promql_syntax_error_is_the_apis_error(prometheus):
    with pytest.raises(PromQLError) as excinfo:
        prometheus.query("rate(opsbook_test_events_total[5m]")
    assert excinfo.value.error_type == "bad_data"
    assert excinfo.value.status_code == 400
    assert "parse error" in excinfo.value.error


def test_unknown_metric_gives_an_empty_result(prometheus):
    assert prometheus.query("opsbook_metric_that_does_not_exist") == []
    with pytest.raises(TimeoutError):
        prometheus.wait_for_series("opsbook_metric_that_does_not_exist", timeout=1)
