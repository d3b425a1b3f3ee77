"""The `mlflow-tracking-server` runbook's logic: MLflow with a PostgreSQL backend store and an S3
artifact store, deployed to Kubernetes, then verified by really tracking an experiment and a model.

Why manifests rendered here and not a Helm chart: the deployment is one Deployment, one Service and
an optional Ingress, and the part that matters (the ``mlflow server`` command line, the credentials
taken from Secrets by ``secretKeyRef``) is exactly what a chart would hide behind values. Rendering
plain dicts keeps that visible in the plan record, needs no chart repository (community MLflow charts
are third-party and change their values often), and is applied with server-side apply through
``clients.kube``, so a re-run is idempotent and the plan is the server's own dry run.

Three ways a run finds its server (``Settings.mode``):

* ``cluster``   the target has a cluster: the manifests are applied there; verification goes through
                ``tracking_uri`` (an ingress or a port-forward) or the target's ``mlflow_uri``.
* ``url``       no cluster, but a ``tracking_uri`` (or the target's ``mlflow_uri``): that server is
                verified as it is (nothing is deployed).
* ``embedded``  the ``local`` default: an ``mlflow server`` on loopback with a SQLite database and
                an artifact folder under ``.opsbook/mlflow`` (``$OPSBOOK_MLFLOW_STATE``), started in
                apply mode or reused if one answers on the port. No PostgreSQL or S3 there: those
                checks are skipped with the reason, and the local equivalents are checked instead.

No credential is ever rendered into a manifest: the Deployment reads the database password and the
S3 keys from Kubernetes Secrets (``secretKeyRef``), and the backend store URI is built by Kubernetes'
``$(MLFLOW_DB_PASSWORD)`` expansion inside the container. The runbook itself resolves the same
secret references only to check connectivity (preflight) and to read the database back
(verification); every resolved value is registered with the redactor by the ``secret`` callable.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets as _random
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Invalid, NotFound, OpsbookError
from opsbook.notebook.display import show_code, show_link
from opsbook.results import Check, Result

APP = "mlflow"
PORT = 5000
VERIFY_MODEL = "opsbook-verification"
VERIFY_ALIAS = "verified"
VERIFY_TAG = "opsbook.verification"
DEFAULT_SECRETS = {  # parameter -> (Secret name, key) used when the reference is not a k8s: one
    "db_password": ("mlflow-db", "password"),
    "s3_access_key": ("mlflow-s3", "access-key-id"),
    "s3_secret_key": ("mlflow-s3", "secret-access-key"),
}
_K8S_REF = re.compile(r"^k8s:(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<key>.+)$")

SecretFn = Callable[..., str]


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """The runbook's parameters, as this module uses them (secret parameters hold references)."""

    namespace: str = "ml-platform"
    image: str = "ghcr.io/mlflow/mlflow:v3.17.2"
    replicas: int = 1
    db_host: str = "postgresql.ml-platform.svc.cluster.local"
    db_port: int = 5432
    db_name: str = "mlflow"
    db_user: str = "mlflow"
    db_password: str = "k8s:ml-platform/mlflow-db/password"
    s3_bucket: str = "mlflow-artifacts"
    s3_prefix: str = "mlflow"
    s3_access_key: str = "k8s:ml-platform/mlflow-s3/access-key-id"
    s3_secret_key: str = "k8s:ml-platform/mlflow-s3/secret-access-key"
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    ingress_host: str = ""
    tracking_uri: str = ""
    local_port: int = 5055
    cleanup: bool = False
    timeout: float = 300.0
    # derived
    mode: str = "embedded"  # cluster | url | embedded
    target: str = "local"
    applying: bool = False

    @property
    def artifacts_destination(self) -> str:
        prefix = self.s3_prefix.strip("/")
        return f"s3://{self.s3_bucket}" + (f"/{prefix}" if prefix else "")

    @property
    def backend_store_uri(self) -> str:
        """As the container sees it, before Kubernetes expands ``$(MLFLOW_DB_PASSWORD)``."""
        return (f"postgresql://{self.db_user}:$(MLFLOW_DB_PASSWORD)@{self.db_host}:{self.db_port}/{self.db_name}")


def settings_from(params: Mapping[str, Any], target: Any, *, applying: bool | None = None) -> Settings:
    """Build :class:`Settings` from the validated parameters and the target (``opsbook.targets.Target``)."""
    known = {f for f in Settings.__dataclass_fields__ if f not in ("mode", "target", "applying")}
    values = {k: params[k] for k in known if k in params and params[k] is not None}
    s3_endpoint = values.get("s3_endpoint") or getattr(target, "s3_endpoint", None) or ""
    tracking_uri = values.get("tracking_uri") or getattr(target, "mlflow_uri", None) or ""
    has_cluster = bool(getattr(target, "has_cluster", False))
    mode = "cluster" if has_cluster else ("url" if tracking_uri else "embedded")
    values.update(s3_endpoint=s3_endpoint, tracking_uri=tracking_uri.rstrip("/"))
    return Settings(**values, mode=mode, target=getattr(target, "name", "local"),
                    applying=bool(params.get("mode") == "apply") if applying is None else applying)


