"""The `centralized-logging` runbook's logic: a Fluent Bit collector on every node, forwarding every
container's log to the log store (OpenSearch / Elasticsearch, or Loki), verified by searching the store.

The handbook leaves two choices open; here they are parameters with defaults:

* the collector: **Fluent Bit** (the handbook also names Fluentd and Filebeat). One small static
  binary per node, a built-in CRI parser and Kubernetes metadata filter, filesystem buffering, and
  outputs for all three stores. Only Fluent Bit is rendered; ``collector_image`` picks its version.
* the backend: ``backend_kind`` = ``opensearch`` (default through the target), ``elasticsearch`` or
  ``loki``.

What is rendered (plain manifests, applied with server-side apply through ``clients.kube``, so that
the plan is the server's own dry run and a re-run is idempotent):

* ServiceAccount ``fluent-bit``, ClusterRole ``fluent-bit-read-<namespace>`` (get/list/watch pods and
  namespaces: all the ``kubernetes`` filter needs) and its ClusterRoleBinding;
* ConfigMap ``fluent-bit-config`` with ``fluent-bit.yaml`` - Fluent Bit's **YAML** configuration
  format (not the classic ``.conf``), chosen because it is data: rendered from a dict here and parsed
  back with ``yaml.safe_load`` by the tests. ``tail`` on ``/var/log/containers/*.log`` with the
  ``cri`` (and ``docker``) multiline parsers, the ``kubernetes`` filter (namespace, pod, container,
  labels), and one output: ``opensearch`` / ``es`` (``Logstash_Format`` indices
  ``<index_prefix>-YYYY.MM.DD``, ``Suppress_Type_Name On``, ``Replace_Dots On``) or ``loki`` (labels
  namespace, pod, container, app). Buffering: ``storage.type filesystem`` on the input, the buffer on a
  hostPath so that it survives a restart of the pod, ``storage.total_limit_size`` = ``buffer_size``
  per output and ``Retry_Limit no_limits``: while the store is down, chunks wait on disk and are
  retried for ever; what does not fit in ``buffer_size`` is dropped, oldest first.
* DaemonSet ``fluent-bit``: tolerations for every ``NoSchedule`` / ``NoExecute`` taint (so it also
  lands on control-plane nodes), read-only hostPath mounts of ``/var/log/containers`` and
  ``/var/log/pods``, backend credentials only as ``secretKeyRef`` (Secret ``log-store-credentials``,
  key ``password``, or the Secret a ``k8s:`` reference names), health probes on Fluent Bit's
  HTTP server (port 2020).

Verification reads the store through ``clients.logstore``: a marker line with a unique request id,
printed by a short-lived pod, must become searchable within ``marker_timeout`` seconds; counts per
service over the last ``window_minutes`` (expected services without logs are flagged); the search the
operator asked for (``search_service`` / ``search_request_id``).
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opsbook.errors import ClientError, Invalid, NotFound, OpsbookError, TimedOut
from opsbook.notebook.display import show_code
from opsbook.results import Check, Result

APP = "fluent-bit"
CONFIG_MAP = "fluent-bit-config"
CONFIG_FILE = "fluent-bit.yaml"
CREDENTIALS_SECRET = "log-store-credentials"
CREDENTIALS_KEY = "password"
HTTP_PORT = 2020
STATE_DIR = "/var/fluent-bit/state"
MARKER_LABEL = "opsbook-log-marker"
DEFAULT_IMAGE = "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
DEFAULT_MARKER_IMAGE = "busybox:1.36"
IN_CLUSTER_DEFAULTS = {  # what the collectors send to when no URL is given (rendering only)
    "opensearch": "http://opensearch.logging.svc.cluster.local:9200",
    "elasticsearch": "http://elasticsearch.logging.svc.cluster.local:9200",
    "loki": "http://loki.logging.svc.cluster.local:3100",
}
_K8S_REF = re.compile(r"^k8s:(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<key>.+)$")
_SIZE = re.compile(r"^\d+(\.\d+)?[KMG]?$", re.IGNORECASE)

SecretFn = Callable[..., str]


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """The runbook's parameters as this module uses them (secret parameters hold references)."""

    namespace: str = "logging"
    backend_kind: str = "auto"  # auto: the target's log_store_kind
    backend_url: str = ""  # the URL the runbook searches (empty: the target's log_store_url)
    collector_url: str = ""  # the URL the collectors send to (empty: backend_url)
    index_prefix: str = "kube-logs"
    backend_user: str = ""
    backend_password: str = ""  # a secret reference
    tls_verify: bool = True
    collector_image: str = DEFAULT_IMAGE
    buffer_size: str = "1G"
    marker_timeout: float = 120.0
    marker_image: str = DEFAULT_MARKER_IMAGE
    window_minutes: int = 15
    services: tuple[str, ...] = ("proposer", "critic")
    search_service: str = ""
    search_request_id: str = ""
    search_limit: int = 20
    timeout: float = 300.0
    # derived
    kind: str = "opensearch"
    has_cluster: bool = False
    target: str = "local"
    applying: bool = False

    @property
    def sink_url(self) -> str:
        """Where the collectors send: ``collector_url``, else ``backend_url``, else the in-cluster default."""
        return self.collector_url or self.backend_url or IN_CLUSTER_DEFAULTS[self.kind]

    @property
    def cluster_role(self) -> str:
        return f"{APP}-read-{self.namespace}"


