"""What the run deploys and against what: the settings step, and the Deployment, Service and Ingress
rendered from the settings (no chart: see the package docstring for why).

No credential is ever rendered: the pod reads the database password and the S3 keys from Secrets
(``secretKeyRef``), and the backend store URI holds ``$(MLFLOW_DB_PASSWORD)``, which Kubernetes
expands inside the container.
"""

from __future__ import annotations

import re
from typing import Any

from opsbook.ops.base import Code, Result, step
from opsbook.ops.mlflow_tracking_server.context import APP, PORT, VERIFY_TAG, Context

#: secret setting -> (Secret name, key) the pod reads when the reference is not a Secret in the namespace
DEFAULT_SECRETS = {
    "db_password": ("mlflow-db", "password"),
    "s3_access_key": ("mlflow-s3", "access-key-id"),
    "s3_secret_key": ("mlflow-s3", "secret-access-key"),
}
_K8S_REF = re.compile(r"^k8s:(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<key>.+)$")


def artifacts_destination(settings: Any) -> str:
    prefix = settings.s3_prefix.strip("/")
    return f"s3://{settings.s3_bucket}" + (f"/{prefix}" if prefix else "")


def backend_store_uri(settings: Any) -> str:
    """As the container sees it, before Kubernetes expands ``$(MLFLOW_DB_PASSWORD)``."""
    s = settings
    return f"postgresql://{s.db_user}:$(MLFLOW_DB_PASSWORD)@{s.db_host}:{s.db_port}/{s.db_name}"


@step("settings", "Settings")
def settings_report(ctx: Context) -> Result:
    """Which server is verified, and how: shown before anything runs, with the secret references
    (never their values)."""
    s = ctx.settings
    local = ctx.local
    where = {"cluster": f"deployed to namespace {s.namespace} on the target's cluster, verified through "
                        f"{ctx.configured_uri or '(tracking_uri not set)'}",
             "url": f"the server at {ctx.configured_uri} is verified as it is (no cluster: nothing is deployed)",
             "embedded": f"embedded server at {local.url if local else ''} with its state in "
                         f"{local.state_dir if local else ''}"}[ctx.server_mode]
    rows = [{"setting": "mode", "value": ctx.server_mode}, {"setting": "server", "value": where}]
    if not ctx.embedded:
        rows += [{"setting": "backend store", "value": f"postgresql://{s.db_user}@{s.db_host}:{s.db_port}/{s.db_name}"
                  if s.db_host else "(db_host empty: not checked)"},
                 {"setting": "database password", "value": s.db_password or "(none)"},
                 {"setting": "artifact store", "value": artifacts_destination(s) if s.s3_bucket else
                  "(s3_bucket empty: not checked)"},
                 {"setting": "S3 endpoint", "value": ctx.s3_endpoint or f"AWS S3 ({s.s3_region})"},
                 {"setting": "S3 keys", "value": f"{s.s3_access_key or '(default chain)'}, "
                                                 f"{s.s3_secret_key or '(default chain)'}"}]
    elif local is not None:
        rows += [{"setting": "backend store", "value": local.backend_store_uri},
                 {"setting": "artifact store", "value": str(local.artifacts_dir)}]
    rows.append({"setting": "probe experiment", "value": "deleted afterwards" if s.cleanup else
                 f"kept, tagged {VERIFY_TAG}=true"})
    return Result(summary=f"{ctx.server_mode}: {where}", rows=rows,
                  details={"mode": ctx.server_mode, "tracking_uri": ctx.configured_uri, "namespace": s.namespace})


def secret_key_ref(settings: Any, param: str) -> tuple[str, str, str]:
    """(Secret name, key, note) for a secret setting: the k8s: reference itself when it names a
    Secret in the deployment's namespace, else the conventional Secret."""
    ref = getattr(settings, param)
    m = _K8S_REF.match(ref or "")
    if m and m.group("ns") == settings.namespace:
        return m.group("name"), m.group("key"), f"from {ref}"
    name, key = DEFAULT_SECRETS[param]
    return name, key, (f"{ref} is not a Secret in namespace {settings.namespace}: the pod reads "
                       f"Secret {name}, key {key}" if ref else f"Secret {name}, key {key}")


def required_secrets(settings: Any) -> dict[str, list[str]]:
    """Secret name -> keys the Deployment reads."""
    out: dict[str, list[str]] = {}
    for param in DEFAULT_SECRETS:
        if param != "db_password" and not getattr(settings, param):
            continue
        name, key, _ = secret_key_ref(settings, param)
        out.setdefault(name, []).append(key)
    return out


def allowed_hosts(settings: Any) -> list[str]:
    """Host headers MLflow's DNS-rebinding protection accepts: the Service's names, loopback (for a
    port-forward) and the ingress host. ``/health`` is exempt, so probes work whatever the list."""
    ns = settings.namespace
    hosts = [APP, f"{APP}.{ns}", f"{APP}.{ns}.svc", f"{APP}.{ns}.svc.cluster.local", "localhost", "127.0.0.1"]
    if settings.ingress_host:
        hosts.append(settings.ingress_host)
    return [x for h in hosts for x in (h, f"{h}:*")]


def render_manifests(ctx: Context) -> list[dict[str, Any]]:
    """Deployment, Service and (with ``ingress_host``) Ingress for the tracking server."""
    s = ctx.settings
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "tracking-server",
              "app.kubernetes.io/part-of": "ml-platform", "app.kubernetes.io/managed-by": "opsbook"}
    selector = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "tracking-server"}
    db_secret, db_key, _ = secret_key_ref(s, "db_password")
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": db_secret, "key": db_key}}},
    ]
    if s.s3_access_key:
        name, key, _ = secret_key_ref(s, "s3_access_key")
        env.append({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    if s.s3_secret_key:
        name, key, _ = secret_key_ref(s, "s3_secret_key")
        env.append({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    env.append({"name": "AWS_DEFAULT_REGION", "value": s.s3_region})
    if ctx.s3_endpoint:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": ctx.s3_endpoint})
    env.append({"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"})
    args = ["server", "--host", "0.0.0.0", "--port", str(PORT), "--workers", "2",
            "--backend-store-uri", backend_store_uri(s),
            "--artifacts-destination", artifacts_destination(s),
            "--allowed-hosts", ",".join(allowed_hosts(s))]
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "namespace": s.namespace, "labels": labels},
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{
                        "name": APP, "image": s.image, "imagePullPolicy": "IfNotPresent",
                        "command": ["mlflow"], "args": args, "env": env,
                        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                        # the first start creates the schema (alembic migrations): give it time
                        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
                        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
                        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                      "limits": {"memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": APP, "namespace": s.namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]},
    }
    out = [deployment, service]
    if s.ingress_host:
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": APP, "namespace": s.namespace, "labels": labels},
            "spec": {"rules": [{"host": s.ingress_host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": APP, "port": {"name": "http"}}}}]}}]},
        })
    return out


def _yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False)


@step("render-manifests", "Render the manifests")
def manifests(ctx: Context) -> Result:
    """The manifests, shown: what will run in the cluster, and where each credential comes from."""
    ms = render_manifests(ctx)
    notes = [secret_key_ref(ctx.settings, p)[2] for p in DEFAULT_SECRETS if getattr(ctx.settings, p)]
    rows = [{"kind": m["kind"], "name": m["metadata"]["name"], "namespace": m["metadata"]["namespace"]}
            for m in ms]
    return Result(summary=f"{len(ms)} manifests; credentials only by secretKeyRef ({'; '.join(notes)})",
                  rows=rows, details={"manifests": ms}, value=ms, show=[Code(_yaml(ms), "yaml")])
