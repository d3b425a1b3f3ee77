"""What the API server says before the install (access, a server-side dry run), and the install itself."""

from __future__ import annotations

from collections.abc import Callable

from opsbook.errors import ClientError
from opsbook.ops import base
from opsbook.ops.base import Check, Result, change, step
from opsbook.ops.journal import JOURNAL

from .context import RUNBOOK_ID, Context

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


def _no_cluster(what: str) -> Callable[[Context], str | None]:
    """A skip condition: the step asks the API server, and there is none to ask."""

    def reason(ctx: Context) -> str | None:
        return None if ctx.cluster_reachable else f"no cluster: {what}"

    return reason


@base.preflight("access", "Access", skip_if=_no_cluster("access not checked (plan only)"))
def access_checks(ctx: Context) -> list[Check]:
    """"Can I" (SelfSubjectAccessReview) create, get, list and patch every kind the chart renders, in
    the namespace, plus create the namespace if it does not exist yet."""
    namespace = ctx.settings.namespace
    checks = []
    needed: list[tuple[str, str, str, str | None]] = []  # (verb, resource, group, namespace)
    try:
        if not ctx.kube.namespace_exists(name=namespace):
            needed.append(("create", "namespaces", "", None))
    except ClientError as exc:
        return [Check("access", False, str(exc))]
    kinds = sorted({(m["kind"], m.get("apiVersion", "")) for m in ctx.manifests})
    for kind, api_version in kinds:
        resource, group = _KIND_RESOURCE.get(kind, (None, None))
        if resource is None:
            try:
                info = ctx.kube.resource(kind=kind, api_version=api_version)
                resource, group = info.plural, info.group
            except ClientError as exc:
                checks.append(Check(f"can-i {kind}", False, str(exc)))
                continue
        for verb in ("create", "get", "list", "patch"):
            needed.append((verb, resource, group or "", namespace))
    needed += [("create", "secrets", "", namespace), ("get", "pods/log", "", namespace),
               ("list", "events", "", namespace)]
    for verb, resource, group, ns in needed:
        res, _, sub = resource.partition("/")
        try:
            review = ctx.kube.access_review(verb=verb, resource=res, group=group, namespace=ns, subresource=sub or None)
            allowed = bool(review.get("allowed"))
            reason = review.get("reason") or ""
        except ClientError as exc:
            allowed, reason = False, str(exc)
        what = f"{verb} {resource}" + (f".{group}" if group else "") + (f" in {ns}" if ns else "")
        checks.append(Check(f"can-i {what}", allowed, reason or ("allowed" if allowed else "denied by RBAC")))
    return checks


@step("server-dry-run", "Server-side dry run",
      skip_if=_no_cluster("rendered and validated client-side by helm only"))
def server_dry_run(ctx: Context) -> Result:
    """``helm install --dry-run=server`` and a server-side apply with ``dryRun=All`` (the API server
    validates and defaults every object and stores nothing)."""
    s = ctx.settings
    release = ctx.helm.install(s.release, ctx.chart_ref, version=ctx.chart_pin, values_files=ctx.values_files(),
                               namespace=s.namespace, dry_run="server", create_namespace=True)
    rows = []
    if ctx.kube.namespace_exists(name=s.namespace):
        objs = ctx.kube.apply(ctx.manifests, namespace=s.namespace, dry_run=True)
        rows = [{"kind": o.get("kind"), "name": o["metadata"].get("name"), "server says": "valid (dryRun=All)"}
                for o in objs]
        note = f"{len(objs)} object(s) accepted by the API server (dryRun=All)"
    else:
        note = f"namespace {s.namespace} does not exist yet: objects checked by helm --dry-run=server only"
    return Result(summary=f"helm: {release.get('info', {}).get('description', 'dry run complete')}; {note}",
                  rows=rows, details={"helm_dry_run_status": release.get("info", {}).get("status")}, outcome="ok")


def _install_command(ctx: Context) -> str:
    s = ctx.settings
    cmd = f"helm install {s.release} {ctx.chart_ref} --namespace {s.namespace} --create-namespace"
    if ctx.chart_pin:
        cmd += f" --version {ctx.chart_pin}"
    if ctx.values_file:
        cmd += f" --values {ctx.values_file}"
    return cmd


def plan_install(ctx: Context) -> Result:
    """Plan mode: what the install would do (the command and the objects it would create)."""
    rows = [{"would create": m.get("kind"), "name": m["metadata"].get("name"), "namespace": ctx.settings.namespace}
            for m in ctx.manifests]
    return Result(summary=f"would run: {_install_command(ctx)}", rows=rows, outcome="planned",
                  details={"command": _install_command(ctx), "objects": len(ctx.manifests)})


@change("install", "Install the release", plan=plan_install, undo=JOURNAL)
def install(ctx: Context) -> Result:
    """``helm install`` (creating the namespace if needed). It does not wait here: the verification
    checks wait for each rollout and say what is wrong if one does not complete."""
    s = ctx.settings
    # the namespace first (the undo deletes it if this created it), then the release (uninstalled by the undo)
    ctx.journal.namespace(ctx.kube, s.namespace)
    with ctx.journal.helm(ctx.helm, s.release, namespace=s.namespace):
        release = ctx.helm.install(s.release, ctx.chart_ref, version=ctx.chart_pin,
                                   values_files=ctx.values_files(), namespace=s.namespace, create_namespace=True,
                                   wait=False, timeout=s.timeout_seconds, description=f"opsbook {RUNBOOK_ID}")
    ctx.installed = True
    info = release.get("info") or {}
    chart = (release.get("chart") or {}).get("metadata", {})
    rows = [{"release": release.get("name", s.release), "namespace": release.get("namespace", s.namespace),
             "revision": release.get("version"), "status": info.get("status"),
             "chart": f"{chart.get('name', '')}-{chart.get('version', '')}"}]
    return Result(summary=f"{_install_command(ctx)}: {info.get('status', '?')}", rows=rows, outcome="changed",
                  details={"notes": info.get("notes", "")})
