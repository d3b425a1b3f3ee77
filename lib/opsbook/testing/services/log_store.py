"""The ``log_store`` fixture: ``osmem-server`` (PyPI), an in-memory OpenSearch-compatible server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsbook.testing.timing import record_startup

from .process import (
    LOOPBACK,
    _Process,
    free_port,
    http_ok,
)


@dataclass
class LogStoreService:
    """osmem-server (OpenSearch-compatible, in memory) at ``url``."""

    url: str
    host: str
    port: int
    log_path: Path

    def client(self, **kwargs: Any) -> Any:
        """An ``opensearchpy.OpenSearch`` client for this server."""
        from opensearchpy import OpenSearch

        kwargs.setdefault("timeout", 30)
        return OpenSearch(hosts=[self.url], **kwargs)


@pytest.fixture(scope="session")
def log_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogStoreService]:
    """``osmem-server`` on loopback (``-addr 127.0.0.1:P -no-stdin-watch``)."""
    t0 = time.monotonic()
    try:
        import osmem_server

        binary = str(osmem_server.resolve_binary())
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"service 'log_store' could not start: osmem-server not available ({exc!r}); "
            "pip install osmem-server (`make setup` does)",
            pytrace=False,
        )
    base = tmp_path_factory.mktemp("log_store")
    port = free_port()
    svc = LogStoreService(f"http://{LOOPBACK}:{port}", LOOPBACK, port, base / "osmem.log")
    argv = [binary, "-addr", f"{LOOPBACK}:{port}", "-no-stdin-watch", "-parent-pid", str(os.getpid())]
    proc = _Process("log_store", argv, svc.log_path, cwd=base, grace=2.0)
    try:
        proc.start()
        proc.wait_ready(lambda: http_ok(svc.url), timeout=30)
        record_startup("log_store", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()