def settings_from(params: Mapping[str, Any], target: Any, *, applying: bool | None = None) -> Settings:
    """:class:`Settings` from the validated parameters and the target (``opsbook.targets.Target``)."""
    skip = ("kind", "has_cluster", "target", "applying")
    known = {f for f in Settings.__dataclass_fields__ if f not in skip}
    values = {k: params[k] for k in known if k in params and params[k] is not None}
    if "services" in values:
        values["services"] = tuple(str(s) for s in values["services"] or ())
    kind = values.get("backend_kind") or "auto"
    if kind == "auto":
        kind = getattr(target, "log_store_kind", None) or "opensearch"
    if kind not in IN_CLUSTER_DEFAULTS:
        raise Invalid(f"backend_kind {kind!r}: expected opensearch, elasticsearch or loki")
    url = (values.get("backend_url") or getattr(target, "log_store_url", None) or "").rstrip("/")
    values["backend_url"] = url
    size = str(values.get("buffer_size", "1G"))
    if not _SIZE.match(size):
        raise Invalid(f"buffer_size {size!r}: expected a size such as 512M or 2G")
    return Settings(**values, kind=kind, has_cluster=bool(getattr(target, "has_cluster", False)),
                    target=getattr(target, "name", "local"),
                    applying=bool(params.get("mode") == "apply") if applying is None else applying)


@dataclass
class Logging:
    """Settings plus the clients the runbook talks through (made on first use; tests pass their own)."""

    settings: Settings
    secret: SecretFn | None = None
    kube: Any = None  # clients.kube.Kube when the target has a cluster
    _store: Any = None

    def resolve(self, name: str) -> str:
        if self.secret is None:
            raise OpsbookError(f"no secret resolver: cannot resolve parameter {name!r}")
        reader = self.kube.read_secret_key if self.kube is not None else None
        return self.secret(name, k8s=reader)

    def store(self) -> Any:
        """The log store client, or None when there is no URL to search (``local`` without one)."""
        s = self.settings
        if not s.backend_url:
            return None
        if self._store is None:
            from opsbook.clients.logstore import connect

            password = self.resolve("backend_password") if (s.backend_user and s.backend_password) else None
            self._store = connect(s.kind, s.backend_url, index_prefix=s.index_prefix,
                                  username=s.backend_user or None, password=password, verify=s.tls_verify,
                                  timeout=min(30.0, max(2.0, s.timeout / 10)))
        return self._store


