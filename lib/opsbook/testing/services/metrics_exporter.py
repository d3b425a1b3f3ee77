"""The ``metrics_exporter`` fixture: ``prometheus_client`` exporters on loopback, each with its own
registry, for the ``prometheus`` fixture to scrape."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .process import (
    LOOPBACK,
    free_port,
)


@dataclass
class MetricsExporter:
    """A ``prometheus_client`` HTTP exporter on loopback serving its own ``registry``."""

    registry: Any
    host: str
    port: int
    _server: Any = field(repr=False, default=None)
    _thread: Any = field(repr=False, default=None)

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_metrics_exporter(registry: Any = None) -> MetricsExporter:
    """Serve ``registry`` (a new ``CollectorRegistry`` if None) on 127.0.0.1:free-port."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    port = free_port()
    started = start_http_server(port, addr=LOOPBACK, registry=registry)
    server, thread = started if isinstance(started, tuple) else (None, None)
    return MetricsExporter(registry, LOOPBACK, port, server, thread)


@pytest.fixture
def metrics_exporter() -> Iterator[Callable[..., MetricsExporter]]:
    """Factory: ``metrics_exporter()`` starts an exporter (own registry); all are stopped after the test."""
    started: list[MetricsExporter] = []

    def make(registry: Any = None) -> MetricsExporter:
        exp = start_metrics_exporter(registry)
        started.append(exp)
        return exp

    try:
        yield make
    finally:
        for exp in started:
            with contextlib.suppress(Exception):
                exp.stop()
