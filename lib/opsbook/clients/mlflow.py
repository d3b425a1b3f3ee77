"""The MLflow client: a tracking/registry server reached through its URL, and the embedded local server.

    ml = Mlflow("http://127.0.0.1:5000")
    ml.health()                                         # GET /health, fast failure (no retry storm)
    exp_id = ml.create_experiment("probe-1", tags={...})
    run_id = ml.log_run(exp_id, params={...}, metrics={...}, history={"loss": [0.9, 0.5, 0.3]})
    model = ml.log_probe_model(run_id)                  # a tiny mlflow.pyfunc model (no sklearn)
    version = ml.register(model.model_uri, "opsbook-verification", alias="verified")
    ml.load_and_predict(f"models:/opsbook-verification@verified", [1.0, 2.0])

    server = LocalServer(state_dir=Path(".opsbook/mlflow"), port=5055)
    server.ensure()                                     # start, or reuse the one answering on the port
    server.stop()                                       # by the pid file (its process group)

Errors are ours, with the original chained::

    ClientError
    ├── NotFound        the experiment, run, model or version does not exist (RESOURCE_DOES_NOT_EXIST)
    ├── Conflict        the name is taken (RESOURCE_ALREADY_EXISTS)
    ├── Forbidden       401 / 403 (an authenticating proxy, MLflow basic auth)
    ├── Invalid         the server refused the request (INVALID_PARAMETER_VALUE, 400)
    ├── Unreachable     connection refused, DNS, or /health not answering 200 (503 from a dying pod...)
    ├── TimedOut        no answer in time; the embedded server did not come up in time
    └── CommandFailed   the embedded ``mlflow server`` exited at start (the tail of its log attached)

MLflow's own HTTP layer retries a dead server with exponential backoff for minutes; every call made
through :class:`Mlflow` runs with ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``..._TIMEOUT`` bounded, and
:meth:`Mlflow.health` is a plain HTTP GET, so a server that is down is reported in seconds.
``mlflow`` itself is imported only inside the methods that need it (``import mlflow`` takes ~2 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import (
    ClientError,
    CommandFailed,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TimedOut,
    Unreachable,
)

__all__ = ["Mlflow", "LoggedModel", "ModelVersion", "LocalServer", "ServerStatus", "ProbeModel", "run_url",
           "DEFAULT_LOCAL_PORT", "ENV_STATE_DIR"]

DEFAULT_LOCAL_PORT = 5055
ENV_STATE_DIR = "OPSBOOK_MLFLOW_STATE"  # overrides the embedded server's state folder (.opsbook/mlflow)


def state_dir(project_dir: Path) -> Path:
    """The embedded server's state folder: ``$OPSBOOK_MLFLOW_STATE``, else ``.opsbook/mlflow`` in the project."""
    return Path(os.environ.get(ENV_STATE_DIR) or Path(project_dir) / ".opsbook" / "mlflow")


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class LoggedModel:
    model_id: str  # m-...
    model_uri: str  # models:/m-...
    artifact_location: str  # mlflow-artifacts:/<exp>/models/m-.../artifacts, or s3://..., or a path
    run_id: str
    experiment_id: str


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str
    run_id: str
    status: str
    aliases: tuple[str, ...] = ()
    model_id: str | None = None


