"""Before anything is installed: the cluster, the prerequisites, the database Secret, the chart repository."""

from __future__ import annotations

from pathlib import Path

from opsbook.errors import ClientError, NotFound
from opsbook.ops import base
from opsbook.ops.base import Check, Result, change, step
from opsbook.ops.journal import JOURNAL

from .context import Context

UPGRADE_HINT = ("this runbook is for a first-time install only: to change a running release use the "
                "`deploy-new-model` runbook (canary, then promote), or `helm upgrade {release} {chart} -n {ns}` "
                "by hand; to start over, `helm uninstall {release} -n {ns}` first")


@step("connect", "Connect to the target")
def connect(ctx: Context) -> Result:
    """Show the operator where this run goes: the cluster (its API server's version, or why it
    cannot be reached), the release, the namespace and the chart. A target without a cluster plans
    only; an unreachable cluster is noted here (the preflight fails on it), not raised."""
    s = ctx.settings
    kube, server, error = ctx.kube, ctx.server_version, ctx.cluster_error
    rows = [
        {"setting": "target", "value": ctx.target_name},
        {"setting": "cluster", "value": (f"context {ctx.kube_context or '(current)'} at {getattr(kube, 'host', '?')}"
                                         if kube is not None else "none: plan only")},
        {"setting": "API server", "value": server or (f"UNREACHABLE: {error}" if error else "-")},
        {"setting": "release / namespace", "value": f"{s.release} / {s.namespace}"},
        {"setting": "chart", "value": ctx.chart_ref + (f" (version {ctx.chart_pin})" if ctx.chart_pin else "")},
    ]
    summary = (f"cluster {server}" if server else f"cluster unreachable: {error}" if error else
               "no cluster on this target: Kubernetes steps plan only")
    return Result(summary=summary, rows=rows, outcome="ok")


@base.preflight("preflight", "Preflight")
def preflight(ctx: Context) -> list[Check]:
    """Prerequisites: the cluster (or plan only), helm and kubectl, the namespace, no release yet,
    and the database Secret the chart reads credentials from."""
    s = ctx.settings
    checks: list[Check] = []
    if ctx.kube is None:
        ok = not ctx.applying
        checks.append(Check("cluster reachable", ok, "no cluster on this target: plan only" if ok else
                            "apply needs a target with a cluster (kubeconfig / kube_context); see `opsbook targets`"))
    elif ctx.cluster_error:
        checks.append(Check("cluster reachable", False, f"{ctx.cluster_error}; check the kubeconfig and context "
                            "(`kubectl cluster-info`), the VPN, or choose another target"))
    else:
        checks.append(Check("cluster reachable", True, f"API server {ctx.server_version} at {ctx.kube.host}"))

    for name in ("helm", "kubectl"):
        info = ctx.clients.tools.info(name)
        checks.append(Check(f"{name} present", info.version is not None,
                            f"{info.version} ({info.path})" if info.version else f"{name}: {info.error}; run `make setup`"))

    if ctx.chart_is_path:
        ok = Path(ctx.chart_ref).exists()
        checks.append(Check("chart available", ok, ctx.chart_ref if ok else f"{ctx.chart_ref} does not exist"))
    else:
        ok = bool(s.repo_url)
        checks.append(Check("chart available", ok, f"{ctx.chart_ref} from {s.repo_url}" if ok else
                            f"{ctx.chart_ref}: give repo_url, or a chart path"))

    if ctx.cluster_reachable:
        try:
            exists = ctx.kube.namespace_exists(name=s.namespace)
            checks.append(Check("namespace", True, f"{s.namespace} exists" if exists else
                                f"{s.namespace} does not exist: the install will create it"))
            secret_ok, why = _secret_present(ctx) if exists else (False, f"namespace {s.namespace} does not exist yet")
            if secret_ok:
                checks.append(Check("database Secret", True, why))
            elif s.db_password:
                checks.append(Check("database Secret", True, f"{why}: it will be created from {s.db_password}"))
            else:
                checks.append(Check("database Secret", not ctx.applying,
                                    f"{why}; give db_password (a secret reference) to have it created, or create it "
                                    f"first: `kubectl -n {s.namespace} create secret generic {s.db_secret_name} "
                                    "--from-literal=username=... --from-literal=password=...`"
                                    + ("" if ctx.applying else " (plan mode: noted)")))
        except ClientError as exc:
            checks.append(Check("namespace", False, str(exc)))
        try:
            present = ctx.helm.release_exists(s.release, namespace=s.namespace)
            hint = UPGRADE_HINT.format(release=s.release, chart=ctx.chart_ref, ns=s.namespace)
            checks.append(Check("release absent", not present, f"no release {s.release} in {s.namespace} yet"
                                if not present else f"release {s.release} already exists in {s.namespace}: {hint}"))
        except ClientError as exc:
            checks.append(Check("release absent", False, str(exc).splitlines()[-1]))
    else:
        checks.append(Check("namespace", True, f"{s.namespace}: not checked (no cluster)"))
        checks.append(Check("release absent", True, f"{s.release}: not checked (no cluster)"))
    return checks


