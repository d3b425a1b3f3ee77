"""The `initial-kubernetes-deployment` runbook's logic: a first Helm install of the ML platform, verified.

Plain functions over a :class:`Deployment` (what to deploy, where, and the clients to do it with) that
return :class:`~opsbook.results.Result` / :class:`~opsbook.results.Check`; the notebook calls them one
per cell through the notebook API::

    d = deploy.connect(target, params, mode="plan")     # builds the clients; never raises for a dead cluster
    deploy.preflight(d)                                  # list of Check
    deploy.add_repo(d); deploy.write_values(d); deploy.render_manifests(d); deploy.access_checks(d)
    deploy.server_dry_run(d)
    deploy.install(d)            # apply mode        deploy.plan_install(d)   # plan mode
    deploy.verify_pods(d); deploy.service_logs(d); deploy.probe_ingress(d); deploy.events_not_ready(d)

Tests build a :class:`Deployment` directly with their own clients (``Helm``, ``Kube``).
"""

from __future__ import annotations

import atexit
import difflib
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, NotFound, TimedOut
from opsbook.notebook.display import show_code
from opsbook.results import Check, Result
from opsbook.text import shorten

RUNBOOK_ID = "initial-kubernetes-deployment"
UPGRADE_HINT = ("this runbook is for a first-time install only: to change a running release use the "
                "`deploy-new-model` runbook (canary, then promote), or `helm upgrade {release} {chart} -n {ns}` "
                "by hand; to start over, `helm uninstall {release} -n {ns}` first")
ERROR_LINE = re.compile(r"\b(ERROR|FATAL|CRITICAL|PANIC|Traceback|Exception)\b|level=(error|fatal)|\bpanic:",
                        re.IGNORECASE)

# the REST resource (plural) and group of the kinds a chart commonly renders, for "can I" before discovery
_KIND_RESOURCE = {
    "Deployment": ("deployments", "apps"), "Service": ("services", ""), "Ingress": ("ingresses", "networking.k8s.io"),
    "ConfigMap": ("configmaps", ""), "Secret": ("secrets", ""), "ServiceAccount": ("serviceaccounts", ""),
    "StatefulSet": ("statefulsets", "apps"), "DaemonSet": ("daemonsets", "apps"), "Job": ("jobs", "batch"),
    "CronJob": ("cronjobs", "batch"), "Role": ("roles", "rbac.authorization.k8s.io"),
    "RoleBinding": ("rolebindings", "rbac.authorization.k8s.io"),
    "PersistentVolumeClaim": ("persistentvolumeclaims", ""), "NetworkPolicy": ("networkpolicies", "networking.k8s.io"),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", "autoscaling"),
    "PodDisruptionBudget": ("poddisruptionbudgets", "policy"),
}