def default_state_dir() -> Path:
    """The embedded server's state folder: ``$OPSBOOK_MLFLOW_STATE`` or ``.opsbook/mlflow`` at the project root."""
    from opsbook.catalog import project_root
    from opsbook.clients.mlflow import ENV_STATE_DIR

    return Path(os.environ.get(ENV_STATE_DIR) or project_root() / ".opsbook" / "mlflow")


@dataclass
class Tracking:
    """Settings plus the clients the runbook talks through (each made on first use; tests pass their own)."""

    settings: Settings
    secret: SecretFn | None = None  # resolves a parameter's reference: ``secret(name, k8s=reader)``
    kube: Any = None  # clients.kube.Kube on a cluster target
    local: Any = None  # clients.mlflow.LocalServer in embedded mode
    _mlflow: Any = None
    _s3: Any = None
    _db: Any = None

    # -- secrets and clients ---------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        if self.secret is None:
            raise OpsbookError(f"no secret resolver: cannot resolve parameter {name!r}")
        reader = self.kube.read_secret_key if self.kube is not None else None
        return self.secret(name, k8s=reader)

    @property
    def tracking_uri(self) -> str:
        s = self.settings
        if s.mode == "embedded":
            return self.local.url
        if s.tracking_uri:
            return s.tracking_uri
        raise Invalid(f"no tracking URI: on a cluster give parameter tracking_uri (the ingress URL, or a "
                      f"port-forward: kubectl -n {s.namespace} port-forward svc/{APP} {PORT}) or set "
                      f"mlflow_uri in the target")

    def mlflow(self) -> Any:
        if self._mlflow is None:
            from opsbook.clients.mlflow import Mlflow

            self._mlflow = Mlflow(self.tracking_uri, timeout=min(60.0, self.settings.timeout))
        return self._mlflow

    def s3(self) -> Any:
        """The S3 client, or None when there is no bucket to check (embedded mode, or s3_bucket empty)."""
        s = self.settings
        if s.mode == "embedded" or not s.s3_bucket:
            return None
        if self._s3 is None:
            from opsbook.clients.s3 import S3

            key = self.resolve("s3_access_key") if s.s3_access_key else None
            secret = self.resolve("s3_secret_key") if s.s3_secret_key else None
            self._s3 = S3(endpoint_url=s.s3_endpoint or None, access_key=key, secret_key=secret, region=s.s3_region)
        return self._s3

    def db(self) -> Any:
        """The PostgreSQL client, or None when there is no database to check (embedded, or db_host empty)."""
        s = self.settings
        if s.mode == "embedded" or not s.db_host:
            return None
        if self._db is None:
            from opsbook.clients.postgres import Postgres

            password = self.resolve("db_password") if s.db_password else None
            self._db = Postgres(host=s.db_host, port=s.db_port, dbname=s.db_name, user=s.db_user, password=password,
                                connect_timeout=int(min(10, max(1, s.timeout))))
        return self._db


def configure(params: Mapping[str, Any], target: Any, *, secret: SecretFn | None = None) -> Result:
    """The runbook's settings and clients: which server is verified, and how (the settings cell)."""
    from opsbook.clients.mlflow import LocalServer

    s = settings_from(params, target)
    kube = None
    if s.mode == "cluster":
        from opsbook.clients.kube import Kube

        kube = Kube(kubeconfig=getattr(target, "kubeconfig", None), context=getattr(target, "kube_context", None))
    local = LocalServer(default_state_dir(), port=s.local_port) if s.mode == "embedded" else None
    t = Tracking(settings=s, secret=secret, kube=kube, local=local)
    where = {"cluster": f"deployed to namespace {s.namespace} on the target's cluster, verified through "
                        f"{s.tracking_uri or '(tracking_uri not set)'}",
             "url": f"the server at {s.tracking_uri} is verified as it is (no cluster: nothing is deployed)",
             "embedded": f"embedded server at {local.url if local else ''} with its state in "
                         f"{local.state_dir if local else ''}"}[s.mode]
    rows = [{"setting": "mode", "value": s.mode}, {"setting": "server", "value": where}]
    if s.mode != "embedded":
        rows += [{"setting": "backend store", "value": f"postgresql://{s.db_user}@{s.db_host}:{s.db_port}/{s.db_name}"
                  if s.db_host else "(db_host empty: not checked)"},
                 {"setting": "database password", "value": s.db_password or "(none)"},
                 {"setting": "artifact store", "value": s.artifacts_destination if s.s3_bucket else
                  "(s3_bucket empty: not checked)"},
                 {"setting": "S3 endpoint", "value": s.s3_endpoint or f"AWS S3 ({s.s3_region})"},
                 {"setting": "S3 keys", "value": f"{s.s3_access_key or '(default chain)'}, "
                                                 f"{s.s3_secret_key or '(default chain)'}"}]
    elif local is not None:
        rows += [{"setting": "backend store", "value": local.backend_store_uri},
                 {"setting": "artifact store", "value": str(local.artifacts_dir)}]
    rows.append({"setting": "probe experiment", "value": "deleted afterwards" if s.cleanup else
                 f"kept, tagged {VERIFY_TAG}=true"})
    return Result(summary=f"{s.mode}: {where}", rows=rows, value=t,
                  details={"mode": s.mode, "tracking_uri": s.tracking_uri, "namespace": s.namespace})