class ProbeModel:
    """The smallest useful pyfunc model: adds one to every input. Subclassed from PythonModel lazily."""

    @staticmethod
    def build() -> Any:
        import mlflow.pyfunc

        class AddOne(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
            # type hints (strings here, resolved by MLflow) give the model its signature
            def predict(self, model_input: list[float], params: dict | None = None) -> list[float]:
                return [float(x) + 1.0 for x in model_input]

        return AddOne()


def _error_from_mlflow(exc: Exception, what: str) -> ClientError:
    """Map an MlflowException / requests error to ours (the caller chains ``exc``)."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return TimedOut(f"{what}: no answer in time ({exc})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unreachable(f"{what}: cannot connect ({_short(exc)})")
    code = getattr(exc, "error_code", "") or ""
    message = getattr(exc, "message", None) or str(exc)
    text = f"{what}: {code + ': ' if code else ''}{_short(message)}"
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return NotFound(text)
    if code in ("RESOURCE_ALREADY_EXISTS",):
        return Conflict(text)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return Forbidden(text)
    if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"):
        return Invalid(text)
    lowered = message.lower()
    if "max retries exceeded" in lowered or "connection refused" in lowered or "failed to establish" in lowered:
        return Unreachable(text)
    if "timed out" in lowered or "read timeout" in lowered:
        return TimedOut(text)
    return ClientError(text)


def _short(exc: Any, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Mlflow:
    """One MLflow tracking server (with its model registry), reached at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, *, timeout: float = 30.0, max_retries: int = 1,
                 session: Any = None):
        parsed = urlparse(tracking_uri)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Invalid(f"tracking URI {tracking_uri!r}: expected http(s)://HOST[:PORT]")
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self._session = session  # a requests.Session (tests may pass one); created on first use
        self._client: Any = None

    # -- plumbing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _bounded(self) -> Iterator[None]:
        """MLflow's HTTP settings for the duration of a call, and the fluent API pointed here."""
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
               "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, self.timeout))),
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # the runbook shows the run URL itself
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        saved = {k: os.environ.get(k) for k in env}
        previous_uri = getattr(tracking_utils, "_tracking_uri", None)
        os.environ.update(env)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous_uri)  # type: ignore[arg-type]  # None unsets it
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def client(self) -> Any:
        """The underlying ``mlflow.MlflowClient`` (call it inside :meth:`_bounded` for bounded retries)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import requests
        from mlflow.exceptions import MlflowException

        with self._bounded():
            try:
                return fn(*args, **kwargs)
            except (MlflowException, requests.exceptions.RequestException) as exc:
                raise _error_from_mlflow(exc, what) from exc

    # -- server ----------------------------------------------------------------------------------
    def _get(self, path: str, timeout: float | None = None) -> Any:
        import requests

        session = self._session or requests
        url = self.tracking_uri + path
        try:
            return session.get(url, timeout=timeout or min(self.timeout, 10.0))
        except requests.exceptions.Timeout as exc:
            raise TimedOut(f"MLflow at {self.tracking_uri}: GET {path} got no answer in "
                           f"{timeout or min(self.timeout, 10.0):g} s") from exc
        except requests.exceptions.RequestException as exc:
            raise Unreachable(f"MLflow at {self.tracking_uri} is not reachable: {_short(exc, 200)}") from exc

    def health(self) -> dict[str, Any]:
        """``GET /health``: {status, body, seconds}. Unreachable unless it answers 200."""
        t0 = time.monotonic()
        resp = self._get("/health")
        seconds = round(time.monotonic() - t0, 3)
        body = resp.text.strip()[:200]
        if resp.status_code != 200:
            raise Unreachable(f"MLflow at {self.tracking_uri} is not healthy: GET /health answered HTTP "
                              f"{resp.status_code}" + (f" ({body})" if body else ""))
        return {"status": resp.status_code, "body": body, "seconds": seconds}

    def server_version(self) -> str | None:
        """The server's MLflow version (``GET /version``), or None if it does not say."""
        with contextlib.suppress(ClientError):
            resp = self._get("/version")
            if resp.status_code == 200:
                return resp.text.strip()[:40] or None
        return None

    # -- tracking --------------------------------------------------------------------------------
    def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> str:
        return str(self._call(f"create experiment {name!r}", self.client.create_experiment, name,
                              tags=dict(tags or {})))

    def get_experiment(self, experiment_id: str) -> Any:
        return self._call(f"get experiment {experiment_id}", self.client.get_experiment, experiment_id)

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self._call(f"tag experiment {experiment_id}", self.client.set_experiment_tag, experiment_id, k, v)

    def delete_experiment(self, experiment_id: str) -> None:
        """Soft delete (lifecycle ``deleted``; ``mlflow gc`` purges it)."""
        self._call(f"delete experiment {experiment_id}", self.client.delete_experiment, experiment_id)

    def log_run(self, experiment_id: str, *, run_name: str | None = None, params: Mapping[str, Any] | None = None,
                metrics: Mapping[str, float] | None = None, history: Mapping[str, Sequence[float]] | None = None,
                tags: Mapping[str, str] | None = None) -> str:
        """Create a run, log params, metrics (step 0) and metric histories (one value per step) in one
        batch, and finish it. Returns the run id."""
        from mlflow.entities import Metric, Param, RunTag

        run = self._call("create run", self.client.create_run, experiment_id, run_name=run_name,
                         tags=dict(tags or {}))
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        for key, values in (history or {}).items():
            ms += [Metric(key, float(v), now + i, i) for i, v in enumerate(values)]
        ps = [Param(k, str(v)) for k, v in (params or {}).items()]
        self._call(f"log batch to run {run_id}", self.client.log_batch, run_id, metrics=ms, params=ps,
                   tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
        self._call(f"finish run {run_id}", self.client.set_terminated, run_id, "FINISHED")
        return run_id

    def get_run(self, run_id: str) -> Any:
        return self._call(f"get run {run_id}", self.client.get_run, run_id)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        hist = self._call(f"metric history {key} of run {run_id}", self.client.get_metric_history, run_id, key)
        return sorted((m.step, m.value) for m in hist)

    def log_probe_model(self, run_id: str, *, name: str = "model", python_model: Any = None,
                        input_example: Any = None) -> LoggedModel:
        """Log a pyfunc model to an existing (finished or not) run. The first ``log_model`` after a
        server start takes ~8 s client-side; later ones ~1 s."""
        import mlflow
        import mlflow.pyfunc

        model = python_model if python_model is not None else ProbeModel.build()
        example = input_example if input_example is not None else [1.0, 2.0]

        def log() -> LoggedModel:
            with mlflow.start_run(run_id=run_id) as active:
                info = mlflow.pyfunc.log_model(name=name, python_model=model, input_example=example,
                                               pip_requirements=[])
                exp_id = active.info.experiment_id
            logged = self.client.get_logged_model(info.model_id)
            return LoggedModel(model_id=info.model_id, model_uri=info.model_uri,
                               artifact_location=str(logged.artifact_location), run_id=run_id,
                               experiment_id=str(exp_id))

        with warnings_quiet():
            return self._call(f"log a model to run {run_id}", log)

    def register(self, model_uri: str, name: str, *, alias: str | None = None,
                 tags: Mapping[str, str] | None = None, wait: float = 60.0) -> ModelVersion:
        """Register ``model_uri`` as a new version of ``name`` (created if missing), wait until it is
        READY, and point ``alias`` at it."""
        def create() -> Any:
            with contextlib.suppress(Exception):
                self.client.create_registered_model(name)
            logged_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
            run_id = None
            if logged_id:  # MLflow 3: a version's source is the logged model; name it by model_id too
                run_id = self.client.get_logged_model(logged_id).source_run_id
            return self.client.create_model_version(name, model_uri, run_id=run_id, tags=dict(tags or {}),
                                                     model_id=logged_id)

        mv = self._call(f"register {model_uri} as {name!r}", create)
        if mv.status == "PENDING_REGISTRATION":
            version = mv.version

            def settled() -> Any:
                now = self._call(f"read {name} v{version}", self.client.get_model_version, name, version)
                return now if now.status != "PENDING_REGISTRATION" else Pending(now.status)

            mv = wait_until(settled, timeout=wait, interval=0.2, what=f"model version {name} v{version} not READY")
        if mv.status != "READY":
            raise TimedOut(f"model version {name} v{mv.version} is {mv.status}, not READY, after {wait:g} s")
        if alias:
            self._call(f"set alias {alias} on {name} v{mv.version}", self.client.set_registered_model_alias,
                       name, alias, mv.version)
        return self.get_version(name, str(mv.version))

    def get_version(self, name: str, version: str) -> ModelVersion:
        mv = self._call(f"read {name} v{version}", self.client.get_model_version, name, version)
        return _version(mv)

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        mv = self._call(f"read {name}@{alias}", self.client.get_model_version_by_alias, name, alias)
        return _version(mv)

    def delete_version(self, name: str, version: str, *, drop_empty_model: bool = True) -> None:
        self._call(f"delete {name} v{version}", self.client.delete_model_version, name, version)
        if drop_empty_model:
            left = self._call(f"list versions of {name}", self.client.search_model_versions, f"name='{name}'")
            if not left:
                self._call(f"delete registered model {name}", self.client.delete_registered_model, name)

    def load_and_predict(self, model_uri: str, values: Sequence[float]) -> list[float]:
        """Load a model through the server (``models:/NAME@ALIAS``, ``models:/m-...``) and predict."""
        import mlflow.pyfunc

        def go() -> list[float]:
            model = mlflow.pyfunc.load_model(model_uri)
            out = model.predict([float(v) for v in values])
            col = out.iloc[:, 0] if hasattr(out, "columns") else out
            return [float(v) for v in list(col)]

        with warnings_quiet():
            return self._call(f"load {model_uri}", go)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return run_url(self.tracking_uri, experiment_id, run_id)


def _version(mv: Any) -> ModelVersion:
    return ModelVersion(name=mv.name, version=str(mv.version), source=str(mv.source), run_id=str(mv.run_id or ""),
                        status=str(mv.status), aliases=tuple(getattr(mv, "aliases", None) or ()),
                        model_id=getattr(mv, "model_id", None))


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """MLflow warns about pip requirements and type hints of the probe model: not the operator's concern."""
    import logging
    import warnings

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------ embedded server


@dataclass
class ServerStatus:
    """What :meth:`LocalServer.ensure` found or did."""

    url: str
    pid: int | None
    reused: bool
    started_seconds: float
    state_dir: str
    backend_store_uri: str
    artifacts_destination: str
    log_file: str
    pid_file: str
    stop_command: str
    details: dict[str, Any] = field(default_factory=dict)


def _answers(url: str, timeout: float = 1.0) -> bool:
    import requests

    try:
        with requests.get(url + "/health", timeout=timeout) as resp:
            return resp.status_code == 200
    except (requests.RequestException, OSError, ValueError):
        return False


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalServer:
    """An ``mlflow server`` on loopback with a SQLite database and an artifact folder under
    ``state_dir``: the ``local`` target's tracking server. It runs in its own session (so it outlives
    the notebook's kernel, and its whole process group can be stopped by the pid in ``server.pid``)."""

    def __init__(self, state_dir: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int = DEFAULT_LOCAL_PORT, mlflow_argv: list[str] | None = None):
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.host = host
        self.port = int(port)
        self.mlflow_argv = mlflow_argv or _mlflow_argv()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "mlflow.db"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def stop_command(self) -> str:
        return f'kill -TERM -- -$(cat {self.pid_file})   # or: opsbook mlflow stop --state-dir {self.state_dir}'

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return _answers(self.url)

    def _status(self, pid: int | None, reused: bool, seconds: float) -> ServerStatus:
        return ServerStatus(url=self.url, pid=pid, reused=reused, started_seconds=round(seconds, 2),
                            state_dir=str(self.state_dir), backend_store_uri=self.backend_store_uri,
                            artifacts_destination=str(self.artifacts_dir), log_file=str(self.log_file),
                            pid_file=str(self.pid_file), stop_command=self.stop_command)

    def ensure(self, *, timeout: float = 120.0) -> ServerStatus:
        """Reuse the server answering ``/health`` on the port, or start one and wait until it answers."""
        t0 = time.monotonic()
        if self.running():
            return self._status(self.pid(), True, time.monotonic() - t0)
        if port_taken(self.host, self.port):
            raise Unreachable(f"port {self.host}:{self.port} is taken by something that does not answer "
                              "MLflow's /health: choose another port (parameter local_port)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        argv = [*self.mlflow_argv, "server", "--host", self.host, "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", self.backend_store_uri, "--artifacts-destination", str(self.artifacts_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "OPSBOOK_"))}
        env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"})
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(self.state_dir), env=env, start_new_session=True)
            except OSError as exc:
                raise CommandFailed(f"cannot run {argv[0]}: {exc}", command=argv) from exc
        self.pid_file.write_text(f"{proc.pid}\n")

        def up() -> bool:
            code = proc.poll()
            if code is not None:
                self.pid_file.unlink(missing_ok=True)
                raise CommandFailed(f"the embedded mlflow server exited with code {code} at start "
                                    f"(log: {self.log_file})", command=argv, returncode=code,
                                    stderr=_tail(self.log_file))
            return _answers(self.url)

        try:
            wait_until(up, timeout=timeout, interval=0.25,
                       what=f"the embedded mlflow server did not answer {self.url}/health")
        except TimedOut as exc:
            self.stop()
            raise TimedOut(f"{exc} (log: {self.log_file})") from exc
        return self._status(proc.pid, False, time.monotonic() - t0)

    def stop(self, *, grace: float = 10.0) -> bool:
        """Stop the server recorded in the pid file (SIGTERM its process group, SIGKILL after ``grace``).
        False if none was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)

        def gone() -> bool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                return True
            return False

        try:
            wait_until(gone, timeout=grace, interval=0.1, what=f"process group {pid} not stopped by SIGTERM")
        except TimedOut:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _mlflow_argv() -> list[str]:
    cand = Path(sys.executable).parent / "mlflow"
    if cand.is_file():
        return [str(cand)]
    return [sys.executable, "-m", "mlflow"]