def configure(params: Mapping[str, Any], target: Any, *, secret: SecretFn | None = None, kube: Any = None) -> Result:
    """The settings cell: which store, which cluster, what the collectors will send where."""
    s = settings_from(params, target)
    if kube is None and s.has_cluster:
        from opsbook.clients.kube import Kube

        kube = Kube(kubeconfig=getattr(target, "kubeconfig", None), context=getattr(target, "kube_context", None))
    lc = Logging(settings=s, secret=secret, kube=kube)
    rows = [
        {"setting": "collector", "value": f"Fluent Bit ({s.collector_image}), DaemonSet {s.namespace}/{APP}"},
        {"setting": "backend", "value": s.kind + ("" if params.get("backend_kind", "auto") != "auto"
                                                  else " (the target's log_store_kind)")},
        {"setting": "searched at", "value": s.backend_url or "(none: no backend_url and no log_store_url in the "
                                                             "target; the store is not checked)"},
        {"setting": "collectors send to", "value": s.sink_url + ("" if (s.collector_url or s.backend_url) else
                                                                  " (in-cluster default: set collector_url)")},
        {"setting": "index" if s.kind != "loki" else "labels",
         "value": f"{s.index_prefix}-YYYY.MM.DD" if s.kind != "loki" else "namespace, pod, container, app"},
        {"setting": "credentials", "value": (f"user {s.backend_user}, password {s.backend_password or '(none)'}"
                                             if s.backend_user else "none")},
        {"setting": "buffer", "value": f"filesystem, {s.buffer_size} per output, retried without limit"},
        {"setting": "cluster", "value": "the target's" if s.has_cluster else
         f"none on target {s.target}: the manifests are rendered and validated, not applied"},
        {"setting": "expected services", "value": ", ".join(s.services) or "(none)"},
    ]
    return Result(summary=f"{s.kind} at {s.backend_url or '(no URL)'}; "
                  + ("cluster: the target's" if s.has_cluster else "no cluster (plan only)"),
                  rows=rows, value=lc, details={"kind": s.kind, "backend_url": s.backend_url,
                                               "namespace": s.namespace, "has_cluster": s.has_cluster})


# -------------------------------------------------------------------------------------- configuration


def _host_port(url: str, kind: str) -> tuple[str, int, bool, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise Invalid(f"log store URL {url!r} has no host")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else (3100 if kind == "loki" else 9200))
    return parts.hostname, port, tls, parts.path.rstrip("/")


def render_config(settings: Settings) -> dict[str, Any]:
    """Fluent Bit's configuration (YAML format) as a dict: service, one tail input, the kubernetes
    filter, one output for the chosen backend."""
    s = settings
    host, port, tls, path = _host_port(s.sink_url, s.kind)
    service = {
        "flush": 1, "log_level": "info", "http_server": "on", "http_listen": "0.0.0.0", "http_port": HTTP_PORT,
        "health_check": "on", "hc_errors_count": 5, "hc_retry_failure_count": 5, "hc_period": 60,
        "storage.path": f"{STATE_DIR}/flb-storage/", "storage.sync": "normal", "storage.checksum": "off",
        "storage.backlog.mem_limit": "16M", "storage.metrics": "on",
    }
    tail = {
        "name": "tail", "tag": "kube.*", "path": "/var/log/containers/*.log",
        # the collector's own lines would loop back through it
        "exclude_path": f"/var/log/containers/{APP}-*_{s.namespace}_{APP}-*.log",
        "multiline.parser": "cri, docker", "db": f"{STATE_DIR}/flb_kube.db", "db.locking": "true",
        "mem_buf_limit": "50MB", "skip_long_lines": "on", "refresh_interval": 10, "read_from_head": "false",
        "storage.type": "filesystem",
    }
    kube_filter = {
        "name": "kubernetes", "match": "kube.*", "kube_url": "https://kubernetes.default.svc:443",
        "kube_ca_file": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "kube_token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "kube_tag_prefix": "kube.var.log.containers.", "merge_log": "on", "keep_log": "on",
        "k8s-logging.parser": "on", "k8s-logging.exclude": "on", "labels": "on", "annotations": "off",
    }
    output: dict[str, Any] = {"match": "kube.*", "host": host, "port": port, "retry_limit": "no_limits",
                              "storage.total_limit_size": s.buffer_size}
    if s.kind == "loki":
        output.update({
            "name": "loki", "uri": (path or "") + "/loki/api/v1/push",
            "labels": "job=fluent-bit, namespace=$kubernetes['namespace_name'], pod=$kubernetes['pod_name'], "
                      "container=$kubernetes['container_name'], app=$kubernetes['labels']['app']",
            "remove_keys": "kubernetes", "line_format": "json",
        })
    else:
        output.update({
            "name": "opensearch" if s.kind == "opensearch" else "es",
            "logstash_format": "on", "logstash_prefix": s.index_prefix, "logstash_dateformat": "%Y.%m.%d",
            "time_key": "@timestamp", "suppress_type_name": "on", "replace_dots": "on", "trace_error": "on",
            "buffer_size": "512KB",
        })
        if path:
            output["path"] = path
    if tls:
        output.update({"tls": "on", "tls.verify": "on" if s.tls_verify else "off"})
    if s.backend_user:
        output.update({"http_user": "${LOG_STORE_USER}", "http_passwd": "${LOG_STORE_PASSWORD}"})
    return {"service": service, "pipeline": {"inputs": [tail], "filters": [kube_filter], "outputs": [output]}}


