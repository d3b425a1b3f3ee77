"""Rendering the collector: Fluent Bit's configuration and the manifests that run it on every node,
and the documents its output writes (what a search of the store finds). Pure: nothing here talks to
the cluster or the store, so plan mode on a target without either still shows all of it."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any
from urllib.parse import urlsplit

from opsbook.errors import Invalid
from opsbook.ops.base import Code, Result, step
from opsbook.ops.centralized_logging.context import (
    APP,
    CONFIG_FILE,
    CONFIG_MAP,
    CREDENTIALS_KEY,
    CREDENTIALS_SECRET,
    HTTP_PORT,
    STATE_DIR,
    Context,
)

_K8S_REF = re.compile(r"^k8s:(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<key>.+)$")


def _host_port(url: str, kind: str) -> tuple[str, int, bool, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise Invalid(f"log store URL {url!r} has no host")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else (3100 if kind == "loki" else 9200))
    return parts.hostname, port, tls, parts.path.rstrip("/")


def render_config(ctx: Context) -> dict[str, Any]:
    """Fluent Bit's configuration (YAML format) as a dict: service, one tail input, the kubernetes
    filter, one output for the chosen backend. Data, not text, so that tests parse it back and check
    what matters instead of comparing strings."""
    ctx.validate()
    s = ctx.settings
    host, port, tls, path = _host_port(ctx.sink_url, ctx.kind)
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
    if ctx.kind == "loki":
        output.update({
            "name": "loki", "uri": (path or "") + "/loki/api/v1/push",
            "labels": "job=fluent-bit, namespace=$kubernetes['namespace_name'], pod=$kubernetes['pod_name'], "
                      "container=$kubernetes['container_name'], app=$kubernetes['labels']['app']",
            "remove_keys": "kubernetes", "line_format": "json",
        })
    else:
        output.update({
            "name": "opensearch" if ctx.kind == "opensearch" else "es",
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


def config_text(ctx: Context) -> str:
    import yaml

    return yaml.safe_dump(render_config(ctx), sort_keys=False, default_flow_style=False)


def credentials_ref(ctx: Context) -> tuple[str, str]:
    """(Secret, key) the DaemonSet reads the password from: the ``k8s:`` reference itself when it
    names a Secret in the collector's namespace, else ``log-store-credentials`` / ``password``."""
    s = ctx.settings
    m = _K8S_REF.match(s.backend_password or "")
    if m and m.group("ns") == s.namespace:
        return m.group("name"), m.group("key")
    return CREDENTIALS_SECRET, CREDENTIALS_KEY


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "log-collector",
            "app.kubernetes.io/part-of": "centralized-logging", "app.kubernetes.io/managed-by": "opsbook"}


SELECTOR = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "log-collector"}


def render_manifests(ctx: Context) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap and DaemonSet of the collector."""
    import hashlib

    s = ctx.settings
    ns, labels = s.namespace, _labels()
    text = config_text(ctx)
    env: list[dict[str, Any]] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    if s.backend_user:
        secret, key = credentials_ref(ctx)
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
         "metadata": {"name": ctx.cluster_role, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": ctx.cluster_role, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ctx.cluster_role},
         "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "namespace": ns, "labels": labels},
         "data": {CONFIG_FILE: text}},
        daemonset,
    ]


def rows_of(ms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": m["kind"], "name": m["metadata"]["name"],
             "namespace": m["metadata"].get("namespace", "(cluster)")} for m in ms]


@step("collector-configuration", "Collector configuration")
def configuration(ctx: Context) -> Result:
    """The collector's configuration (inputs, filters, outputs), shown as the file the ConfigMap holds."""
    s = ctx.settings
    cfg = render_config(ctx)
    pipe = cfg["pipeline"]
    rows = [{"section": sec[:-1], "plugin": p["name"],
             "what": {"tail": f"{p.get('path')} ({p.get('multiline.parser')}), storage {p.get('storage.type')}",
                      "kubernetes": "namespace, pod, container, labels from the API",
                      "opensearch": f"{p.get('host')}:{p.get('port')} index {p.get('logstash_prefix')}-YYYY.MM.DD",
                      "es": f"{p.get('host')}:{p.get('port')} index {p.get('logstash_prefix')}-YYYY.MM.DD",
                      "loki": f"{p.get('host')}:{p.get('port')} labels {p.get('labels')}"}.get(p["name"], "")}
            for sec in ("inputs", "filters", "outputs") for p in pipe[sec]]
    return Result(summary=f"Fluent Bit YAML configuration: tail -> kubernetes -> {pipe['outputs'][0]['name']} "
                  f"({ctx.sink_url}); buffer {s.buffer_size} on disk, retried without limit",
                  rows=rows, details={"config": cfg, "format": "fluent-bit YAML"}, value=cfg,
                  show=[Code(config_text(ctx), "yaml")])


@step("render-manifests", "Render the manifests")
def manifests(ctx: Context) -> Result:
    """The collector's manifests, shown as YAML: what plan mode dry-runs and apply mode applies."""
    import yaml

    ms = render_manifests(ctx)
    creds = (f"password by secretKeyRef {'/'.join(credentials_ref(ctx))}" if ctx.settings.backend_user
             else "no credentials")
    return Result(summary=f"{len(ms)} manifests; {creds}", rows=rows_of(ms), details={"manifests": ms}, value=ms,
                  show=[Code(yaml.safe_dump_all(ms, sort_keys=False, default_flow_style=False), "yaml")])


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


def index_for(index_prefix: str, when: _dt.datetime | None = None) -> str:
    """The daily index ``Logstash_Format`` writes to: ``<index_prefix>-YYYY.MM.DD``."""
    return f"{index_prefix}-{(when or _dt.datetime.now(_dt.UTC)).strftime('%Y.%m.%d')}"