# ----------------------------------------------------------------------------------------- manifests


def _secret_key_ref(settings: Settings, param: str) -> tuple[str, str, str]:
    """(Secret name, key, note) for a secret parameter: the k8s: reference itself when it names a
    Secret in the deployment's namespace, else the conventional Secret."""
    ref = getattr(settings, param)
    m = _K8S_REF.match(ref or "")
    if m and m.group("ns") == settings.namespace:
        return m.group("name"), m.group("key"), f"from {ref}"
    name, key = DEFAULT_SECRETS[param]
    return name, key, (f"{ref} is not a Secret in namespace {settings.namespace}: the pod reads "
                       f"Secret {name}, key {key}" if ref else f"Secret {name}, key {key}")


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers MLflow's DNS-rebinding protection accepts: the Service's names, loopback (for a
    port-forward) and the ingress host. ``/health`` is exempt, so probes work whatever the list."""
    ns = settings.namespace
    hosts = [APP, f"{APP}.{ns}", f"{APP}.{ns}.svc", f"{APP}.{ns}.svc.cluster.local", "localhost", "127.0.0.1"]
    if settings.ingress_host:
        hosts.append(settings.ingress_host)
    return [x for h in hosts for x in (h, f"{h}:*")]


def render_manifests(settings: Settings) -> list[dict[str, Any]]:
    """Deployment, Service and (with ``ingress_host``) Ingress for the tracking server."""
    s = settings
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "tracking-server",
              "app.kubernetes.io/part-of": "ml-platform", "app.kubernetes.io/managed-by": "opsbook"}
    selector = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "tracking-server"}
    db_secret, db_key, _ = _secret_key_ref(s, "db_password")
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": db_secret, "key": db_key}}},
    ]
    if s.s3_access_key:
        name, key, _ = _secret_key_ref(s, "s3_access_key")
        env.append({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    if s.s3_secret_key:
        name, key, _ = _secret_key_ref(s, "s3_secret_key")
        env.append({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    env.append({"name": "AWS_DEFAULT_REGION", "value": s.s3_region})
    if s.s3_endpoint:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": s.s3_endpoint})
    env.append({"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"})
    args = ["server", "--host", "0.0.0.0", "--port", str(PORT), "--workers", "2",
            "--backend-store-uri", s.backend_store_uri,
            "--artifacts-destination", s.artifacts_destination,
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


def manifests(t: Tracking) -> Result:
    """Render the manifests and show them (the step that explains what will run in the cluster)."""
    ms = render_manifests(t.settings)
    notes = [_secret_key_ref(t.settings, p)[2] for p in DEFAULT_SECRETS if getattr(t.settings, p)]
    rows = [{"kind": m["kind"], "name": m["metadata"]["name"], "namespace": m["metadata"]["namespace"]}
            for m in ms]
    text = _yaml(ms)
    show_code(text)
    return Result(summary=f"{len(ms)} manifests; credentials only by secretKeyRef ({'; '.join(notes)})",
                  rows=rows, details={"manifests": ms}, value=ms)




# ------------------------------------------------------------------------------------------ preflight


def _skipped(name: str, reason: str) -> Check:
    return Check(name, True, f"skipped: {reason}")


def _fail_reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def preflight(t: Tracking) -> list[Check]:
    """The prerequisites: MLflow client, database, bucket, namespace and Secrets (or the local folder)."""
    s = t.settings
    checks: list[Check] = []
    try:
        checks.append(Check("MLflow client installed", True, f"mlflow {metadata.version('mlflow')}"))
    except metadata.PackageNotFoundError:
        checks.append(Check("MLflow client installed", False, "the mlflow package is not installed"))
    if s.mode == "embedded":
        checks += _embedded_preflight(t)
        return checks
    checks += _database_preflight(t)
    checks += _bucket_preflight(t)
    if s.mode == "cluster":
        checks += _cluster_preflight(t)
    else:
        checks.append(_skipped("namespace and Secrets", f"target {s.target} has no cluster: nothing is deployed"))
    return checks


def _embedded_preflight(t: Tracking) -> list[Check]:
    from opsbook.clients.mlflow import _port_taken

    local = t.local
    out = []
    if not t.settings.applying and not local.state_dir.exists():  # plan mode creates nothing
        parent = next(p for p in local.state_dir.parents if p.exists())
        ok = os.access(parent, os.W_OK | os.X_OK)
        out.append(Check("state folder writable", ok, f"{local.state_dir} can be created under {parent}" if ok
                         else f"{parent} is not writable: {local.state_dir} cannot be created"))
    else:
        try:
            local.state_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=local.state_dir, prefix=".probe-"):
                pass
            out.append(Check("state folder writable", True, str(local.state_dir)))
        except OSError as exc:
            out.append(Check("state folder writable", False, f"{local.state_dir}: {exc.strerror}"))
    if local.running():
        out.append(Check("embedded server port", True, f"an MLflow server answers at {local.url}: it is reused"))
    elif _port_taken(local.host, local.port):
        out.append(Check("embedded server port", False, f"{local.host}:{local.port} is taken by something that "
                         "is not an MLflow server: choose another local_port"))
    else:
        out.append(Check("embedded server port", True, f"{local.host}:{local.port} is free: the server "
                         + ("starts in the next steps" if t.settings.applying else "would start in apply mode")))
    reason = "the embedded server on target local uses SQLite and a local folder"
    out += [_skipped("PostgreSQL backend store", reason), _skipped("S3 bucket exists and is writable", reason),
            _skipped("namespace and Secrets", "target local has no cluster")]
    return out


def _database_preflight(t: Tracking) -> list[Check]:
    s = t.settings
    name = "PostgreSQL backend store"
    if not s.db_host:
        return [_skipped(name, "db_host is empty")]
    try:
        db = t.db()
        info = db.info()
    except (ClientError, OpsbookError) as exc:
        return [Check(name, False, _fail_reason(exc))]
    schema = (f"MLflow schema at revision {info['mlflow_schema']}" if info["mlflow_schema"] else
              "no MLflow schema yet: the server creates it on its first start")
    return [Check(name, True, f"PostgreSQL {info['server_version']} at {db.dsn}, connected as {info['user']}; "
                  f"{schema}", evidence=info)]


def _bucket_preflight(t: Tracking) -> list[Check]:
    s = t.settings
    if not s.s3_bucket:
        return [_skipped("S3 bucket exists and is writable", "s3_bucket is empty")]
    try:
        s3 = t.s3()
        if not s3.bucket_exists(s.s3_bucket):
            return [Check("S3 bucket exists", False, f"bucket {s.s3_bucket!r} does not exist on {s3.where}")]
    except (ClientError, OpsbookError) as exc:
        return [Check("S3 bucket exists", False, _fail_reason(exc))]
    out = [Check("S3 bucket exists", True, f"{s.s3_bucket} on {s3.where}")]
    try:
        probe = s3.probe(s.s3_bucket, s.s3_prefix)
        out.append(Check("S3 bucket writable", probe["deleted"], f"put, read back and deleted {probe['key']} "
                         f"in {probe['seconds']} s" if probe["deleted"] else
                         f"the probe object {probe['key']} could not be deleted", evidence=probe))
    except ClientError as exc:
        out.append(Check("S3 bucket writable", False, _fail_reason(exc)))
    return out


def required_secrets(settings: Settings) -> dict[str, list[str]]:
    """Secret name -> keys the Deployment reads."""
    out: dict[str, list[str]] = {}
    for param in DEFAULT_SECRETS:
        if param != "db_password" and not getattr(settings, param):
            continue
        name, key, _ = _secret_key_ref(settings, param)
        out.setdefault(name, []).append(key)
    return out


def _cluster_preflight(t: Tracking) -> list[Check]:
    s = t.settings
    kube = t.kube
    try:
        if not kube.namespace_exists(name=s.namespace):
            return [Check("namespace exists", False, f"namespace {s.namespace} does not exist (the Secrets the "
                          "Deployment reads must be created there first)")]
    except ClientError as exc:
        return [Check("namespace exists", False, _fail_reason(exc))]
    out = [Check("namespace exists", True, s.namespace)]
    for name, keys in required_secrets(s).items():
        try:
            secret = kube.get(kind="Secret", name=name, namespace=s.namespace)
        except NotFound:
            out.append(Check(f"Secret {name}", False, f"Secret {s.namespace}/{name} does not exist "
                             f"(needs keys {', '.join(keys)})"))
            continue
        except ClientError as exc:
            out.append(Check(f"Secret {name}", False, _fail_reason(exc)))
            continue
        have = set((secret.get("data") or {}) | (secret.get("stringData") or {}))
        missing = [k for k in keys if k not in have]
        out.append(Check(f"Secret {name}", not missing, f"has key(s) {', '.join(keys)}" if not missing else
                         f"Secret {s.namespace}/{name} lacks key(s) {', '.join(missing)}"))
    return out


# ------------------------------------------------------------------------------------------- deploy


def plan_deploy(t: Tracking) -> Result:
    """Plan mode: what the deploy would change (server-side dry run where there is a cluster)."""
    s = t.settings
    ms = render_manifests(s)
    if s.mode != "cluster":
        return Result(summary=f"target {s.target} has no cluster: the {len(ms)} manifests are shown above and "
                      "not applied" + ("; the embedded server stands in" if s.mode == "embedded" else ""),
                      outcome="planned", details={"manifests": ms})
    rows = []
    if not t.kube.namespace_exists(name=s.namespace):
        rows.append({"kind": "Namespace", "name": s.namespace, "action": "create"})
    dry = t.kube.apply(ms, namespace=s.namespace, dry_run=True) if not rows else []
    for m in ms:
        try:
            t.kube.get(kind=m["kind"], name=m["metadata"]["name"], namespace=s.namespace,
                       api_version=m["apiVersion"])
            action = "update (server-side apply)"
        except NotFound:
            action = "create"
        rows.append({"kind": m["kind"], "name": m["metadata"]["name"], "action": action,
                     "dry run": "accepted by the server" if dry else "namespace missing: not dry-run"})
    return Result(summary=f"{len(ms)} objects in {s.namespace}" + (" (server-side dry run passed)" if dry else ""),
                  outcome="planned", rows=rows, details={"manifests": ms, "dry_run": dry})


def deploy(t: Tracking) -> Result:
    """Apply the manifests (server-side apply) and wait until the Deployment has rolled out."""
    s = t.settings
    if s.mode != "cluster":
        return Result(summary=f"target {s.target} has no cluster: nothing deployed"
                      + ("; the embedded server stands in" if s.mode == "embedded" else
                         f"; verifying {s.tracking_uri} as it is"), outcome="skipped")
    ms = render_manifests(s)
    created_ns = t.kube.ensure_namespace(name=s.namespace)
    applied = t.kube.apply(ms, namespace=s.namespace)
    rollout = t.kube.wait_rollout(namespace=s.namespace, name=APP, timeout=s.timeout)
    rows = [{"kind": o.get("kind"), "name": (o.get("metadata") or {}).get("name"),
             "resourceVersion": (o.get("metadata") or {}).get("resourceVersion")} for o in applied]
    pods = t.kube.pods(namespace=s.namespace, selector="app.kubernetes.io/name=mlflow")
    return Result(summary=f"applied {len(applied)} objects to {s.namespace}" + (" (namespace created)" if created_ns
                  else "") + f"; rolled out {rollout.replicas} replica(s) in {rollout.seconds:.1f} s",
                  outcome="changed", rows=rows + pods, details={"rollout": rollout.status})


def plan_embedded(t: Tracking) -> Result:
    if t.settings.mode != "embedded":
        return Result(summary=f"not the embedded mode ({t.settings.mode})", outcome="skipped")
    local = t.local
    if local.running():
        return Result(summary=f"an MLflow server already answers at {local.url}: it would be reused",
                      outcome="planned")
    return Result(summary=f"would start `mlflow server` on {local.url} (SQLite {local.db_path}, artifacts in "
                  f"{local.artifacts_dir})", outcome="planned")


def start_embedded(t: Tracking) -> Result:
    """Start the embedded server (or reuse the one answering on the port)."""
    if t.settings.mode != "embedded":
        return Result(summary=f"not the embedded mode: the server is {t.settings.tracking_uri or 'on the cluster'}",
                      outcome="skipped")
    status = t.local.ensure(timeout=t.settings.timeout)
    rows = [{"field": k, "value": str(v)} for k, v in (
        ("url", status.url), ("pid", status.pid), ("backend store", status.backend_store_uri),
        ("artifacts", status.artifacts_destination), ("log", status.log_file), ("stop with", status.stop_command))]
    verb = "reused the server" if status.reused else f"started in {status.started_seconds:.1f} s"
    return Result(summary=f"{verb} at {status.url}", outcome="ok" if status.reused else "changed", rows=rows,
                  details={"pid": status.pid, "reused": status.reused})


# ----------------------------------------------------------------------------------- backend stores


def _sqlite_rows(db_path: Path, run_id: str) -> dict[str, int]:
    from opsbook.clients.postgres import MLFLOW_RUN_TABLES

    out = {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, column in MLFLOW_RUN_TABLES.items():
            if table in tables:
                out[table] = int(conn.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" = ?',  # noqa: S608
                                              (run_id,)).fetchone()[0])
    return out


def _sqlite_revision(db_path: Path) -> str | None:
    if not db_path.exists():
        return None
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return str(row[0]) if row else ""


def backend_store(t: Tracking) -> Result:
    """Where runs are stored, and that MLflow's schema is there (after the server has started)."""
    s = t.settings
    if s.mode == "embedded":
        rev = _sqlite_revision(t.local.db_path)
        if rev is None:
            return Result(summary=f"{t.local.db_path} has no MLflow schema yet" + (
                "" if s.applying else " (the embedded server creates it when it starts in apply mode)"),
                outcome="failed" if s.applying else "skipped")
        return Result(summary=f"SQLite {t.local.db_path}: MLflow schema at revision {rev}", outcome="ok",
                      details={"revision": rev})
    db = t.db()
    if db is None:
        return Result(summary="db_host is empty: the backend store is not checked", outcome="skipped")
    info = db.info()
    if not info["mlflow_schema"]:
        if s.applying:
            return Result(summary=f"{db.dsn}: no MLflow schema: the server has not initialised its database",
                          outcome="failed", details=info)
        return Result(summary=f"{db.dsn}: no MLflow schema yet (created on the server's first start)",
                      outcome="ok", details=info)
    return Result(summary=f"PostgreSQL {info['server_version']} at {db.dsn}: MLflow schema at revision "
                  f"{info['mlflow_schema']}", outcome="ok", details=info)


