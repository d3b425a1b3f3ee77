"""The ``mlflow_server`` fixture: ``mlflow server`` with its runs in PostgreSQL (the ``postgres``
fixture) and artifacts proxied to ``s3://BUCKET/artifacts`` (the ``s3`` fixture)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsbook.testing.timing import record_startup

from .postgres import PostgresService
from .process import (
    LOOPBACK,
    _Process,
    free_port,
    http_ok,
    venv_bin,
)
from .s3 import S3Service


@dataclass
class MlflowService:
    """``mlflow server`` at ``tracking_uri``; runs in PostgreSQL ``database``, artifacts in ``s3``."""

    tracking_uri: str
    host: str
    port: int
    database: str
    backend_store_uri: str
    artifacts_destination: str
    postgres: PostgresService
    s3: S3Service
    log_path: Path

    def client_env(self) -> dict[str, str]:
        """Environment for an MLflow client process: the tracking URI plus the S3 side.

        The server proxies artifacts (``mlflow-artifacts:``), so a client needs only the tracking URI;
        the S3 variables are for a client that reads or writes the bucket directly.
        """
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, **self.s3.env()}

    def client(self) -> Any:
        """An ``mlflow.MlflowClient`` for this server."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    @contextlib.contextmanager
    def activate(self) -> Iterator[MlflowService]:
        """Point the fluent ``mlflow`` API (and child processes) at this server for a ``with`` block."""
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        env = self.client_env()
        saved = {k: os.environ.get(k) for k in env}
        previous_uri: Any = getattr(tracking_utils, "_tracking_uri", None)  # None: not set explicitly
        os.environ.update(env)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield self
        finally:
            mlflow.set_tracking_uri(previous_uri)  # None unsets it
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _mlflow_argv() -> list[str]:
    cand = venv_bin() / "mlflow"
    if cand.is_file():
        return [str(cand)]
    return [sys.executable, "-m", "mlflow"]


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: PostgresService, s3: S3Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowService]:
    """A real ``mlflow server`` (1 worker) on the ``postgres`` and ``s3`` fixtures, ready on ``/health``."""
    t0 = time.monotonic()
    base = tmp_path_factory.mktemp("mlflow")
    log_path = base / "mlflow.log"
    database = "mlflow"
    postgres.create_database(database)
    port = free_port()
    backend = postgres.sqlalchemy_url(database)
    destination = f"s3://{s3.bucket}/artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(s3.env())
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"})
    argv = [
        *_mlflow_argv(),
        "server",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        destination,
    ]
    proc = _Process("mlflow_server", argv, log_path, env=env, cwd=base, grace=5.0)
    svc = MlflowService(
        f"http://{LOOPBACK}:{port}", LOOPBACK, port, database, backend, destination, postgres, s3, log_path
    )
    try:
        proc.start()
        proc.wait_ready(lambda: http_ok(f"{svc.tracking_uri}/health"), timeout=120)
        record_startup("mlflow_server", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()
