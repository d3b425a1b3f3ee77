"""The only modules that touch the network or run subprocesses (kube, helm, mlflow, prometheus,
logstore, s3, postgres, tools, webhook). Everything above takes a client as an argument, so it can be
tested against the real local services.

:class:`Clients` makes the clients of one run from its target, each on first use and once: a step
that never talks to Prometheus never builds a Prometheus client. A test gives the clients it made
itself (``Clients(target, kube=kube, helm=helm)``).
"""

from __future__ import annotations

from typing import Any


class Clients:
    """The clients of one run, built lazily from the target (an ``opsbook.targets.Target``, or any
    object with its fields: ``name``, ``has_cluster``, ``kubeconfig``, ``kube_context``...).

    ``kube`` is None on a target without a cluster; the methods that take an endpoint
    (``prometheus(url)``, ``registry(uri)``...) make one client per endpoint and reuse it."""

    def __init__(self, target: Any = None, *, kube: Any = None, helm: Any = None, tools: Any = None,
                 **given: Any):
        self.target = target
        self._kube = kube
        self._helm: dict[str | None, Any] = {None: helm} if helm is not None else {}
        self._tools = tools
        self._made: dict[tuple[str, Any], Any] = {("given", k): v for k, v in given.items()}

    def given(self, name: str) -> Any:
        """A client a test handed in by keyword (``Clients(target, prometheus=prom)``), or None."""
        return self._made.get(("given", name))

    @property
    def kubeconfig(self) -> str | None:
        return getattr(self.target, "kubeconfig", None)

    @property
    def kube_context(self) -> str | None:
        return getattr(self.target, "kube_context", None)

    @property
    def has_cluster(self) -> bool:
        return self._kube is not None or bool(getattr(self.target, "has_cluster", False))

    @property
    def kube(self) -> Any:
        """The Kubernetes client (``clients.kube.Kube``), or None when the target has no cluster.
        Raises the client's error (``Unreachable``...) when its kubeconfig cannot be loaded."""
        if self._kube is None and self.has_cluster:
            from opsbook.clients.kube import Kube

            self._kube = Kube(kubeconfig=self.kubeconfig, context=self.kube_context)
        return self._kube

    def helm(self, namespace: str | None = None) -> Any:
        """A helm client for the target's kubeconfig and context (``clients.helm.Helm``)."""
        if namespace not in self._helm:
            if None in self._helm:  # one a test gave, whatever the namespace
                return self._helm[None]
            from opsbook.clients.helm import Helm

            self._helm[namespace] = Helm(kubeconfig=self.kubeconfig, kube_context=self.kube_context,
                                         namespace=namespace)
        return self._helm[namespace]

    @property
    def tools(self) -> Any:
        """The local tools (helm, kubectl...) and their versions (``clients.tools.Tools``)."""
        if self._tools is None:
            from opsbook.clients.tools import Tools

            self._tools = Tools()
        return self._tools

    def _once(self, kind: str, key: Any, make: Any) -> Any:
        given = self.given(kind)
        if given is not None:
            return given
        if (kind, key) not in self._made:
            self._made[(kind, key)] = make()
        return self._made[(kind, key)]

    def prometheus(self, url: str, *, timeout: float = 10.0) -> Any:
        from opsbook.clients.prometheus import Prometheus

        return self._once("prometheus", (url, timeout), lambda: Prometheus(url, timeout=timeout))

    def registry(self, tracking_uri: str, *, timeout: float = 30.0) -> Any:
        from opsbook.clients.registry import Registry

        return self._once("registry", (tracking_uri, timeout), lambda: Registry(tracking_uri, timeout=timeout))

    def logstore(self, kind: str, url: str, **options: Any) -> Any:
        """A log store client (``clients.logstore.connect``: OpenSearch or Loki)."""
        from opsbook.clients.logstore import connect

        key = (kind, url, tuple(sorted((k, repr(v)) for k, v in options.items())))
        return self._once("logstore", key, lambda: connect(kind, url, **options))

    def http(self, *, timeout: float = 10.0) -> Any:
        """A plain HTTP client (``clients.http.Http``: probes of endpoints a runbook deployed)."""
        from opsbook.clients.http import Http

        return self._once("http", timeout, lambda: Http(timeout=timeout))

    def s3(self, **options: Any) -> Any:
        from opsbook.clients.s3 import S3

        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        return self._once("s3", key, lambda: S3(**options))
