"""The ``prometheus`` fixture: Debian's Prometheus on loopback, scraping every second, its targets
added at run time. Queries go through opsbook's own client (:mod:`opsbook.clients.prometheus`)."""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsbook.clients.prometheus import Prometheus
from opsbook.clients.retry import wait_until
from opsbook.errors import ClientError, TimedOut
from opsbook.testing.timing import record_startup

from .process import (
    LOOPBACK,
    _Process,
    free_port,
    http_ok,
)


class PromQLError(RuntimeError):
    """The Prometheus HTTP API answered ``status: error`` (e.g. ``bad_data`` for a PromQL syntax error)."""

    def __init__(self, error_type: str, error: str, status_code: int) -> None:
        super().__init__(f"{error_type}: {error} (HTTP {status_code})")
        self.error_type, self.error, self.status_code = error_type, error, status_code

    @classmethod
    def of(cls, exc: ClientError) -> PromQLError:
        """The API error the client raised, with Prometheus's own message (the client chains the HTTP
        error of the answer, whose body carries it)."""
        answer = getattr(exc.__cause__, "response", None)
        try:
            error = answer.json()["error"] if answer is not None else str(exc)
        except (ValueError, KeyError, TypeError):  # no JSON error body: keep the client's message
            error = str(exc)
        return cls(getattr(exc, "error_type", None) or "unknown", error, getattr(exc, "status_code", 0))


@dataclass
class PrometheusService:
    """Prometheus at ``url`` scraping every second; add exporters with :meth:`add_target`."""

    url: str
    host: str
    port: int
    config_path: Path
    data_dir: Path
    log_path: Path
    scrape_interval: str = "1s"
    targets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def _config(self) -> dict[str, Any]:
        jobs: dict[str, list[dict[str, Any]]] = {"prometheus": [{"targets": [f"{self.host}:{self.port}"]}]}
        jobs.update(self.targets)
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [{"job_name": job, "static_configs": groups} for job, groups in jobs.items()],
        }

    def write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        tmp.replace(self.config_path)

    def reload(self) -> None:
        """Ask Prometheus to re-read its config (``POST /-/reload``, lifecycle API)."""
        import requests

        resp = requests.post(f"{self.url}/-/reload", timeout=10)
        if resp.status_code != 200:
            raise RuntimeError(f"prometheus reload failed: HTTP {resp.status_code}: {resp.text.strip()}")

    def add_target(
        self,
        host_port: str,
        job: str = "exporter",
        labels: dict[str, str] | None = None,
        *,
        wait: bool = True,
        timeout: float = 15.0,
    ) -> None:
        """Scrape ``host_port`` (``"127.0.0.1:PORT"``) as ``job``; with ``wait``, until its first scrape is up.

        Rewrites the config and reloads it (``POST /-/reload``). A new target takes ~5-6 s to be scraped:
        Prometheus's discovery manager hands target changes to the scrape manager every 5 s (hard-coded).
        """
        if job == "prometheus":
            raise ValueError("job name 'prometheus' is taken by Prometheus itself")
        group: dict[str, Any] = {"targets": [host_port]}
        if labels:
            group["labels"] = dict(labels)
        self.targets.setdefault(job, []).append(group)
        self.write_config()
        self.reload()
        if wait:
            self.wait_for_series(f'up{{job="{job}",instance="{host_port}"}} == 1', timeout=timeout)

    def remove_target(self, host_port: str, job: str = "exporter") -> None:
        groups = [g for g in self.targets.get(job, []) if host_port not in g["targets"]]
        if groups:
            self.targets[job] = groups
        else:
            self.targets.pop(job, None)
        self.write_config()
        self.reload()

    @functools.cached_property
    def client(self) -> Prometheus:
        """opsbook's Prometheus client for this server, the one the runbooks use."""
        return Prometheus(self.url, timeout=15)

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query: one ``{"metric": labels, "value": [timestamp, value]}`` per sample, the shape of
        the API's vectors (a scalar has no labels); raises :class:`PromQLError` on API errors."""
        try:
            rows = self.client.query(promql, time)
        except ClientError as exc:
            if getattr(exc, "status_code", None) is None:
                raise  # no answer from the API (unreachable, timed out): not a PromQL error
            raise PromQLError.of(exc) from exc
        return [{"metric": {k: v for k, v in row.items() if k not in ("timestamp", "value")},
                 "value": [row["timestamp"], row["value"]]} for row in rows]

    def query_value(self, promql: str) -> float:
        """The value of a query that has exactly one series (or a scalar)."""
        result = self.query(promql)
        if len(result) != 1:
            raise AssertionError(f"expected one series for {promql!r}, got {len(result)}: {result}")
        return float(result[0]["value"][1])

    def wait_for_series(
        self, promql: str, timeout: float = 30.0, interval: float = 0.25
    ) -> list[dict[str, Any]]:
        """Poll :meth:`query` until the result is non-empty; :class:`TimeoutError` after ``timeout`` s."""
        try:
            return wait_until(lambda: self.query(promql), timeout=timeout, interval=interval,
                              what=f"no series for {promql!r}")
        except TimedOut:
            raise TimeoutError(f"no series for {promql!r} after {timeout} s (targets: {self.targets})") from None


def _prometheus_binary() -> Path | None:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None
    )
    return Path(found) if found else None


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusService]:
    """Debian's Prometheus on loopback, 1 s scrape/evaluation interval, lifecycle API on."""
    t0 = time.monotonic()
    binary = _prometheus_binary()
    if binary is None:
        pytest.fail(
            "service 'prometheus' could not start: no `prometheus` binary "
            "(run `make setup`, which apt-installs `prometheus`)",
            pytrace=False,
        )
    base = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    svc = PrometheusService(
        f"http://{LOOPBACK}:{port}",
        LOOPBACK,
        port,
        base / "prometheus.yml",
        base / "data",
        base / "prometheus.log",
    )
    svc.write_config()
    argv = [
        str(binary),
        f"--config.file={svc.config_path}",
        f"--storage.tsdb.path={svc.data_dir}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1h",
        "--log.level=info",
    ]
    proc = _Process("prometheus", argv, svc.log_path, cwd=base, grace=5.0)
    try:
        proc.start()
        proc.wait_ready(lambda: http_ok(f"{svc.url}/-/ready"), timeout=30)
        record_startup("prometheus", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()