def _private_workdir() -> Path:
    """Where ``values.yaml`` is written for helm: a private folder (mode 0700) of this process,
    removed when the process (the run's kernel) exits; one that a killed kernel left behind has an
    owner file, so the next run sweeps it (``opsbook.workdirs``). Nothing stays in ``$TMPDIR``; the
    record keeps the file's text (the step's details)."""
    from opsbook.workdirs import make_workdir

    folder = make_workdir("opsbook-deploy-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@dataclass
class Deployment:
    """What this run deploys, where, with which clients, and what the steps found so far."""

    release: str
    namespace: str
    chart: str  # a chart directory / .tgz, or a chart in the repository (``name`` or ``repo/name``)
    helm: Any  # opsbook.clients.helm.Helm
    kube: Any = None  # opsbook.clients.kube.Kube, or None when the target has no cluster
    mode: str = "plan"
    repo_name: str = "ml-platform"
    repo_url: str = ""
    chart_version: str = ""
    values_overrides: str = ""
    db_secret_name: str = "ml-platform-db"
    db_user: str = "mlplatform"
    db_password_ref: str = ""  # a secret reference (env:/file:/k8s:), resolved only when the Secret is created
    timeout_seconds: int = 300
    ingress_base_url: str = ""
    workdir: Path = field(default_factory=_private_workdir)
    cluster_error: str = ""  # why the cluster is not reachable (empty: reachable, or none configured)
    server_version: str = ""
    # filled in by the steps
    values_file: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    installed: bool = False

    @property
    def has_cluster(self) -> bool:
        return self.kube is not None

    @property
    def cluster_reachable(self) -> bool:
        return self.kube is not None and not self.cluster_error

    @property
    def applying(self) -> bool:
        return self.mode == "apply"

    @property
    def chart_is_path(self) -> bool:
        return is_chart_path(self.chart)

    @property
    def chart_ref(self) -> str:
        """What helm is given: the resolved path, or ``repo/chart``."""
        if self.chart_is_path:
            return str(Path(self.chart).expanduser().resolve())
        return self.chart if "/" in self.chart else f"{self.repo_name}/{self.chart}"

    @property
    def version(self) -> str | None:
        return None if self.chart_is_path else (self.chart_version or None)

    def deployments(self) -> list[str]:
        return [m["metadata"]["name"] for m in self.manifests if m.get("kind") == "Deployment"]


def is_chart_path(chart: str) -> bool:
    """A chart given as a path (``./x``, ``../x``, ``/x``, ``~/x``, ``x.tgz`` or an existing directory)
    rather than a name in a repository."""
    return (chart.startswith(("/", "./", "../", "~")) or chart.endswith(".tgz") or Path(chart).is_dir())


def resolve_chart_path(chart: str, *, base: Path | None = None) -> str:
    """A relative chart path is taken from ``base`` (``opsbook.notebook.path_base``: the runbook's
    folder for the default as written, else the working folder), or the current directory without one."""
    if not is_chart_path(chart):
        return chart
    p = Path(chart).expanduser()
    if p.is_absolute() or base is None:
        return str(p)
    return str((base / p).resolve())


# -- connect --------------------------------------------------------------------------------------

def connect(target: Any, params: Mapping[str, Any], *, mode: str | None = None) -> Result:
    """Build the helm and Kubernetes clients for ``target`` (an ``opsbook.targets.Target``) and the
    run's parameters. A target without a cluster gets no Kubernetes client (plan only); an unreachable
    cluster is noted (preflight fails on it), not raised."""
    from opsbook.clients.helm import Helm

    context = params.get("kube_context") or target.kube_context
    kubeconfig = target.kubeconfig
    from opsbook.notebook import path_base

    # the default "../charts/ml-platform" is relative to notebooks/, whatever folder the kernel runs in
    # (papermill started from the project root); a path the caller gave, to the caller's folder
    chart_param = str(params.get("chart") or "ml-platform")
    chart = resolve_chart_path(chart_param, base=path_base("chart", chart_param))
    helm = Helm(kubeconfig=kubeconfig, kube_context=context, namespace=params["namespace"])
    kube: Any = None
    error, server = "", ""
    if target.has_cluster or params.get("kube_context"):
        from opsbook.clients.kube import Kube

        try:
            kube = Kube(kubeconfig=kubeconfig, context=context)
            server = str(kube.version().get("gitVersion", "?"))
        except ClientError as exc:
            error = str(exc)
            if kube is None:
                kube = _Unconnected(error)
    d = Deployment(release=params["release"], namespace=params["namespace"], chart=chart, helm=helm, kube=kube,
                   mode=mode or params.get("mode", "plan"), repo_name=params.get("repo_name", "ml-platform"),
                   repo_url=params.get("repo_url", ""), chart_version=params.get("chart_version", ""),
                   values_overrides=params.get("values_overrides", ""),
                   db_secret_name=params.get("db_secret_name", "ml-platform-db"),
                   db_user=params.get("db_user", "mlplatform"), db_password_ref=params.get("db_password", ""),
                   timeout_seconds=int(params.get("timeout_seconds", 300)),
                   ingress_base_url=params.get("ingress_base_url", ""), cluster_error=error, server_version=server)
    rows = [
        {"setting": "target", "value": target.name},
        {"setting": "cluster", "value": (f"context {context or '(current)'} at {getattr(kube, 'host', '?')}"
                                         if kube is not None else "none: plan only")},
        {"setting": "API server", "value": server or (f"UNREACHABLE: {error}" if error else "-")},
        {"setting": "release / namespace", "value": f"{d.release} / {d.namespace}"},
        {"setting": "chart", "value": d.chart_ref + (f" (version {d.version})" if d.version else "")},
    ]
    summary = (f"cluster {server}" if server else f"cluster unreachable: {error}" if error else
               "no cluster on this target: Kubernetes steps plan only")
    return Result(summary=summary, rows=rows, value=d, outcome="ok")


class _Unconnected:
    """Stands in for a Kube client whose kubeconfig could not even be loaded."""

    host = "?"

    def __init__(self, error: str):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        from opsbook.errors import Unreachable

        raise Unreachable(self.error)


# -- preflight ------------------------------------------------------------------------------------

def preflight(d: Deployment) -> list[Check]:
    """Prerequisites: the cluster (or plan only), helm and kubectl, the namespace, no release yet,
    and the database Secret the chart reads credentials from."""
    from opsbook.clients.tools import Tools

    checks: list[Check] = []
    if not d.has_cluster:
        ok = not d.applying
        checks.append(Check("cluster reachable", ok, "no cluster on this target: plan only" if ok else
                            "apply needs a target with a cluster (kubeconfig / kube_context); see `opsbook targets`"))
    elif d.cluster_error:
        checks.append(Check("cluster reachable", False, f"{d.cluster_error}; check the kubeconfig and context "
                            "(`kubectl cluster-info`), the VPN, or choose another target"))
    else:
        checks.append(Check("cluster reachable", True, f"API server {d.server_version} at {d.kube.host}"))

    tools = Tools()
    for name in ("helm", "kubectl"):
        info = tools.info(name)
        checks.append(Check(f"{name} present", info.version is not None,
                            f"{info.version} ({info.path})" if info.version else f"{name}: {info.error}; run `make setup`"))

    if d.chart_is_path:
        ok = Path(d.chart_ref).exists()
        checks.append(Check("chart available", ok, d.chart_ref if ok else f"{d.chart_ref} does not exist"))
    else:
        ok = bool(d.repo_url)
        checks.append(Check("chart available", ok, f"{d.chart_ref} from {d.repo_url}" if ok else
                            f"{d.chart_ref}: give repo_url, or a chart path"))

    if d.cluster_reachable:
        try:
            exists = d.kube.namespace_exists(name=d.namespace)
            checks.append(Check("namespace", True, f"{d.namespace} exists" if exists else
                                f"{d.namespace} does not exist: the install will create it"))
            secret_ok, why = _secret_present(d) if exists else (False, f"namespace {d.namespace} does not exist yet")
            if secret_ok:
                checks.append(Check("database Secret", True, why))
            elif d.db_password_ref:
                checks.append(Check("database Secret", True, f"{why}: it will be created from {d.db_password_ref}"))
            else:
                checks.append(Check("database Secret", not d.applying,
                                    f"{why}; give db_password (a secret reference) to have it created, or create it "
                                    f"first: `kubectl -n {d.namespace} create secret generic {d.db_secret_name} "
                                    "--from-literal=username=... --from-literal=password=...`"
                                    + ("" if d.applying else " (plan mode: noted)")))
        except ClientError as exc:
            checks.append(Check("namespace", False, str(exc)))
        try:
            present = d.helm.release_exists(d.release, namespace=d.namespace)
            hint = UPGRADE_HINT.format(release=d.release, chart=d.chart_ref, ns=d.namespace)
            checks.append(Check("release absent", not present, f"no release {d.release} in {d.namespace} yet"
                                if not present else f"release {d.release} already exists in {d.namespace}: {hint}"))
        except ClientError as exc:
            checks.append(Check("release absent", False, str(exc).splitlines()[-1]))
    else:
        checks.append(Check("namespace", True, f"{d.namespace}: not checked (no cluster)"))
        checks.append(Check("release absent", True, f"{d.release}: not checked (no cluster)"))
    return checks


def _secret_present(d: Deployment) -> tuple[bool, str]:
    try:
        secret = d.kube.get(kind="Secret", name=d.db_secret_name, namespace=d.namespace)
    except NotFound:
        return False, f"Secret {d.namespace}/{d.db_secret_name} not found"
    keys = sorted((secret.get("data") or {}).keys())
    return True, f"Secret {d.namespace}/{d.db_secret_name} exists (keys: {', '.join(keys) or 'none'})"


# -- the database Secret --------------------------------------------------------------------------

def plan_db_secret(d: Deployment, resolve: Any = None) -> Result:
    """Plan mode: whether the database Secret exists, or would be created (the value is not read)."""
    if d.cluster_reachable and d.kube.namespace_exists(name=d.namespace) and _secret_present(d)[0]:
        return Result(summary=f"Secret {d.namespace}/{d.db_secret_name} exists: nothing to do", outcome="planned")
    if d.db_password_ref:
        return Result(summary=f"would create Secret {d.namespace}/{d.db_secret_name} (keys username, password) "
                      f"from {d.db_password_ref}", outcome="planned")
    return Result(summary=f"Secret {d.namespace}/{d.db_secret_name} must exist before the install "
                  "(no db_password reference given)", outcome="planned")


def ensure_db_secret(d: Deployment, resolve: Any) -> Result:
    """Apply mode: create the database Secret (and the namespace) if missing, from the ``db_password``
    secret reference. ``resolve(name)`` resolves a secret parameter (``run.secret``), registering the
    value for redaction; the value is sent to the API server only, never shown."""
    if d.kube.namespace_exists(name=d.namespace) and _secret_present(d)[0]:
        return Result(summary=f"Secret {d.namespace}/{d.db_secret_name} already exists: left as it is", outcome="ok")
    if not d.db_password_ref:
        return Result(summary=f"Secret {d.namespace}/{d.db_secret_name} does not exist and no db_password "
                      "reference was given", outcome="failed")
    password = resolve("db_password")
    created_ns = d.kube.ensure_namespace(name=d.namespace)
    d.kube.apply([{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": d.db_secret_name, "labels": {"app.kubernetes.io/part-of": "ml-platform"}},
                   "stringData": {"username": d.db_user, "password": password}}], namespace=d.namespace)
    return Result(summary=(f"created namespace {d.namespace} and " if created_ns else "created ")
                  + f"Secret {d.namespace}/{d.db_secret_name} from {d.db_password_ref}", outcome="changed")


# -- the Helm repository --------------------------------------------------------------------------

def add_repo(d: Deployment) -> Result:
    """``helm repo add`` + ``update`` (only local helm configuration changes). Skipped for a chart path."""
    if d.chart_is_path:
        return Result(summary=f"chart is a local path ({d.chart_ref}): no repository needed", outcome="skipped")
    d.helm.repo_add(d.repo_name, d.repo_url)
    d.helm.repo_update(d.repo_name)
    found = d.helm.search_repo(d.chart_ref, version=d.chart_version or None)
    if not found:
        raise NotFound(f"{d.chart_ref}" + (f" version {d.chart_version}" if d.chart_version else "")
                       + f" is not in {d.repo_url}")
    rows = [{"chart": c["name"], "version": c["version"], "app version": c.get("app_version", ""),
             "description": c.get("description", "")} for c in found]
    return Result(summary=f"{d.repo_name} -> {d.repo_url}: {rows[0]['chart']} {rows[0]['version']}", rows=rows,
                  outcome="ok")


# -- values.yaml ----------------------------------------------------------------------------------

def parse_overrides(text: str) -> dict[str, Any]:
    """Values overrides: a YAML mapping given inline, or the path of a YAML file (read within
    ``opsbook.safeyaml``'s size, nesting and alias limits)."""
    from opsbook import safeyaml
    from opsbook.errors import Invalid

    text = (text or "").strip()
    if not text:
        return {}
    candidate = Path(text).expanduser()
    try:
        is_file = candidate.is_file()
    except OSError:  # e.g. a one-line mapping longer than a file name may be
        is_file = False
    try:
        if "\n" not in text and not text.startswith("{") and (candidate.suffix in (".yaml", ".yml") or is_file):
            if not is_file:
                raise Invalid(f"values_overrides: file {candidate} does not exist")
            data = safeyaml.load_file(str(candidate), where=f"values_overrides file {candidate}")
        else:
            data = safeyaml.load(text, where="values_overrides")
    except safeyaml.YamlInputError as exc:
        raise Invalid(str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid(f"values_overrides must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def write_values(d: Deployment) -> Result:
    """Write values.yaml: the parameters (database Secret name) and the overrides, and show how the
    result differs from the chart's defaults (a table, and a unified diff in the record)."""
    import yaml

    overrides = deep_merge({"database": {"existingSecret": d.db_secret_name}}, parse_overrides(d.values_overrides))
    d.workdir.mkdir(parents=True, exist_ok=True)
    d.values_file = d.workdir / "values.yaml"
    text = "# values.yaml written by opsbook runbook initial-kubernetes-deployment\n" + yaml.safe_dump(
        overrides, sort_keys=False)
    d.values_file.write_text(text)
    d.values = overrides
    defaults = d.helm.show_values(d.chart_ref, version=d.version)
    effective = deep_merge(defaults, overrides)
    flat_default, flat_effective = _flatten(defaults), _flatten(effective)
    rows = [{"value": k, "chart default": _short(flat_default.get(k, "(unset)")), "this deployment": _short(v)}
            for k, v in flat_effective.items() if flat_default.get(k, object()) != v]
    diff = "".join(difflib.unified_diff(yaml.safe_dump(defaults, sort_keys=True).splitlines(True),
                                        yaml.safe_dump(effective, sort_keys=True).splitlines(True),
                                        "chart defaults", "this deployment"))
    shown = text + ("\n# --- diff against the chart defaults ---\n" + diff if diff else "")
    show_code(shown)
    summary = (f"values.yaml: {len(rows)} value(s) differ from the chart defaults" if rows else
               "values.yaml: no value differs from the chart defaults (only the database Secret's name is set)")
    return Result(summary=summary, rows=rows or None,
                  details={"values_file": str(d.values_file), "values_yaml": text, "diff": diff, "changes": rows},
                  value=Text(shown))


def _short(v: Any) -> str:
    return shorten(v, 80)


class Text(str):
    """A string shown as-is (not as a quoted repr) when it is a cell's last value."""

    def __repr__(self) -> str:
        return str(self)


# -- manifests ------------------------------------------------------------------------------------

def render_manifests(d: Deployment) -> Result:
    """``helm template`` with values.yaml: the objects the install will create (nothing touches the
    cluster). The full YAML goes into the record; the cell shows it too."""
    import yaml

    files = [d.values_file] if d.values_file else []
    d.manifests = d.helm.template(d.release, d.chart_ref, version=d.version, values_files=files,
                                  namespace=d.namespace)
    rows = [{"kind": m.get("kind"), "name": m["metadata"].get("name"), "apiVersion": m.get("apiVersion"),
             "namespace": m["metadata"].get("namespace") or d.namespace} for m in d.manifests]
    text = yaml.safe_dump_all(d.manifests, sort_keys=False)
    show_code(text)
    kinds: dict[str, int] = {}
    for m in d.manifests:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    return Result(summary=f"{len(d.manifests)} object(s): " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
                  rows=rows, details={"manifests": text}, value=Text(text))


def access_checks(d: Deployment) -> list[Check]:
    """"Can I" (SelfSubjectAccessReview) create, get, list and patch every kind the chart renders, in
    the namespace, plus create the namespace if it does not exist yet."""
    if not d.cluster_reachable:
        return [Check("access", True, "no cluster: access not checked (plan only)")]
    checks = []
    needed: list[tuple[str, str, str, str | None]] = []  # (verb, resource, group, namespace)
    try:
        if not d.kube.namespace_exists(name=d.namespace):
            needed.append(("create", "namespaces", "", None))
    except ClientError as exc:
        return [Check("access", False, str(exc))]
    kinds = sorted({(m["kind"], m.get("apiVersion", "")) for m in d.manifests})
    for kind, api_version in kinds:
        resource, group = _KIND_RESOURCE.get(kind, (None, None))
        if resource is None:
            try:
                info = d.kube.resource(kind=kind, api_version=api_version)
                resource, group = info.plural, info.group
            except ClientError as exc:
                checks.append(Check(f"can-i {kind}", False, str(exc)))
                continue
        for verb in ("create", "get", "list", "patch"):
            needed.append((verb, resource, group or "", d.namespace))
    needed += [("create", "secrets", "", d.namespace), ("get", "pods/log", "", d.namespace),
               ("list", "events", "", d.namespace)]
    for verb, resource, group, ns in needed:
        res, _, sub = resource.partition("/")
        try:
            review = d.kube.access_review(verb=verb, resource=res, group=group, namespace=ns, subresource=sub or None)
            allowed = bool(review.get("allowed"))
            reason = review.get("reason") or ""
        except ClientError as exc:
            allowed, reason = False, str(exc)
        what = f"{verb} {resource}" + (f".{group}" if group else "") + (f" in {ns}" if ns else "")
        checks.append(Check(f"can-i {what}", allowed, reason or ("allowed" if allowed else "denied by RBAC")))
    return checks


def server_dry_run(d: Deployment) -> Result:
    """Where a cluster is reachable: ``helm install --dry-run=server`` and a server-side apply with
    ``dryRun=All`` (the API server validates and defaults every object and stores nothing)."""
    if not d.cluster_reachable:
        return Result(summary="no cluster: rendered and validated client-side by helm only", outcome="skipped")
    files = [d.values_file] if d.values_file else []
    release = d.helm.install(d.release, d.chart_ref, version=d.version, values_files=files, namespace=d.namespace,
                             dry_run="server", create_namespace=True)
    rows = []
    if d.kube.namespace_exists(name=d.namespace):
        objs = d.kube.apply(d.manifests, namespace=d.namespace, dry_run=True)
        rows = [{"kind": o.get("kind"), "name": o["metadata"].get("name"), "server says": "valid (dryRun=All)"}
                for o in objs]
        note = f"{len(objs)} object(s) accepted by the API server (dryRun=All)"
    else:
        note = f"namespace {d.namespace} does not exist yet: objects checked by helm --dry-run=server only"
    return Result(summary=f"helm: {release.get('info', {}).get('description', 'dry run complete')}; {note}",
                  rows=rows, details={"helm_dry_run_status": release.get("info", {}).get("status")}, outcome="ok")


# -- install --------------------------------------------------------------------------------------

def _install_command(d: Deployment) -> str:
    cmd = f"helm install {d.release} {d.chart_ref} --namespace {d.namespace} --create-namespace"
    if d.version:
        cmd += f" --version {d.version}"
    if d.values_file:
        cmd += f" --values {d.values_file}"
    return cmd


def plan_install(d: Deployment) -> Result:
    """Plan mode: what the install would do (the command and the objects it would create)."""
    rows = [{"would create": m.get("kind"), "name": m["metadata"].get("name"), "namespace": d.namespace}
            for m in d.manifests]
    return Result(summary=f"would run: {_install_command(d)}", rows=rows, outcome="planned",
                  details={"command": _install_command(d), "objects": len(d.manifests)})


def install(d: Deployment) -> Result:
    """``helm install`` (creating the namespace if needed). It does not wait here: the verification
    checks wait for each rollout and say what is wrong if one does not complete."""
    files = [d.values_file] if d.values_file else []
    release = d.helm.install(d.release, d.chart_ref, version=d.version, values_files=files, namespace=d.namespace,
                             create_namespace=True, wait=False, timeout=d.timeout_seconds,
                             description=f"opsbook {RUNBOOK_ID}")
    d.installed = True
    info = release.get("info") or {}
    rows = [{"release": release.get("name", d.release), "namespace": release.get("namespace", d.namespace),
             "revision": release.get("version"), "status": info.get("status"),
             "chart": f"{(release.get('chart') or {}).get('metadata', {}).get('name', '')}-"
                      f"{(release.get('chart') or {}).get('metadata', {}).get('version', '')}"}]
    return Result(summary=f"{_install_command(d)}: {info.get('status', '?')}", rows=rows, outcome="changed",
                  details={"notes": info.get("notes", "")})


# -- verification ---------------------------------------------------------------------------------

def _not_applied(d: Deployment) -> Result | None:
    if not d.applying:
        return Result(summary="plan mode: nothing was installed, nothing to verify", outcome="skipped")
    if not d.cluster_reachable:
        return Result(summary="no reachable cluster", outcome="failed")
    return None


def verify_pods(d: Deployment) -> Result:
    """Wait for every Deployment's rollout (by its conditions), then show every pod: Ready or why not.
    Fails fast on a pod that cannot start (ImagePullBackOff, CrashLoopBackOff...) and names it."""
    from opsbook.clients.kube import RolloutFailed

    skip = _not_applied(d)
    if skip:
        return skip
    problems = []
    for name in d.deployments():
        try:
            d.kube.wait_rollout(namespace=d.namespace, name=name, timeout=d.timeout_seconds)
        except RolloutFailed as exc:
            problems.append(f"{exc}")
        except TimedOut as exc:
            problems.append(str(exc))
    rows = d.kube.pods(namespace=d.namespace, selector=f"app.kubernetes.io/instance={d.release}")
    not_ready = [r for r in rows if r["ready"].split("/")[0] != r["ready"].split("/")[1] or r["reason"]]
    if problems or not rows:
        pods = ", ".join(f"{r['pod']} ({r['reason'] or r['phase']})" for r in not_ready) or "no pods"
        hint = (f"look further: `kubectl -n {d.namespace} describe pod POD`, `kubectl -n {d.namespace} get events "
                f"--sort-by=.lastTimestamp`; fix the values (image, Secret) and start over with `helm uninstall "
                f"{d.release} -n {d.namespace}`")
        return Result(summary="; ".join(problems or ["no pods found"]) + f". Not Ready: {pods}. {hint}",
                      rows=rows, outcome="failed", details={"problems": problems, "hint": hint, "pods": rows})
    return Result(summary=f"{len(rows)} pod(s) Ready in {len(d.deployments())} Deployment(s)", rows=rows, outcome="ok",
                  details={"pods": rows})


def service_logs(d: Deployment, *, tail: int = 20) -> Result:
    """The last lines of each service's log (one pod per Deployment, every container), error lines
    flagged; the check fails if any is found."""
    skip = _not_applied(d)
    if skip:
        return skip
    rows, errors = [], 0
    for m in d.manifests:
        if m.get("kind") != "Deployment":
            continue
        labels = m["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = d.kube.pods(namespace=d.namespace, selector=selector)
        if not pods:
            rows.append({"service": m["metadata"]["name"], "pod": "-", "container": "-", "flag": "⚠",
                         "line": "no pod"})
            errors += 1
            continue
        pod = pods[0]["pod"]
        for ctr in m["spec"]["template"]["spec"].get("containers") or []:
            try:
                lines = d.kube.logs(namespace=d.namespace, pod=pod, container=ctr["name"], tail=tail)
            except ClientError as exc:
                lines, errors = [f"(cannot read the log: {exc})"], errors + 1
            for line in lines or ["(empty log)"]:
                bad = bool(ERROR_LINE.search(line))
                errors += bad
                rows.append({"service": m["metadata"]["name"], "pod": pod, "container": ctr["name"],
                             "flag": "✗ ERROR" if bad else "", "line": line[:200]})
    flagged = sum(1 for r in rows if r["flag"])
    return Result(summary=(f"{flagged} error line(s) flagged" if errors else "no error lines")
                  + f" in the last {tail} lines of each service", rows=rows, outcome="failed" if errors else "ok",
                  details={"flagged": [r for r in rows if r["flag"]]})


def ingress_urls(d: Deployment) -> list[dict[str, str]]:
    """Every host/path of the rendered Ingresses, as the URL to probe and the Host header to send."""
    out = []
    for m in d.manifests:
        if m.get("kind") != "Ingress":
            continue
        tls_hosts = {h for t in (m["spec"].get("tls") or []) for h in (t.get("hosts") or [])}
        for rule in m["spec"].get("rules") or []:
            host = rule.get("host") or ""
            for p in (rule.get("http") or {}).get("paths") or []:
                path = p.get("path") or "/"
                if d.ingress_base_url:
                    url = d.ingress_base_url.rstrip("/") + path
                else:
                    url = f"{'https' if host in tls_hosts else 'http'}://{host}{path}"
                out.append({"ingress": m["metadata"]["name"], "host": host, "path": path, "url": url,
                            "backend": ((p.get("backend") or {}).get("service") or {}).get("name", "")})
    return out


def probe_ingress(d: Deployment, *, timeout: float = 10.0, attempts: int = 3) -> Result:
    """HTTP GET every ingress host/path (through ``ingress_base_url`` with the Host header, for a
    cluster without external DNS). An answer below 400 passes."""
    import httpx

    skip = _not_applied(d)
    if skip:
        return skip
    targets = ingress_urls(d)
    if not targets:
        return Result(summary="the chart renders no Ingress (ingress.enabled is false)", outcome="skipped")
    rows: list[dict[str, Any]] = []
    for t in targets:
        status: int | None = None
        note = ""
        for _ in range(attempts):
            try:
                headers = {"Host": t["host"]} if d.ingress_base_url and t["host"] else {}
                r = httpx.get(t["url"], headers=headers, timeout=timeout, follow_redirects=False)
                status, note = r.status_code, r.reason_phrase
                if status < 400:
                    break
            except httpx.HTTPError as exc:
                note = f"{type(exc).__name__}: {exc}"
        rows.append({"host": t["host"], "path": t["path"], "url": t["url"], "backend": t["backend"],
                     "status": status if status is not None else "-", "answer": note,
                     "ok": "✓" if status is not None and status < 400 else "✗"})
    bad = [r for r in rows if r["ok"] != "✓"]
    failing = ", ".join(f"{r['url']} ({r['status'] if r['status'] != '-' else r['answer']})" for r in bad)
    summary = f"{len(rows) - len(bad)} of {len(rows)} endpoint(s) answered" + (
        f"; failing: {failing}; without external DNS set ingress_base_url to the ingress controller's address"
        if bad else "")
    return Result(summary=summary, rows=rows, outcome="failed" if bad else "ok", details={"endpoints": rows})


def events_not_ready(d: Deployment) -> Result:
    """Events of every pod and Deployment of the release that is not Ready: the first place to look."""
    skip = _not_applied(d)
    if skip:
        return skip
    rows: list[dict[str, Any]] = []
    pods = d.kube.pods(namespace=d.namespace, selector=f"app.kubernetes.io/instance={d.release}")
    bad_pods = [r["pod"] for r in pods if r["reason"] or r["ready"].split("/")[0] != r["ready"].split("/")[1]]
    for name in bad_pods:
        rows += d.kube.events_for(kind="Pod", name=name, namespace=d.namespace)
    for name in d.deployments():
        dep = d.kube.get(kind="Deployment", name=name, namespace=d.namespace)
        st = dep.get("status") or {}
        if int(st.get("availableReplicas") or 0) < int((dep.get("spec") or {}).get("replicas", 1)):
            rows += d.kube.events_for(kind="Deployment", name=name, namespace=d.namespace)
    if not bad_pods and not rows:
        return Result(summary="everything is Ready: no events to show", outcome="ok")
    warnings = sum(1 for r in rows if r.get("type") == "Warning")
    return Result(summary=f"{len(bad_pods)} pod(s) not Ready; {len(rows)} event(s), {warnings} warning(s)",
                  rows=rows, outcome="ok")