def config_text(settings: Settings) -> str:
    import yaml

    return yaml.safe_dump(render_config(settings), sort_keys=False, default_flow_style=False)


def _credentials_ref(settings: Settings) -> tuple[str, str]:
    """(Secret, key) the DaemonSet reads the password from: the ``k8s:`` reference itself when it
    names a Secret in the collector's namespace, else ``log-store-credentials`` / ``password``."""
    m = _K8S_REF.match(settings.backend_password or "")
    if m and m.group("ns") == settings.namespace:
        return m.group("name"), m.group("key")
    return CREDENTIALS_SECRET, CREDENTIALS_KEY


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "log-collector",
            "app.kubernetes.io/part-of": "centralized-logging", "app.kubernetes.io/managed-by": "opsbook"}


SELECTOR = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "log-collector"}


def render_manifests(settings: Settings) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap and DaemonSet of the collector."""
    import hashlib

    s = settings
    ns, labels = s.namespace, _labels()
    text = config_text(s)
    env: list[dict[str, Any]] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    if s.backend_user:
        secret, key = _credentials_ref(s)
        env += [{"name": "LOG_STORE_USER", "value": s.backend_user},
                {"name": "LOG_STORE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]
    probe_port = {"port": "http"}
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": APP, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    # a new configuration rolls the collectors
                    "opsbook.io/config-sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}},
                "spec": {
                    "serviceAccountName": APP,
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"},
                                    {"operator": "Exists", "effect": "NoExecute"}],
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": APP, "image": s.collector_image, "imagePullPolicy": "IfNotPresent",
                        "command": ["/fluent-bit/bin/fluent-bit"], "args": ["-c", f"/fluent-bit/etc/{CONFIG_FILE}"],
                        "env": env,
                        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                        "livenessProbe": {"httpGet": {"path": "/", **probe_port}, "periodSeconds": 10},
                        "readinessProbe": {"httpGet": {"path": "/api/v1/health", **probe_port},
                                           "periodSeconds": 10},
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False},
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/fluent-bit/etc/", "readOnly": True},
                            {"name": "varlogcontainers", "mountPath": "/var/log/containers", "readOnly": True},
                            {"name": "varlogpods", "mountPath": "/var/log/pods", "readOnly": True},
                            {"name": "state", "mountPath": STATE_DIR},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": CONFIG_MAP}},
                        {"name": "varlogcontainers", "hostPath": {"path": "/var/log/containers", "type": "Directory"}},
                        {"name": "varlogpods", "hostPath": {"path": "/var/log/pods", "type": "Directory"}},
                        {"name": "state", "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"}},
                    ],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": APP, "namespace": ns, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": s.cluster_role, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": s.cluster_role, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": s.cluster_role},
         "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "namespace": ns, "labels": labels},
         "data": {CONFIG_FILE: text}},
        daemonset,
    ]




def _rows(ms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": m["kind"], "name": m["metadata"]["name"],
             "namespace": m["metadata"].get("namespace", "(cluster)")} for m in ms]


def configuration(lc: Logging) -> Result:
    """Render and show the collector's configuration (inputs, filters, outputs)."""
    s = lc.settings
    cfg = render_config(s)
    show_code(config_text(s))
    pipe = cfg["pipeline"]
    rows = [{"section": sec[:-1], "plugin": p["name"],
             "what": {"tail": f"{p.get('path')} ({p.get('multiline.parser')}), storage {p.get('storage.type')}",
                      "kubernetes": "namespace, pod, container, labels from the API",
                      "opensearch": f"{p.get('host')}:{p.get('port')} index {p.get('logstash_prefix')}-YYYY.MM.DD",
                      "es": f"{p.get('host')}:{p.get('port')} index {p.get('logstash_prefix')}-YYYY.MM.DD",
                      "loki": f"{p.get('host')}:{p.get('port')} labels {p.get('labels')}"}.get(p["name"], "")}
            for sec in ("inputs", "filters", "outputs") for p in pipe[sec]]
    return Result(summary=f"Fluent Bit YAML configuration: tail -> kubernetes -> {pipe['outputs'][0]['name']} "
                  f"({s.sink_url}); buffer {s.buffer_size} on disk, retried without limit",
                  rows=rows, details={"config": cfg, "format": "fluent-bit YAML"}, value=cfg)


