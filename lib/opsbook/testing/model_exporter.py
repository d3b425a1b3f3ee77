"""A synthetic model server for tests: it records requests for both tracks (``stable``/``canary``) of one
model at a fixed rate per second, from a background thread, in a ``prometheus_client`` registry that an
exporter serves (``metrics_exporter`` fixture) and Prometheus scrapes (``prometheus`` fixture).

It exports what :mod:`opsbook.ops.deploy_new_model.metrics` reads, labels ``model`` and ``track`` on every series:

=========================================== ========= ==============================================
series                                      type      what is recorded per request
=========================================== ========= ==============================================
``model_requests_total{code}``              counter   one request, ``code="500"`` for an error (with
                                                      probability ``error_rate``), else ``"200"``
``model_request_duration_seconds``          histogram its latency: lognormal, median ``latency_median``
                                                      seconds, sigma 0.5 (``buckets``, default x1.25
                                                      from 10 ms, 25 buckets)
``model_feedback_total{outcome}``           counter   its labelled feedback: ``outcome="correct"``
                                                      (probability ``accuracy``) or ``"wrong"``
``model_dissonance``                        summary   its ``d``: gamma(shape 2, scale ``d_scale``)
``model_dissonance_squares_total``          counter   ``d**2``
=========================================== ========= ==============================================

Every request gets feedback (``labelled`` equals ``requests``). Usage::

    exporter = metrics_exporter()
    worse = TrackParams(error_rate=0.10, latency_median=0.150, accuracy=0.80, d_scale=0.12)
    with ModelServer(exporter.registry, rate=80, tracks={"stable": HEALTHY, "canary": worse}):
        prometheus.add_target(exporter.host_port, job="canary-test")
        ...
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["TrackParams", "HEALTHY", "DEFAULT_BUCKETS", "ModelServer"]


class TrackParams(NamedTuple):
    """One track's behaviour: error rate, latency median (s), accuracy, scale of ``d`` (gamma, shape 2)."""

    error_rate: float
    latency_median: float
    accuracy: float
    d_scale: float


HEALTHY = TrackParams(error_rate=0.01, latency_median=0.100, accuracy=0.90, d_scale=0.10)
DEFAULT_BUCKETS: tuple[float, ...] = tuple(round(0.01 * 1.25**k, 5) for k in range(25))  # 10 ms .. ~2.6 s
LATENCY_SIGMA = 0.5


class ModelServer:
    """Records synthetic requests of ``model`` for every track in ``tracks`` at ``rate`` per second and
    track, from a background thread while inside ``with`` (or between :meth:`start` and :meth:`stop`)."""

    def __init__(
        self,
        registry: Any,
        *,
        model: str = "proposer",
        rate: float = 80.0,
        tracks: Mapping[str, TrackParams | tuple[float, float, float, float]] | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        seed: int = 11,
    ) -> None:
        from prometheus_client import Counter, Histogram, Summary

        self.model, self.rate = model, float(rate)
        self.tracks = {t: TrackParams(*p) for t, p in (tracks or {"stable": HEALTHY, "canary": HEALTHY}).items()}
        labels = ["model", "track"]
        self.requests = Counter("model_requests", "requests served", [*labels, "code"], registry=registry)
        self.latency = Histogram("model_request_duration_seconds", "request latency", labels,
                                 buckets=tuple(buckets), registry=registry)
        self.feedback = Counter("model_feedback", "labelled feedback", [*labels, "outcome"], registry=registry)
        self.d = Summary("model_dissonance", "dissonance d per prediction", labels, registry=registry)
        self.d_sq = Counter("model_dissonance_squares", "running sum of d squared", labels, registry=registry)
        self.rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opsbook-model-server", daemon=True)

    def serve(self, track: str, n: int) -> None:
        """Record ``n`` requests of ``track`` now."""
        p = self.tracks[track]
        rng = self.rng
        errors = rng.random(n) < p.error_rate
        latencies = rng.lognormal(math.log(p.latency_median), LATENCY_SIGMA, n)
        correct = rng.random(n) < p.accuracy
        ds = rng.gamma(2.0, p.d_scale, n)
        for err, lat, ok, d in zip(errors, latencies, correct, ds, strict=True):
            self.requests.labels(self.model, track, "500" if err else "200").inc()
            self.latency.labels(self.model, track).observe(float(lat))
            self.feedback.labels(self.model, track, "correct" if ok else "wrong").inc()
            self.d.labels(self.model, track).observe(float(d))
            self.d_sq.labels(self.model, track).inc(float(d) ** 2)

    def _run(self) -> None:
        t0, done = time.monotonic(), 0
        while not self._stop.is_set():
            due = int(self.rate * (time.monotonic() - t0))
            if due > done:
                for track in self.tracks:
                    self.serve(track, due - done)
                done = due
            time.sleep(0.01)

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
