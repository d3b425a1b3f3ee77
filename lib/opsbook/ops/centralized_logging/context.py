"""What the steps of `centralized-logging` share: the names the collector is deployed under, and the
run's :class:`Context`, which works out once, from the settings and the target, which store is searched
and where the collectors send (a run on a target with a log store names no URL of its own)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from opsbook.errors import Invalid
from opsbook.ops import base
from opsbook.ops.base import Result, step

if TYPE_CHECKING:
    from opsbook.ops.centralized_logging.verify import Marker

APP = "fluent-bit"
CONFIG_MAP = "fluent-bit-config"
CONFIG_FILE = "fluent-bit.yaml"
CREDENTIALS_SECRET = "log-store-credentials"
CREDENTIALS_KEY = "password"
HTTP_PORT = 2020
STATE_DIR = "/var/fluent-bit/state"
MARKER_LABEL = "opsbook-log-marker"
#: the marker pod's image: a shell that can echo, nothing the operator needs to choose
MARKER_IMAGE = "busybox:1.36"
IN_CLUSTER_DEFAULTS = {  # what the collectors send to when no URL is given (rendering only)
    "opensearch": "http://opensearch.logging.svc.cluster.local:9200",
    "elasticsearch": "http://elasticsearch.logging.svc.cluster.local:9200",
    "loki": "http://loki.logging.svc.cluster.local:3100",
}
_SIZE = re.compile(r"^\d+(\.\d+)?[KMG]?$", re.IGNORECASE)


def reason(exc: Exception) -> str:
    """The first line of an error: what a check shows as its reason."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Context(base.Context):
    """The run as the steps see it. ``backend_kind = auto`` and an empty ``backend_url`` defer to the
    target (``log_store_kind``, ``log_store_url``), so the derived ``kind`` and ``backend_url`` are
    what every step uses, never the raw settings. ``marker`` is set by ``emit_marker`` and read by
    ``marker_searchable``: the one piece of state that passes from one cell to another."""

    kind: str
    backend_url: str
    marker: Marker | None

    def init(self) -> None:
        s = self.settings
        kind = s.backend_kind
        if kind == "auto":
            kind = getattr(self.target, "log_store_kind", None) or "opensearch"
        self.kind = str(kind)
        self.backend_url = (s.backend_url or getattr(self.target, "log_store_url", None) or "").rstrip("/")
        self.marker = None
        self._store: Any = None

    def validate(self) -> None:
        """Refuse what the parameters cell cannot express: a backend kind the target names that we do
        not render, or a buffer size Fluent Bit would not parse (raised before anything is rendered)."""
        if self.kind not in IN_CLUSTER_DEFAULTS:
            raise Invalid(f"backend_kind {self.kind!r}: expected opensearch, elasticsearch or loki")
        size = str(self.settings.buffer_size)
        if not _SIZE.match(size):
            raise Invalid(f"buffer_size {size!r}: expected a size such as 512M or 2G")

    @property
    def sink_url(self) -> str:
        """Where the collectors send: ``collector_url``, else ``backend_url``, else the in-cluster default."""
        return self.settings.collector_url or self.backend_url or IN_CLUSTER_DEFAULTS[self.kind]

    @property
    def cluster_role(self) -> str:
        return f"{APP}-read-{self.settings.namespace}"

    @property
    def kube(self) -> Any:
        return self.clients.kube

    def store(self) -> Any:
        """The log store client, or None when there is no URL to search (``local`` without one). The
        password is resolved here, on first use, so a plan that never searches never reads it."""
        if not self.backend_url:
            return None
        if self._store is None:
            s = self.settings
            password = self.secret("backend_password") if (s.backend_user and s.backend_password) else None
            self._store = self.clients.logstore(
                self.kind, self.backend_url, index_prefix=s.index_prefix, username=s.backend_user or None,
                password=password, verify=s.tls_verify, timeout=min(30.0, max(2.0, s.timeout / 10)))
        return self._store


@step("settings", "Settings")
def settings_report(ctx: Context) -> Result:
    """Which store, which cluster, what the collectors will send where: the operator reads this before
    anything is rendered, and the password appears only as its reference."""
    ctx.validate()
    s = ctx.settings
    has_cluster = ctx.has_cluster
    rows = [
        {"setting": "collector", "value": f"Fluent Bit ({s.collector_image}), DaemonSet {s.namespace}/{APP}"},
        {"setting": "backend", "value": ctx.kind + ("" if s.backend_kind != "auto"
                                                    else " (the target's log_store_kind)")},
        {"setting": "searched at", "value": ctx.backend_url or "(none: no backend_url and no log_store_url in "
                                                               "the target; the store is not checked)"},
        {"setting": "collectors send to", "value": ctx.sink_url + ("" if (s.collector_url or ctx.backend_url) else
                                                                    " (in-cluster default: set collector_url)")},
        {"setting": "index" if ctx.kind != "loki" else "labels",
         "value": f"{s.index_prefix}-YYYY.MM.DD" if ctx.kind != "loki" else "namespace, pod, container, app"},
        {"setting": "credentials", "value": (f"user {s.backend_user}, password {s.backend_password or '(none)'}"
                                             if s.backend_user else "none")},
        {"setting": "buffer", "value": f"filesystem, {s.buffer_size} per output, retried without limit"},
        {"setting": "cluster", "value": "the target's" if has_cluster else
         f"none on target {ctx.target_name}: the manifests are rendered and validated, not applied"},
        {"setting": "expected services", "value": ", ".join(s.services) or "(none)"},
    ]
    return Result(summary=f"{ctx.kind} at {ctx.backend_url or '(no URL)'}; "
                  + ("cluster: the target's" if has_cluster else "no cluster (plan only)"),
                  rows=rows, details={"kind": ctx.kind, "backend_url": ctx.backend_url,
                                      "namespace": s.namespace, "has_cluster": has_cluster})