def manifests(lc: Logging) -> Result:
    """Render and show the collector's manifests."""
    ms = render_manifests(lc.settings)
    import yaml

    show_code(yaml.safe_dump_all(ms, sort_keys=False, default_flow_style=False))
    s = lc.settings
    creds = (f"password by secretKeyRef {'/'.join(_credentials_ref(s))}" if s.backend_user
             else "no credentials")
    return Result(summary=f"{len(ms)} manifests; {creds}", rows=_rows(ms), details={"manifests": ms}, value=ms)


# ------------------------------------------------------------------------------------------ preflight


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def preflight(lc: Logging) -> list[Check]:
    """The prerequisites: a valid configuration, the log store answering, and on a cluster the API,
    the rights to install the collector and the credentials Secret."""
    s = lc.settings
    out: list[Check] = []
    try:
        render_manifests(s)
        out.append(Check("configuration renders", True, f"{s.kind} output to {s.sink_url}"))
    except ClientError as exc:
        out.append(Check("configuration renders", False, _reason(exc)))
    if ":" not in s.collector_image.rsplit("/", 1)[-1] or s.collector_image.endswith(":latest"):
        out.append(Check("collector image pinned", False, f"{s.collector_image}: give an explicit version tag"))
    else:
        out.append(Check("collector image pinned", True, s.collector_image))
    if not s.backend_url:
        out.append(Check("log store answers", True, f"skipped: target {s.target} has no log_store_url and "
                         "backend_url is empty (the store is not checked)"))
    else:
        try:
            h = lc.store().health()
            ok = h.status != "red"
            out.append(Check("log store answers", ok, f"{h.version or h.kind} at {h.url}, status {h.status}",
                             evidence={"status": h.status, "version": h.version, **h.details}))
        except (ClientError, OpsbookError) as exc:
            out.append(Check("log store answers", False, _reason(exc)))
    if not s.has_cluster:
        out.append(Check("cluster", True, f"skipped: target {s.target} has no cluster (plan only)"))
        return out
    kube = lc.kube
    try:
        v = kube.version()
        out.append(Check("Kubernetes API", True, f"{kube.host}, {v.get('gitVersion', '?')}"))
    except ClientError as exc:
        out.append(Check("Kubernetes API", False, _reason(exc)))
        return out
    for verb, resource, group, ns in (("create", "daemonsets", "apps", s.namespace),
                                      ("create", "clusterroles", "rbac.authorization.k8s.io", None),
                                      ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None)):
        try:
            ok = kube.can_i(verb=verb, resource=resource, group=group, namespace=ns)
            out.append(Check(f"may {verb} {resource}", ok, "allowed" if ok else
                             f"RBAC denies {verb} {resource}" + (f" in {ns}" if ns else "")))
        except ClientError as exc:
            out.append(Check(f"may {verb} {resource}", False, _reason(exc)))
    if s.backend_user:
        name, key = _credentials_ref(s)
        try:
            secret = kube.get(kind="Secret", name=name, namespace=s.namespace)
            have = set((secret.get("data") or {}) | (secret.get("stringData") or {}))
            out.append(Check(f"Secret {name}", key in have, f"has key {key}" if key in have else
                             f"Secret {s.namespace}/{name} lacks key {key}"))
        except NotFound:
            out.append(Check(f"Secret {name}", False, f"Secret {s.namespace}/{name} (key {key}) does not exist: "
                             "the collectors read the store's password from it"))
        except ClientError as exc:
            out.append(Check(f"Secret {name}", False, _reason(exc)))
    return out


# -------------------------------------------------------------------------------------------- deploy


def plan_deploy(lc: Logging) -> Result:
    """Plan mode: the server-side dry run of every manifest where there is a cluster."""
    s = lc.settings
    ms = render_manifests(s)
    if not s.has_cluster:
        return Result(summary=f"target {s.target} has no cluster: the {len(ms)} manifests above are not applied",
                      outcome="planned", rows=[{**r, "action": "create or update (not dry-run: no cluster)"}
                                               for r in _rows(ms)], details={"manifests": ms})
    kube = lc.kube
    rows = []
    ns_missing = not kube.namespace_exists(name=s.namespace)
    if ns_missing:
        rows.append({"kind": "Namespace", "name": s.namespace, "namespace": "(cluster)", "action": "create"})
    # without the namespace the namespaced objects cannot be dry-run; the cluster-scoped ones can
    dry_ms = [m for m in ms if not ns_missing or "namespace" not in m["metadata"]]
    dry = kube.apply(dry_ms, namespace=s.namespace, dry_run=True)
    for m in ms:
        try:
            kube.get(kind=m["kind"], name=m["metadata"]["name"], namespace=m["metadata"].get("namespace"),
                     api_version=m["apiVersion"])
            action = "update (server-side apply)"
        except NotFound:
            action = "create"
        rows.append({"kind": m["kind"], "name": m["metadata"]["name"],
                     "namespace": m["metadata"].get("namespace", "(cluster)"), "action": action,
                     "dry run": "accepted by the server" if m in dry_ms else "namespace missing: not dry-run"})
    return Result(summary=f"{len(ms)} objects; server-side dry run accepted {len(dry)}", outcome="planned",
                  rows=rows, details={"manifests": ms, "dry_run": dry})