def _secret_present(ctx: Context) -> tuple[bool, str]:
    s = ctx.settings
    try:
        secret = ctx.kube.get(kind="Secret", name=s.db_secret_name, namespace=s.namespace)
    except NotFound:
        return False, f"Secret {s.namespace}/{s.db_secret_name} not found"
    keys = sorted((secret.get("data") or {}).keys())
    return True, f"Secret {s.namespace}/{s.db_secret_name} exists (keys: {', '.join(keys) or 'none'})"


# -- the database Secret --------------------------------------------------------------------------

def plan_db_secret(ctx: Context) -> Result:
    """Plan mode: whether the database Secret exists, or would be created (the value is not read)."""
    s = ctx.settings
    if ctx.cluster_reachable and ctx.kube.namespace_exists(name=s.namespace) and _secret_present(ctx)[0]:
        return Result(summary=f"Secret {s.namespace}/{s.db_secret_name} exists: nothing to do", outcome="planned")
    if s.db_password:
        return Result(summary=f"would create Secret {s.namespace}/{s.db_secret_name} (keys username, password) "
                      f"from {s.db_password}", outcome="planned")
    return Result(summary=f"Secret {s.namespace}/{s.db_secret_name} must exist before the install "
                  "(no db_password reference given)", outcome="planned")


@change("db-secret", "Create the database Secret if missing", plan=plan_db_secret, undo=JOURNAL)
def ensure_db_secret(ctx: Context) -> Result:
    """Apply mode: create the database Secret (and the namespace) if missing, from the ``db_password``
    secret reference, resolved only then (``ctx.secret`` registers the value for redaction); the value
    is sent to the API server only, never shown."""
    s = ctx.settings
    if ctx.kube.namespace_exists(name=s.namespace) and _secret_present(ctx)[0]:
        return Result(summary=f"Secret {s.namespace}/{s.db_secret_name} already exists: left as it is", outcome="ok")
    if not s.db_password:
        return Result(summary=f"Secret {s.namespace}/{s.db_secret_name} does not exist and no db_password "
                      "reference was given", outcome="failed")
    password = ctx.secret("db_password")
    created_ns = ctx.journal.namespace(ctx.kube, s.namespace)  # the undo deletes what this creates
    ctx.journal.apply(ctx.kube, [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": s.db_secret_name, "labels": {"app.kubernetes.io/part-of": "ml-platform"}},
                     "stringData": {"username": s.db_user, "password": password}}], namespace=s.namespace)
    return Result(summary=(f"created namespace {s.namespace} and " if created_ns else "created ")
                  + f"Secret {s.namespace}/{s.db_secret_name} from {s.db_password}", outcome="changed")


# -- the Helm repository --------------------------------------------------------------------------

def _chart_is_local(ctx: Context) -> str | None:
    return f"chart is a local path ({ctx.chart_ref}): no repository needed" if ctx.chart_is_path else None


@step("helm-repo", "Add the Helm repository", skip_if=_chart_is_local)
def add_repo(ctx: Context) -> Result:
    """``helm repo add`` + ``update`` (only local helm configuration changes)."""
    s = ctx.settings
    ctx.helm.repo_add(s.repo_name, s.repo_url)
    ctx.helm.repo_update(s.repo_name)
    found = ctx.helm.search_repo(ctx.chart_ref, version=s.chart_version or None)
    if not found:
        raise NotFound(f"{ctx.chart_ref}" + (f" version {s.chart_version}" if s.chart_version else "")
                       + f" is not in {s.repo_url}")
    rows = [{"chart": c["name"], "version": c["version"], "app version": c.get("app_version", ""),
             "description": c.get("description", "")} for c in found]
    return Result(summary=f"{s.repo_name} -> {s.repo_url}: {rows[0]['chart']} {rows[0]['version']}", rows=rows,
                  outcome="ok")