def artifact_store(t: Tracking) -> Result:
    """Where artifacts are stored: the bucket and prefix (or the local folder), and what is there."""
    s = t.settings
    if s.mode == "embedded":
        d = t.local.artifacts_dir
        if not d.is_dir():
            return Result(summary=f"{d} does not exist yet" + ("" if s.applying else " (created in apply mode)"),
                          outcome="failed" if s.applying else "skipped")
        n = sum(1 for p in d.rglob("*") if p.is_file())
        return Result(summary=f"local folder {d}: {n} file(s)", outcome="ok", details={"path": str(d), "files": n})
    s3 = t.s3()
    if s3 is None:
        return Result(summary="s3_bucket is empty: the artifact store is not checked", outcome="skipped")
    if not s3.bucket_exists(s.s3_bucket):
        return Result(summary=f"bucket {s.s3_bucket!r} does not exist on {s3.where}", outcome="failed")
    objs = s3.list(s.s3_bucket, s.s3_prefix.strip("/") + "/" if s.s3_prefix.strip("/") else "", limit=5000)
    return Result(summary=f"{s.artifacts_destination} on {s3.where}: {len(objs)} object(s) under the prefix",
                  outcome="ok", details={"objects": len(objs)})


# --------------------------------------------------------------------------------------- verification


