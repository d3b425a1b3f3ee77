"""The run as this runbook's steps share it: what is deployed where, the clients, and what the steps found."""

from __future__ import annotations

import atexit
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Unreachable
from opsbook.ops import base

RUNBOOK_ID = "initial-kubernetes-deployment"


def is_chart_path(chart: str) -> bool:
    """A chart given as a path (``./x``, ``../x``, ``/x``, ``~/x``, ``x.tgz`` or an existing directory)
    rather than a name in a repository."""
    return (chart.startswith(("/", "./", "../", "~")) or chart.endswith(".tgz") or Path(chart).is_dir())


def _private_workdir() -> Path:
    """Where ``values.yaml`` is written for helm: a private folder (mode 0700) of this process,
    removed when the process (the run's kernel) exits; one that a killed kernel left behind has an
    owner file, so the next run sweeps it (``opsbook.workdirs``). Nothing stays in ``$TMPDIR``; the
    record keeps the file's text (the step's details)."""
    from opsbook.workdirs import make_workdir

    folder = make_workdir("opsbook-deploy-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class _Unconnected:
    """Stands in for a Kube client whose kubeconfig could not even be loaded: the preflight reports
    the error, and any step that still calls it raises it."""

    host = "?"

    def __init__(self, error: str):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise Unreachable(self.error)


class Context(base.Context):
    """One first install: the settings, the clients (``kube_context`` over the target's), whether the
    cluster answers (asked once, by whichever step needs it first), and what the steps found so far
    (values.yaml, the rendered manifests), which the later steps act on."""

    def init(self) -> None:
        self.values_file: Path | None = None
        self.values: dict[str, Any] = {}
        self.manifests: list[dict[str, Any]] = []
        self.installed = False

    # -- the cluster -------------------------------------------------------------------------------
    @property
    def has_cluster(self) -> bool:
        """The target's cluster, or the one ``kube_context`` names in the target's kubeconfig."""
        return bool(super().has_cluster or self.settings.kube_context)

    @property
    def kube_context(self) -> str | None:
        return self.settings.kube_context or self.clients.kube_context

    def _own_context(self) -> bool:
        """Whether ``kube_context`` names another context than the one ``ctx.clients`` is made for."""
        return bool(self.settings.kube_context) and self.settings.kube_context != self.clients.kube_context

    @cached_property
    def kube(self) -> Any:
        """The Kubernetes client, None on a target without a cluster; a stand-in raising the error
        when the kubeconfig cannot be loaded (an unreachable cluster is the preflight's to report)."""
        if not self.has_cluster:
            return None
        try:
            if self._own_context():
                from opsbook.clients.kube import Kube

                return Kube(kubeconfig=self.clients.kubeconfig, context=self.kube_context)
            return self.clients.kube
        except ClientError as exc:
            return _Unconnected(str(exc))

    @cached_property
    def helm(self) -> Any:
        if self._own_context():
            from opsbook.clients.helm import Helm

            return Helm(kubeconfig=self.clients.kubeconfig, kube_context=self.kube_context,
                        namespace=self.settings.namespace)
        return self.clients.helm(self.settings.namespace)

    @cached_property
    def http(self) -> Any:
        """The HTTP client the ingress probe uses (``clients.http.Http``; a test's ``Clients(..., http=...)``)."""
        return self.clients.http()

    @cached_property
    def _server(self) -> tuple[str, str]:
        """(the API server's version, why it cannot be reached): asked once per run."""
        kube = self.kube
        if kube is None:
            return "", ""
        if isinstance(kube, _Unconnected):
            return "", kube.error
        try:
            return str(kube.version().get("gitVersion", "?")), ""
        except ClientError as exc:
            return "", str(exc)

    @property
    def server_version(self) -> str:
        return self._server[0]

    @property
    def cluster_error(self) -> str:
        """Why the cluster is not reachable (empty: reachable, or none configured)."""
        return self._server[1]

    @property
    def cluster_reachable(self) -> bool:
        return self.kube is not None and not self.cluster_error

    # -- the chart ---------------------------------------------------------------------------------
    @cached_property
    def chart(self) -> str:
        """The ``chart`` setting: a path resolved (a relative default from notebooks/, a relative
        value from the working folder: ``ctx.path``), a chart name as given."""
        value = str(self.settings.chart or "ml-platform")
        if not is_chart_path(value):
            return value
        given = self.path("chart") if self.settings.chart else None
        return str(given if given is not None else Path(value).expanduser().resolve())

    @property
    def chart_is_path(self) -> bool:
        return is_chart_path(self.chart)

    @property
    def chart_ref(self) -> str:
        """What helm is given: the resolved path, or ``repo/chart``."""
        if self.chart_is_path:
            return str(Path(self.chart).expanduser().resolve())
        return self.chart if "/" in self.chart else f"{self.settings.repo_name}/{self.chart}"

    @property
    def chart_pin(self) -> str | None:
        """The chart version helm is given: none for a chart path, or when the latest is wanted."""
        return None if self.chart_is_path else (self.settings.chart_version or None)

    @cached_property
    def workdir(self) -> Path:
        return _private_workdir()

    def deployments(self) -> list[str]:
        """The names of the Deployments the chart renders."""
        return [m["metadata"]["name"] for m in self.manifests if m.get("kind") == "Deployment"]

    def values_files(self) -> list[Path]:
        return [self.values_file] if self.values_file else []