def _daemonset_state(ds: Mapping[str, Any]) -> tuple[bool, str]:
    st, gen = ds.get("status") or {}, int((ds.get("metadata") or {}).get("generation") or 0)
    want = int(st.get("desiredNumberScheduled") or 0)
    ready, updated = int(st.get("numberReady") or 0), int(st.get("updatedNumberScheduled") or 0)
    observed = int(st.get("observedGeneration") or 0)
    done = observed >= gen and want > 0 and ready == want and updated == want
    return done, f"desired {want}, ready {ready}, updated {updated}, observedGeneration {observed}/{gen}"


def wait_daemonset(kube: Any, *, namespace: str, name: str = APP, timeout: float = 300.0,
                   poll: float = 0.5) -> dict[str, Any]:
    """Wait until every scheduled collector is updated and Ready; the DaemonSet, or TimedOut."""
    deadline = time.monotonic() + timeout
    while True:
        ds = kube.get(kind="DaemonSet", name=name, namespace=namespace)
        done, state = _daemonset_state(ds)
        if done:
            return ds
        if time.monotonic() >= deadline:
            raise TimedOut(f"DaemonSet {namespace}/{name} not ready after {timeout:g} s: {state}")
        time.sleep(poll)


def deploy(lc: Logging) -> Result:
    """Apply the manifests (server-side apply) and wait until a collector is Ready on every node."""
    s = lc.settings
    if not s.has_cluster:
        return Result(summary=f"target {s.target} has no cluster: nothing deployed", outcome="skipped")
    t0 = time.monotonic()
    created = lc.kube.ensure_namespace(name=s.namespace)
    applied = lc.kube.apply(render_manifests(s), namespace=s.namespace)
    ds = wait_daemonset(lc.kube, namespace=s.namespace, timeout=s.timeout)
    _, state = _daemonset_state(ds)
    rows = [{"kind": o.get("kind"), "name": (o.get("metadata") or {}).get("name"),
             "resourceVersion": (o.get("metadata") or {}).get("resourceVersion")} for o in applied]
    return Result(summary=f"applied {len(applied)} objects" + (f" (namespace {s.namespace} created)" if created else "")
                  + f"; DaemonSet ready in {time.monotonic() - t0:.1f} s: {state}", outcome="changed", rows=rows,
                  details={"status": ds.get("status") or {}})


# -------------------------------------------------------------------------------------- verification