@dataclass
class Probe:
    """The verification's experiment, run and model."""

    experiment_id: str
    experiment_name: str
    run_id: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    model: Any = None  # clients.mlflow.LoggedModel
    version: Any = None  # clients.mlflow.ModelVersion


def _needs_probe(probe: Any) -> Result | None:
    if isinstance(probe, Probe):
        return None
    return Result(summary="plan mode: the verification writes to the tracking server, so it runs in apply mode",
                  outcome="skipped")


def health(t: Tracking) -> Result:
    """``/health`` of the server, through its URL."""
    s = t.settings
    if s.mode == "embedded" and not t.local.running():
        if s.applying:
            return Result(summary=f"nothing answers at {t.local.url}", outcome="failed")
        return Result(summary=f"no embedded server at {t.local.url} yet: it would start in apply mode",
                      outcome="skipped")
    ml = t.mlflow()
    h = ml.health()
    version = ml.server_version()
    return Result(summary=f"{ml.tracking_uri}/health answered {h['status']} {h['body']!r} in {h['seconds']} s"
                  + (f"; MLflow {version}" if version else ""), outcome="ok", details={**h, "version": version})


def track_experiment(t: Tracking) -> Result:
    """Create an experiment with a unique name and log a run: parameters, metrics and a metric history;
    read it back. Plan mode: skipped (it writes to the server)."""
    s = t.settings
    if not s.applying:
        return Result(summary="plan mode: the verification writes to the tracking server, so it runs in apply mode",
                      outcome="skipped")
    ml = t.mlflow()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"opsbook-verify-{stamp}-{_random.token_hex(3)}"
    exp_id = ml.create_experiment(name, tags={VERIFY_TAG: "true", "opsbook.runbook": "mlflow-tracking-server"})
    params = {"alpha": "0.5", "l1_ratio": "0.1", "runbook": "mlflow-tracking-server"}
    history = [1.0, 0.62, 0.41, 0.30, 0.26]
    run_id = ml.log_run(exp_id, run_name="verification", params=params, metrics={"accuracy": 0.93},
                        history={"loss": history}, tags={VERIFY_TAG: "true"})
    back = ml.get_run(run_id)
    got_params = dict(back.data.params)
    got_hist = [v for _, v in ml.metric_history(run_id, "loss")]
    ok = got_params == params and got_hist == history and back.data.metrics.get("accuracy") == 0.93
    probe = Probe(exp_id, name, run_id, ml.run_url(exp_id, run_id), params, history)
    rows = [{"step": i, "loss": v} for i, v in enumerate(got_hist)]
    return Result(summary=f"experiment {name} ({exp_id}), run {run_id}: {len(got_params)} params, accuracy "
                  f"{back.data.metrics.get('accuracy')}, loss history of {len(got_hist)} steps"
                  + ("" if ok else f"; READ BACK DIFFERS: params {got_params}, loss {got_hist}"),
                  outcome="ok" if ok else "failed", rows=rows, value=probe,
                  details={"experiment_id": exp_id, "run_id": run_id, "url": probe.url})


