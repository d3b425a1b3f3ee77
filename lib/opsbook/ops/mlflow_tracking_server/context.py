"""The run as the tracking-server steps see it: where the server under test is, and the clients and
secrets they reach it through.

Where the server is (:attr:`Context.server_mode`) follows from the target and the settings, once:

* ``cluster``   the target has a cluster: the manifests are applied there; verification goes through
                ``tracking_uri`` (an ingress or a port-forward) or the target's ``mlflow_uri``.
* ``url``       no cluster, but a ``tracking_uri`` (or the target's ``mlflow_uri``): that server is
                verified as it is (nothing is deployed).
* ``embedded``  the ``local`` default: an ``mlflow server`` on loopback with its state under
                ``.opsbook/mlflow`` (``$OPSBOOK_MLFLOW_STATE``).

The MLflow, PostgreSQL and embedded-server clients are not among the kinds ``opsbook.clients.Clients``
makes, so this context makes them on first use (the S3 client comes from ``ctx.clients.s3``); a
test hands in its own with ``Clients(target, mlflow=..., postgres=..., s3=..., local_server=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from opsbook.clients import mlflow as mlflow_client
from opsbook.errors import Invalid
from opsbook.ops import base

APP = "mlflow"
PORT = 5000
VERIFY_MODEL = "opsbook-verification"
VERIFY_ALIAS = "verified"
VERIFY_TAG = "opsbook.verification"
#: what the steps after ``track-experiment`` say when there is no probe to check
PLAN_ONLY = "plan mode: the verification writes to the tracking server, so it runs in apply mode"


@dataclass
class Probe:
    """The verification's experiment, run and model (what the steps after ``track-experiment`` check)."""

    experiment_id: str
    experiment_name: str
    run_id: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    model: Any = None  # clients.mlflow.LoggedModel
    version: Any = None  # clients.mlflow.ModelVersion


def state_dir(project_dir: Path) -> Path:
    """The embedded server's state folder (the client's rule: ``$OPSBOOK_MLFLOW_STATE`` or ``.opsbook/mlflow``)."""
    return mlflow_client.state_dir(project_dir)


class Context(base.Context):
    """The base context plus what every step of this runbook derives from the same settings: the
    server's mode, the S3 endpoint and tracking URI (the setting, else the target's), the clients,
    and the probe the verification steps share."""

    def init(self) -> None:
        s = self.settings
        #: the S3 endpoint: the setting, else the target's, else AWS S3 ("")
        self.s3_endpoint: str = s.s3_endpoint or getattr(self.target, "s3_endpoint", None) or ""
        #: the server the verification talks to when it is not the embedded one ("" if none is given)
        self.configured_uri: str = (s.tracking_uri or getattr(self.target, "mlflow_uri", None) or "").rstrip("/")
        self.server_mode: str = "cluster" if self.has_cluster else ("url" if self.configured_uri else "embedded")
        #: the probe experiment, run and model, once ``track-experiment`` has made them
        self.probe: Probe | None = None
        self._mlflow: Any = None
        self._s3: Any = None
        self._db: Any = None

    @property
    def embedded(self) -> bool:
        return self.server_mode == "embedded"

    # -- clients ---------------------------------------------------------------------------------
    @property
    def kube(self) -> Any:
        """The Kubernetes client in cluster mode (``clients.kube.Kube``), else None."""
        return self.clients.kube if self.server_mode == "cluster" else None

    @cached_property
    def local(self) -> Any:
        """The embedded server (``clients.mlflow.LocalServer``) in embedded mode, else None."""
        if not self.embedded:
            return None
        given = self.clients.given("local_server")
        if given is not None:
            return given
        return mlflow_client.LocalServer(state_dir(self.project_dir), port=self.settings.local_port)

    @property
    def tracking_uri(self) -> str:
        if self.embedded:
            return str(self.local.url)
        if self.configured_uri:
            return self.configured_uri
        raise Invalid(f"no tracking URI: on a cluster give parameter tracking_uri (the ingress URL, or a "
                      f"port-forward: kubectl -n {self.settings.namespace} port-forward svc/{APP} {PORT}) or set "
                      f"mlflow_uri in the target")

    def mlflow(self) -> Any:
        """The MLflow client of the server under test."""
        if self._mlflow is None:
            self._mlflow = self.clients.given("mlflow") or mlflow_client.Mlflow(
                self.tracking_uri, timeout=min(60.0, self.settings.timeout))
        return self._mlflow

    def s3(self) -> Any:
        """The S3 client, or None when there is no bucket to check (embedded mode, or s3_bucket empty)."""
        s = self.settings
        if self.embedded or not s.s3_bucket:
            return None
        if self._s3 is None:  # the keys are resolved once, and only when there is no client given
            self._s3 = self.clients.given("s3")
        if self._s3 is None:
            key = self.secret("s3_access_key") if s.s3_access_key else None
            secret = self.secret("s3_secret_key") if s.s3_secret_key else None
            self._s3 = self.clients.s3(endpoint_url=self.s3_endpoint or None, access_key=key, secret_key=secret,
                                       region=s.s3_region)
        return self._s3

    def db(self) -> Any:
        """The PostgreSQL client, or None when there is no database to check (embedded, or db_host empty)."""
        s = self.settings
        if self.embedded or not s.db_host:
            return None
        if self._db is None:
            given = self.clients.given("postgres")
            if given is not None:
                self._db = given
            else:
                from opsbook.clients.postgres import Postgres

                password = self.secret("db_password") if s.db_password else None
                self._db = Postgres(host=s.db_host, port=s.db_port, dbname=s.db_name, user=s.db_user,
                                    password=password, connect_timeout=int(min(10, max(1, s.timeout))))
        return self._db


def no_probe(ctx: Context) -> str | None:
    """Why a verification step after ``track-experiment`` does not run: nothing was tracked to check."""
    if ctx.probe is not None:
        return None
    return PLAN_ONLY if not ctx.applying else "no probe experiment: the step 'Track an experiment' has not run"