def _ready(pod: Mapping[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def collectors_on_every_node(lc: Logging) -> Result:
    """One Ready collector per schedulable node; the nodes without one are named."""
    s = lc.settings
    if not s.has_cluster:
        return Result(summary=f"target {s.target} has no cluster: not checked", outcome="skipped")
    kube = lc.kube
    nodes = kube.list_objects(kind="Node")
    pods = kube.list_objects(kind="Pod", namespace=s.namespace,
                             selector=",".join(f"{k}={v}" for k, v in SELECTOR.items()))
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for p in pods:
        if (p.get("metadata") or {}).get("deletionTimestamp"):
            continue
        by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
    rows, missing = [], []
    for n in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = n["metadata"]["name"]
        if (n.get("spec") or {}).get("unschedulable"):
            rows.append({"node": name, "collector": "", "ready": "", "status": "cordoned: not expected"})
            continue
        here = by_node.get(name, [])
        ready = [p for p in here if _ready(p)]
        status = "ok" if len(ready) == 1 else ("NO READY COLLECTOR" if not ready else f"{len(ready)} collectors")
        if len(ready) != 1:
            missing.append(name)
        rows.append({"node": name, "collector": ", ".join(p["metadata"]["name"] for p in here) or "(none)",
                     "ready": f"{len(ready)}/{len(here)}", "status": status})
    expected = len([r for r in rows if r["status"] != "cordoned: not expected"])
    ok = not missing and expected > 0
    summary = (f"{expected} schedulable node(s), one Ready collector on each" if ok else
               f"{len(missing)} of {expected} node(s) without exactly one Ready collector: {', '.join(missing)}"
               if missing else "no schedulable node")
    if not s.applying:  # nothing was deployed by this run: show how things stand, judge nothing
        return Result(summary=f"plan mode, not judged (now: {summary})", outcome="skipped", rows=rows,
                      details={"nodes": expected, "missing": missing})
    return Result(summary=summary, outcome="ok" if ok else "failed", rows=rows,
                  details={"nodes": expected, "missing": missing})


@dataclass
class Marker:
    """The marker line a short-lived pod prints: ``opsbook log marker request_id=<id>``."""

    request_id: str
    pod: str
    namespace: str
    emitted_at: _dt.datetime
    line: str = ""
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def marker_line(request_id: str) -> str:
    return f"opsbook log marker request_id={request_id}"


def new_request_id() -> str:
    return "opsbook-" + _random.token_hex(8)


def marker_pod(settings: Settings, request_id: str) -> dict[str, Any]:
    """A pod that prints the marker line once and exits."""
    name = f"{MARKER_LABEL}-{request_id.rsplit('-', 1)[-1][:10]}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {"app": MARKER_LABEL, "opsbook.io/request-id": request_id,
                                "app.kubernetes.io/managed-by": "opsbook"}},
        "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": 300, "automountServiceAccountToken": False,
                 "containers": [{"name": "marker", "image": settings.marker_image,
                                 "command": ["sh", "-c", f"echo '{marker_line(request_id)}'; sleep 2"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                               "limits": {"memory": "32Mi"}}}]},
    }


def plan_marker(lc: Logging) -> Result:
    pod = marker_pod(lc.settings, "opsbook-<random>")
    return Result(summary=f"would run pod {lc.settings.namespace}/{pod['metadata']['name']} printing "
                  f"'{marker_line('<random id>')}', then search the store for it", outcome="planned",
                  details={"pod": pod})


def emit_marker(lc: Logging, request_id: str | None = None) -> Result:
    """Run the short-lived pod that prints the marker line (apply mode, on a cluster)."""
    s = lc.settings
    if not s.has_cluster:
        return Result(summary=f"target {s.target} has no cluster: no marker pod", outcome="skipped")
    rid = request_id or new_request_id()
    pod = marker_pod(s, rid)
    lc.kube.apply([pod], namespace=s.namespace)
    m = Marker(request_id=rid, pod=pod["metadata"]["name"], namespace=s.namespace,
               emitted_at=_dt.datetime.now(_dt.UTC), line=marker_line(rid))
    return Result(summary=f"pod {s.namespace}/{m.pod} prints '{m.line}'", outcome="changed", value=m,
                  details={"request_id": rid, "pod": m.pod, "emitted_at": m.emitted_at.isoformat()})


def marker_searchable(lc: Logging, marker: Any, *, poll: float = 1.0) -> Result:
    """The marker must be found in the store within ``marker_timeout`` seconds; the time it took is shown.
    The marker pod is deleted afterwards, found or not."""
    s = lc.settings
    if not isinstance(marker, Marker):
        why = "plan mode" if not s.applying else f"target {s.target} has no cluster"
        return Result(summary=f"no marker was emitted ({why}): not checked", outcome="skipped")
    store = lc.store()
    if store is None:
        return Result(summary="no log store URL: the marker cannot be searched", outcome="failed")
    start = marker.emitted_at - _dt.timedelta(minutes=5)
    t0 = time.monotonic()
    deadline = t0 + s.marker_timeout
    found, tries, last_error = [], 0, ""
    while True:
        tries += 1
        try:
            found = store.logs_with_request_id(marker.request_id, start,
                                               _dt.datetime.now(_dt.UTC) + _dt.timedelta(minutes=5), limit=10)
            last_error = ""
        except ClientError as exc:
            last_error = _reason(exc)
        if found or time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    took = (_dt.datetime.now(_dt.UTC) - marker.emitted_at).total_seconds()
    if lc.kube is not None:
        try:
            marker.deleted = lc.kube.delete(kind="Pod", name=marker.pod, namespace=marker.namespace)
        except ClientError:
            marker.deleted = False
    details = {"request_id": marker.request_id, "pod": marker.pod, "searches": tries, "seconds": round(took, 1)}
    if found:
        return Result(summary=f"request_id={marker.request_id} searchable in {store.kind} {took:.1f} s after the "
                      f"pod was started ({tries} search(es))", outcome="ok", rows=[x.row() for x in found],
                      details=details)
    return Result(summary=f"marker request_id={marker.request_id} from pod {marker.namespace}/{marker.pod} was not "
                  f"found in {store.kind} at {store.url} after {s.marker_timeout:g} s ({tries} searches"
                  + (f"; last error: {last_error}" if last_error else "") + f"): check the collector "
                  f"(kubectl -n {s.namespace} logs ds/{APP}) and its output to the store",
                  outcome="failed", details=details)