def log_model(t: Tracking, probe: Any) -> Result:
    """Log a small pyfunc model to the probe run and register it (alias ``verified``)."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    ml = t.mlflow()
    probe.model = ml.log_probe_model(probe.run_id)
    probe.version = ml.register(probe.model.model_uri, VERIFY_MODEL, alias=VERIFY_ALIAS,
                                tags={VERIFY_TAG: "true", "opsbook.experiment": probe.experiment_name})
    rows = [{"field": "logged model", "value": probe.model.model_id},
            {"field": "model URI", "value": probe.model.model_uri},
            {"field": "stored at", "value": probe.model.artifact_location},
            {"field": "registered as", "value": f"{VERIFY_MODEL} v{probe.version.version} @{VERIFY_ALIAS}"}]
    return Result(summary=f"{probe.model.model_id} registered as {VERIFY_MODEL} v{probe.version.version}",
                  rows=rows, value=probe, details={"model_id": probe.model.model_id,
                                                   "version": probe.version.version})


def model_from_registry(t: Tracking, probe: Any) -> Result:
    """Read the model back through the registry (by alias) and make it predict."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    ml = t.mlflow()
    mv = ml.get_version_by_alias(VERIFY_MODEL, VERIFY_ALIAS)
    uri = f"models:/{VERIFY_MODEL}@{VERIFY_ALIAS}"
    pred = ml.load_and_predict(uri, [1.0, 2.0])
    problems = []
    if mv.version != probe.version.version:
        problems.append(f"alias points at v{mv.version}, not v{probe.version.version}")
    if mv.source != probe.model.model_uri and mv.model_id != probe.model.model_id:
        problems.append(f"version source {mv.source} is not {probe.model.model_uri}")
    if pred != [2.0, 3.0]:
        problems.append(f"predicted {pred} for [1, 2], expected [2, 3]")
    return Result(summary=f"{uri} is v{mv.version} ({mv.status}, source {mv.source}); predicts {pred} for [1.0, 2.0]"
                  + (": " + "; ".join(problems) if problems else ""), outcome="failed" if problems else "ok",
                  details={"version": mv.version, "source": mv.source, "prediction": pred})


