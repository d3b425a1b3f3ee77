"""The steps before the judge: the settings the run acts on, the preflight (registry, cluster and
serving version, metrics source), what the registry says about the version, the version serving
now (the rollback target), and the canary: rendered from the stable Deployment, then applied.
"""

from __future__ import annotations

from typing import Any

from opsbook.errors import ClientError, NotFound, OpsbookError
from opsbook.ops import base
from opsbook.ops.base import Check, Code, Result, change, step
from opsbook.ops.deploy_new_model.cluster import (
    canary_action,
    find_stable,
    model_of,
    render_canary,
    standin_stable,
)
from opsbook.ops.deploy_new_model.context import (
    ENV_VERSION,
    FIELD_MANAGER,
    TRACK_LABEL,
    VERSION_KEY,
    Context,
    Serving,
    reason,
)
from opsbook.ops.journal import JOURNAL

_DECISIONS = {"auto": "follow the judge's verdict (of the approved plan, in apply)",
              "promote": "promote (operator's decision)", "rollback": "roll back (operator's decision)"}


@step("settings", "Settings")
def settings(ctx: Context) -> Result:
    """Where everything comes from: the model and version, the registry, the cluster, the metrics,
    the monitoring period, the tolerances, and how the decision will be made."""
    s = ctx.settings
    if ctx.has_cluster:
        ctx.kube  # noqa: B018 - made now, so that an unreadable kubeconfig shows here (cluster_error)
    prom = ctx.prom
    metrics = (f"recorded file {ctx.metrics_path}" if ctx.metrics_path else
               f"Prometheus {getattr(prom, 'url', ctx.prometheus_url)}" if prom is not None else
               "none: give metrics_file, prometheus_url, or a target with prometheus_url")
    rows: list[dict[str, Any]] = [
        {"setting": "model", "value": f"{s.model} (registered as {ctx.registry_name})"},
        {"setting": "version to deploy", "value": s.version or f"the one @{s.production_alias} points at "
                                                               "(else the newest in stage Production)"},
        {"setting": "registry", "value": ctx.tracking_uri or "none on this target: registry steps plan only "
                                                             "(give tracking_uri)"},
        {"setting": "cluster", "value": (f"namespace {s.namespace} on the target's cluster"
                                         + (f" (UNREACHABLE: {ctx.cluster_error})" if ctx.cluster_error else ""))
         if ctx.has_cluster else "none on this target: Kubernetes steps plan only"},
        {"setting": "metrics", "value": metrics},
        {"setting": "monitoring period", "value": f"{s.monitor_minutes} min in {s.interval_seconds} s intervals "
                                                  f"({ctx.window_intervals} looks)"},
        {"setting": "warm-up", "value": ctx.warmup_text()},
        {"setting": "tolerances", "value": f"accuracy, latency, d: {s.tolerance:.0%}; error rate: "
                                           f"{s.error_rate_tolerance:.0%}; p99 latency: the canary's share of "
                                           f"requests above the stable's p99 up to {1 + s.tail_tolerance:g}x the "
                                           f"stable's; false-rollback rate <= {s.alpha:g}"},
        {"setting": "decision", "value": _DECISIONS[s.decision]},
        {"setting": "registry alias", "value": f"@{s.production_alias} is moved to match the outcome"
         if s.move_alias else f"@{s.production_alias} is not touched (move_alias false)"},
    ]
    approved = ctx.approved_plan
    if approved:
        rows.append({"setting": "approved plan", "value": approved})
    return Result(summary=f"{s.model} on {ctx.target_name}: metrics from "
                  + ("a recorded file" if ctx.metrics_path else "Prometheus" if prom is not None else "nowhere"),
                  rows=rows,
                  details={"model": s.model, "registered_model": ctx.registry_name, "target": ctx.target_name,
                           "approved_plan": approved, "metrics_file": str(ctx.metrics_path or ""),
                           "prometheus_url": ctx.prometheus_url if prom is not None else ""})