def _window(minutes: int) -> tuple[_dt.datetime, _dt.datetime]:
    end = _dt.datetime.now(_dt.UTC)
    return end - _dt.timedelta(minutes=minutes), end


def counts_per_service(lc: Logging) -> Result:
    """Log lines per service over the last ``window_minutes``; expected services with none are flagged."""
    s = lc.settings
    store = lc.store()
    if store is None:
        return Result(summary=f"target {s.target} has no log store URL: not checked", outcome="skipped")
    start, end = _window(s.window_minutes)
    counts = store.count_per_service(start, end)
    names = list(dict.fromkeys([*s.services, *sorted(counts)]))
    rows, silent = [], []
    for name in names:
        n = counts.get(name, 0)
        expected = name in s.services
        if expected and n == 0:
            silent.append(name)
        rows.append({"service": name or "(no app label)", "lines": n, "expected": "yes" if expected else "",
                     "status": "NO LOGS" if (expected and n == 0) else "ok"})
    total = sum(counts.values())
    summary = (f"{total} line(s) from {len([c for c in counts.values() if c])} service(s) in the last "
               f"{s.window_minutes} min")
    if silent:
        summary += f"; no logs from: {', '.join(silent)}"
    return Result(summary=summary, outcome="failed" if silent else "ok", rows=rows,
                  details={"counts": counts, "silent": silent, "start": start.isoformat(), "end": end.isoformat()})


def search(lc: Logging) -> Result:
    """The operator's search: the logs of ``search_service`` and/or those holding ``search_request_id``."""
    s = lc.settings
    if not (s.search_service or s.search_request_id):
        return Result(summary="no search asked for (search_service and search_request_id are empty)",
                      outcome="skipped")
    store = lc.store()
    if store is None:
        return Result(summary=f"target {s.target} has no log store URL: nothing to search", outcome="skipped")
    start, end = _window(s.window_minutes)
    if s.search_request_id:
        lines = store.logs_with_request_id(s.search_request_id, start, end, limit=s.search_limit)
        if s.search_service:
            lines = [x for x in lines if x.service == s.search_service]
    else:
        lines = store.logs_for_service(s.search_service, start, end, limit=s.search_limit)
    what = " and ".join(x for x in (f"service {s.search_service}" if s.search_service else "",
                                    f"request id {s.search_request_id}" if s.search_request_id else "") if x)
    return Result(summary=f"{len(lines)} line(s) for {what} in the last {s.window_minutes} min"
                  + ("" if lines else ": nothing found"), outcome="ok", rows=[x.row() for x in lines],
                  details={"service": s.search_service, "request_id": s.search_request_id, "found": len(lines)})


def document_for(line: str, *, namespace: str, pod: str, container: str, app: str, node: str = "node-1",
                 when: _dt.datetime | None = None, stream: str = "stdout") -> dict[str, Any]:
    """The document the collector's ``opensearch``/``es`` output writes for one container line (CRI
    parser + kubernetes filter + ``Logstash_Format``): what a search of the store finds."""
    when = when or _dt.datetime.now(_dt.UTC)
    return {"@timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "time":
            when.isoformat().replace("+00:00", "Z"), "stream": stream, "_p": "F", "log": line,
            "kubernetes": {"pod_name": pod, "namespace_name": namespace, "container_name": container,
                           "host": node, "labels": {"app": app}, "container_image": f"{app}:test",
                           "pod_id": "00000000-0000-0000-0000-000000000000"}}


def index_for(settings: Settings, when: _dt.datetime | None = None) -> str:
    """The daily index ``Logstash_Format`` writes to: ``<index_prefix>-YYYY.MM.DD``."""
    return f"{settings.index_prefix}-{(when or _dt.datetime.now(_dt.UTC)).strftime('%Y.%m.%d')}"