def _artifact_path(location: str) -> tuple[str, str]:
    """('proxied'|'s3'|'file', path) of a logged model's artifact location."""
    if location.startswith("mlflow-artifacts:"):
        path = location.split(":", 1)[1]
        if path.startswith("//"):  # mlflow-artifacts://host:port/path
            path = "/" + path[2:].split("/", 1)[1] if "/" in path[2:] else "/"
        return "proxied", path.lstrip("/")
    if location.startswith("s3://"):
        return "s3", location[5:]
    if location.startswith("file:"):
        from urllib.parse import urlparse

        return "file", urlparse(location).path
    return "file", location


def model_in_bucket(t: Tracking, probe: Any) -> Result:
    """The model's files really are in the artifact store: listed with the S3 client under the prefix
    (or in the embedded server's artifact folder)."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    s = t.settings
    kind, path = _artifact_path(probe.model.artifact_location)
    if s.mode == "embedded":
        base = t.local.artifacts_dir / path if kind == "proxied" else Path(path)
        files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        ok = "MLmodel" in files
        return Result(summary=f"{len(files)} file(s) in {base}" + ("" if ok else ": no MLmodel file"),
                      outcome="ok" if ok else "failed", rows=[{"file": f} for f in files[:30]])
    s3 = t.s3()
    if s3 is None:
        return Result(summary="s3_bucket is empty: the bucket is not checked", outcome="skipped")
    if kind == "proxied":
        prefix = s.s3_prefix.strip("/")
        bucket, key = s.s3_bucket, (f"{prefix}/" if prefix else "") + path.rstrip("/") + "/"
    elif kind == "s3":
        bucket, _, key = path.partition("/")
        key = key.rstrip("/") + "/"
    else:
        return Result(summary=f"the model is stored at {probe.model.artifact_location}, not in a bucket: the server "
                      f"does not use {s.artifacts_destination}", outcome="failed")
    objs = s3.list(bucket, key)
    names = [o["key"][len(key):] for o in objs]
    ok = "MLmodel" in names
    return Result(summary=f"{len(objs)} object(s) under s3://{bucket}/{key}" + ("" if ok else ": no MLmodel object"),
                  outcome="ok" if ok else "failed",
                  rows=[{"key": o["key"], "size": o["size"]} for o in objs[:30]],
                  details={"bucket": bucket, "prefix": key, "objects": len(objs)})


def run_in_database(t: Tracking, probe: Any) -> Result:
    """The run's rows are in the backend store (PostgreSQL, or the embedded server's SQLite)."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    s = t.settings
    if s.mode == "embedded":
        counts, where = _sqlite_rows(t.local.db_path, probe.run_id), f"SQLite {t.local.db_path}"
    else:
        db = t.db()
        if db is None:
            return Result(summary="db_host is empty: the database is not checked", outcome="skipped")
        counts, where = db.run_rows(probe.run_id), db.dsn
    expected = {"runs": 1, "params": len(probe.params), "metrics": 1 + len(probe.history), "logged_models": 1}
    short = {k: f"{counts.get(k, 0)} < {v}" for k, v in expected.items() if counts.get(k, 0) < v}
    rows = [{"table": k, "rows for the run": v} for k, v in counts.items()]
    return Result(summary=f"{where}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + (f"; missing: {short}" if short else ""), outcome="failed" if short else "ok", rows=rows,
                  details={"counts": counts})