# ------------------------------------------------------------------------------------------ preflight


def check_registry(ctx: Context) -> list[Check]:
    """The version exists and is in Production: by alias first, else by the legacy stage. Stores the
    candidate and where the alias pointed before any change."""
    s, reg = ctx.settings, ctx.registry
    if reg is None:
        return [Check("model version in Production", True,
                      "skipped: no tracking URI on this target, the registry is not checked (give tracking_uri)")]
    name = ctx.registry_name
    try:
        if not reg.model_exists(name):
            return [Check("registered model exists", False, f"no registered model {name!r} in the registry at "
                          f"{reg.tracking_uri}")]
        alias_v = reg.by_alias(name, s.production_alias)
        ctx.alias_before = alias_v
        if s.version:
            try:
                mv = reg.version(name, s.version)
            except NotFound:
                return [Check("model version exists", False, f"{name} has no version {s.version} in the registry "
                              f"at {reg.tracking_uri}")]
        else:
            mv = alias_v or reg.latest_in_stage(name, "Production")
            if mv is None:
                return [Check("model version in Production", False,
                              f"{name} has no version with alias @{s.production_alias} and none in stage "
                              "Production: nothing to deploy (promote a version to Production in the registry "
                              "first, or name one with version)")]
    except ClientError as exc:
        return [Check("model registry reachable", False, reason(exc))]
    ctx.candidate = mv
    checks = [Check("model version exists", True, f"{name} v{mv.version} ({mv.status}), source {mv.source}")]
    if mv.status != "READY":
        checks.append(Check("model version ready", False, f"{name} v{mv.version} is {mv.status}, not READY"))
    if alias_v is not None and alias_v.version == mv.version:
        ctx.in_production_by = "alias"
        checks.append(Check("model version in Production", True, f"alias @{s.production_alias} points at "
                            f"v{mv.version}"))
    elif mv.stage == "Production":
        ctx.in_production_by = "stage"
        checks.append(Check("model version in Production", True, f"legacy stage Production (alias "
                            f"@{s.production_alias} " + (f"points at v{alias_v.version})" if alias_v else "is not set)")))
    else:
        where = (f"alias @{s.production_alias} points at v{alias_v.version}" if alias_v else
                 f"alias @{s.production_alias} is not set")
        checks.append(Check("model version in Production", False,
                            f"{name} v{mv.version} is not in Production: {where} and its stage is {mv.stage}. "
                            f"Promote it in the registry first (set alias @{s.production_alias} on it, or move "
                            "it to stage Production), then run this runbook again"))
    return checks