def run_link(t: Tracking, probe: Any) -> Result:
    """The run's page in the MLflow UI."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    show_link(probe.url, "Open the run")
    rows = [{"what": "experiment", "value": f"{probe.experiment_name} ({probe.experiment_id})"},
            {"what": "run", "value": probe.run_id}, {"what": "UI", "value": probe.url}]
    if probe.version is not None:
        rows.append({"what": "model", "value": f"{VERIFY_MODEL} v{probe.version.version}"})
    return Result(summary=probe.url, rows=rows, details={"url": probe.url})




def finish_probe(t: Tracking, probe: Any) -> Result:
    """``cleanup``: delete the probe experiment (soft delete) and model version; otherwise keep them,
    tagged as a verification run."""
    skip = _needs_probe(probe)
    if skip:
        return skip
    ml = t.mlflow()
    if t.settings.cleanup:
        if probe.version is not None:
            ml.delete_version(VERIFY_MODEL, probe.version.version)
        ml.delete_experiment(probe.experiment_id)
        return Result(summary=f"deleted experiment {probe.experiment_name} (soft delete: `mlflow gc` purges it)"
                      + (f" and {VERIFY_MODEL} v{probe.version.version}" if probe.version is not None else ""),
                      outcome="changed")
    tags = {VERIFY_TAG: "true", "opsbook.verified_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    ml.set_experiment_tags(probe.experiment_id, tags)
    return Result(summary=f"kept experiment {probe.experiment_name}, tagged {VERIFY_TAG}=true (cleanup=True deletes "
                  "it)", outcome="ok")


def embedded_status(t: Tracking) -> Result:
    """How the embedded server is running and how to stop it."""
    if t.settings.mode != "embedded":
        return Result(summary=f"not the embedded mode ({t.settings.mode})", outcome="skipped")
    local = t.local
    running = local.running()
    rows = [{"field": "url", "value": local.url}, {"field": "running", "value": "yes" if running else "no"},
            {"field": "pid file", "value": str(local.pid_file)}, {"field": "log", "value": str(local.log_file)},
            {"field": "stop with", "value": local.stop_command}]
    return Result(summary=(f"running at {local.url} (pid {local.pid() or '?'}); stop it with: {local.stop_command}"
                           if running else f"not running at {local.url}"), rows=rows)