def check_cluster(ctx: Context) -> list[Check]:
    """The cluster answers, the stable Deployment exists and says which version it serves, its selector
    keeps canary pods out, and we may create, patch and delete Deployments."""
    s = ctx.settings
    if ctx.kube is None:
        if ctx.cluster_error:
            return [Check("cluster reachable", False, ctx.cluster_error)]
        ctx.serving = Serving(version=s.serving_version, found_by="parameter serving_version"
                              if s.serving_version else "unknown", namespace=s.namespace)
        return [Check("cluster", True, f"skipped: target {ctx.target_name} has no cluster, Kubernetes steps plan "
                      "only"),
                Check("version now serving", True, f"v{s.serving_version} (parameter serving_version)" if
                      s.serving_version else "unknown: no cluster and serving_version is empty (a rollback "
                      "target is needed before a real change)")]
    checks: list[Check] = []
    try:
        ver = ctx.kube.version()
        checks.append(Check("cluster reachable", True, f"Kubernetes {ver.get('gitVersion', '?')} at {ctx.kube.host}"))
    except ClientError as exc:
        return [Check("cluster reachable", False, reason(exc))]
    try:
        stable = find_stable(ctx)
    except (ClientError, OpsbookError) as exc:
        return [*checks, Check("stable Deployment", False, reason(exc))]
    name = stable["metadata"]["name"]
    ctx.stable_name = name
    version, uri, how = model_of(stable)
    replicas = int((stable.get("spec") or {}).get("replicas", 1))
    ctx.serving = Serving(version=version, uri=uri, deployment=name, namespace=s.namespace, replicas=replicas,
                          found_by=how, object=stable)
    checks.append(Check("stable Deployment", True, f"{s.namespace}/{name}, {replicas} replica(s)"))
    checks.append(Check("version now serving", bool(version), f"v{version} ({uri}), read from {how}" if version else
                        f"{name} names no model version (no env {ENV_VERSION}, no annotation {VERSION_KEY}): "
                        "the rollback target would be unknown"))
    match = ((stable.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    checks.append(Check("stable selector excludes the canary", match.get(TRACK_LABEL) == "stable",
                        f"selector {match}" if match.get(TRACK_LABEL) == "stable" else
                        f"the selector of {name} ({match}) lacks {TRACK_LABEL}=stable: it would adopt the canary's "
                        "pods; deploy it with the ml-platform chart"))
    missing = []
    try:
        for verb in ("create", "patch", "delete"):
            if not ctx.kube.can_i(verb=verb, resource="deployments", group="apps", namespace=s.namespace):
                missing.append(verb)
    except ClientError as exc:
        missing.append(f"(access review failed: {reason(exc)})")
    checks.append(Check("may change Deployments", not missing, "create, patch, delete" if not missing else
                        f"not allowed to {', '.join(missing)} deployments in {s.namespace}"))
    return checks


def check_metrics_source(ctx: Context) -> list[Check]:
    """The recorded file loads and follows the schema, or Prometheus answers."""
    if ctx.metrics_path is not None:
        from opsbook.ops.deploy_new_model.metrics import MetricsFileError, load_metrics

        try:
            frame = load_metrics(ctx.metrics_path, metrics=ctx.specs)
        except MetricsFileError as exc:
            return [Check("metrics file", False, str(exc))]
        return [Check("metrics file", True, f"{ctx.metrics_path.name}: {frame['interval'].nunique()} intervals")]
    prom = ctx.prom
    if prom is None:
        return [Check("metrics source", False, "no metrics source: give metrics_file (a recorded CSV/Parquet) or "
                      "prometheus_url, or use a target with prometheus_url")]
    ok = prom.healthy()
    return [Check("Prometheus healthy", ok, f"{prom.url} answers /-/healthy" if ok else
                  f"{prom.url} does not answer /-/healthy")]


@base.preflight("preflight", "Preflight")
def preflight(ctx: Context) -> list[Check]:
    """Every prerequisite, before anything changes: the registry, the cluster and the serving version,
    the metrics source, and that the new version is not the one already serving."""
    checks = check_registry(ctx) + check_cluster(ctx) + check_metrics_source(ctx)
    new, old = ctx.target_version, getattr(ctx.serving, "version", "")
    if new and old and new == old:
        where = ctx.stable_name or "the stable instances"
        checks.append(Check("a new version", False, f"v{new} is already serving on {where}: nothing to deploy"))
    elif new:
        checks.append(Check("a new version", True, f"v{new} replaces v{old or '?'}"))
    elif ctx.kube is not None or ctx.applying:
        checks.append(Check("a version to deploy", False, "no version: give version, or a tracking_uri whose "
                            f"registry has @{ctx.settings.production_alias} or a version in stage Production"))
    else:
        checks.append(Check("a version to deploy", True, "not given (no registry, no cluster): the plan shows "
                            "the canary with a placeholder version"))
    return checks


# ------------------------------------------------------------------------------------------ versions


def _no_candidate(ctx: Context) -> str | None:
    if ctx.registry is None or ctx.candidate is None:
        return ("no registry on this target (give tracking_uri): version "
                + (ctx.settings.version or "(from the production alias)") + " is taken as given")
    return None


@step("registry-version", "Model version in the registry", skip_if=_no_candidate)
def registry_version(ctx: Context) -> Result:
    """The candidate version as the registry has it: source, run, stage, aliases, and the evaluation
    metrics of the run that produced it."""
    mv = ctx.candidate
    metrics: dict[str, float] = {}
    note = ""
    try:
        metrics = ctx.registry.run_metrics(mv.run_id)
    except ClientError as exc:
        note = f"; its run could not be read: {reason(exc)}"
    rows = [{"field": "model", "value": f"{mv.name} v{mv.version}"},
            {"field": "status", "value": mv.status},
            {"field": "in Production", "value": f"by alias @{ctx.settings.production_alias}"
             if ctx.in_production_by == "alias" else "by legacy stage Production"},
            {"field": "stage", "value": mv.stage}, {"field": "aliases", "value": ", ".join(mv.aliases) or "-"},
            {"field": "source", "value": mv.source}, {"field": "run id", "value": mv.run_id or "-"},
            {"field": "deployed as", "value": mv.uri}]
    rows += [{"field": f"metric {k}", "value": f"{v:.6g}"} for k, v in metrics.items()]
    return Result(summary=f"{mv.name} v{mv.version} in Production by {ctx.in_production_by}, run "
                  f"{mv.run_id or '-'}, {len(metrics)} evaluation metric(s)" + note, rows=rows,
                  details={"name": mv.name, "version": mv.version, "source": mv.source, "run_id": mv.run_id,
                           "stage": mv.stage, "aliases": list(mv.aliases), "in_production_by": ctx.in_production_by,
                           "metrics": metrics, "alias_before": getattr(ctx.alias_before, "version", None)})


@step("serving-version", "Version now serving")
def serving(ctx: Context) -> Result:
    """The version serving now: the rollback target, recorded before any change (an apply's rollback
    reads it back from the approved plan's record of this step)."""
    sv = ctx.serving
    if sv is None:
        return Result(summary="not known (preflight did not run)", outcome="failed")
    rows: list[dict[str, Any]] = [
        {"field": "deployment", "value": sv.deployment or "(no cluster)"},
        {"field": "version", "value": sv.version or "unknown"}, {"field": "model URI", "value": sv.uri or "-"},
        {"field": "read from", "value": sv.found_by}, {"field": "replicas", "value": sv.replicas}]
    if ctx.kube is not None and sv.object is not None:
        sel = ",".join(f"{k}={v}" for k, v in sorted(sv.object["spec"]["selector"]["matchLabels"].items()))
        for p in ctx.kube.pod_objects(namespace=sv.namespace, selector=sel):
            v, _, _ = model_of(p)
            rows.append({"field": f"pod {p['metadata']['name']}", "value": f"v{v}"})
    return Result(summary=f"v{sv.version or '?'} ({sv.found_by}): the rollback target", rows=rows,
                  details=sv.as_details(), outcome="ok" if sv.version or ctx.kube is None else "failed")


# ------------------------------------------------------------------------------------------ canary


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _no_version(ctx: Context) -> str | None:
    """Without a version there is nothing to render, unless there is neither a cluster nor a registry
    to find one: then the canary is rendered with a placeholder, as an illustration."""
    if not ctx.target_version and (ctx.kube is not None or ctx.registry is not None):
        return ("no version to deploy: give version (or a tracking_uri whose registry has "
                f"@{ctx.settings.production_alias})")
    return None


@step("canary-manifest", "Render the canary", skip_if=_no_version)
def canary_manifest(ctx: Context) -> Result:
    """Render the canary from the stable Deployment (on a target without a cluster: from the chart's
    rendering of it) and show it."""
    version, placeholder = ctx.target_version, False
    if not version:
        version, placeholder = "NEW", True  # no cluster, no registry: an illustration of the canary
    stable: dict[str, Any] | None
    if ctx.serving is not None and ctx.serving.object is not None:
        stable, source = ctx.serving.object, f"the stable Deployment {ctx.serving.deployment}"
    else:
        try:
            stable = standin_stable(ctx)
        except (ClientError, OSError) as exc:
            return Result(summary=f"no cluster, and the chart could not be rendered ({reason(exc)}): the canary "
                          "is rendered from the stable Deployment when there is a cluster", outcome="skipped")
        if stable is None:
            return Result(summary="no cluster and no chart to render the stable Deployment from", outcome="skipped")
        source = "the ml-platform chart's stable Deployment (no cluster: rendered with helm template)"
        ctx.stable_name = stable["metadata"]["name"]
    uri = ctx.target_uri or f"models:/{ctx.registry_name}/{version}"
    canary = ctx.canary = render_canary(stable, version=version, uri=uri, model=ctx.settings.model)
    rows = [{"field": "name", "value": canary["metadata"]["name"]},
            {"field": "rendered from", "value": source},
            {"field": "replicas", "value": 1},
            {"field": "model", "value": f"v{version} ({uri})" + (" (no version given: a placeholder)"
                                                                 if placeholder else "")},
            {"field": "selector", "value": canary["spec"]["selector"]["matchLabels"]}]
    return Result(summary=f"{canary['metadata']['name']}: 1 replica of v{version} beside "
                  f"{ctx.stable_name or 'the stable Deployment'}" + (
                      " (no version given and no registry: VERSION NEW is a placeholder)" if placeholder else ""),
                  rows=rows, details={"manifest": canary, "placeholder": placeholder}, show=[Code(_yaml(canary))])


def _rendered(ctx: Context) -> dict[str, Any]:
    if ctx.canary is None:  # the declaration skips the step then; a direct call out of order gets this
        raise OpsbookError("no canary manifest: the canary-manifest step renders it first")
    return ctx.canary


def plan_canary(ctx: Context) -> Result:
    """Plan mode: the canary's server-side dry run where there is a cluster."""
    canary = _rendered(ctx)
    if ctx.kube is None:
        return Result(summary=f"target {ctx.target_name} has no cluster: the canary above is not applied",
                      outcome="planned", details={"manifest": canary})
    action = canary_action(ctx)
    dry = ctx.kube.apply([canary], namespace=ctx.settings.namespace, dry_run=True, field_manager=FIELD_MANAGER)
    return Result(summary=f"{action} {ctx.canary_name} (server-side dry run accepted)", outcome="planned",
                  rows=[{"kind": "Deployment", "name": ctx.canary_name, "action": action,
                         "dry run": "accepted by the server"}], details={"manifest": canary, "dry_run": dry})


def _cannot_deploy(ctx: Context) -> str | None:
    if ctx.canary is None:
        return "no canary manifest (see the step above)"
    if ctx.applying and ctx.kube is None:
        return f"target {ctx.target_name} has no cluster: nothing deployed"
    return None


@change("deploy-canary", "Deploy the canary", plan=plan_canary, skip_if=_cannot_deploy, undo=JOURNAL)
def deploy_canary(ctx: Context) -> Result:
    """Apply the canary (server-side apply) and wait until its one pod is Ready. The undo deletes a
    canary this created, and puts back one it changed."""
    canary = _rendered(ctx)
    ns = ctx.settings.namespace
    action = canary_action(ctx)
    ctx.journal.apply(ctx.kube, [canary], namespace=ns, field_manager=FIELD_MANAGER)
    done = ctx.kube.wait_rollout(namespace=ns, name=ctx.canary_name, timeout=ctx.settings.timeout)
    sel = ",".join(f"{k}={v}" for k, v in sorted(canary["spec"]["selector"]["matchLabels"].items()))
    pods = ctx.kube.pods(namespace=ns, selector=sel)
    return Result(summary=f"{action} {ctx.canary_name}: v{ctx.target_version} Ready in {done.seconds:.1f} s",
                  outcome="ok" if action.startswith("keep") else "changed", rows=pods,
                  details={"canary": ctx.canary_name, "version": ctx.target_version, "action": action,
                           "seconds": done.seconds})
