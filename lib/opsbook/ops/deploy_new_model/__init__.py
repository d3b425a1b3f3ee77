"""The `deploy-new-model` runbook's logic: a registry-checked canary of ``proposer``/``critic``, judged
by the sequential canary judge, then promoted or rolled back behind an approval, and verified.

Plain functions over a :class:`ModelRollout` (settings, clients, and what the steps found so far) that
return :class:`~opsbook.results.Result` / :class:`~opsbook.results.Check`; the notebook calls them one
per cell::

    ctx = rollout.configure(params, target, run_id=..., operator=..., plan_record=...).value
    rollout.preflight(ctx)                           # registry, cluster, serving version, metrics source
    rollout.registry_version(ctx); rollout.serving(ctx)
    rollout.canary_manifest(ctx)                     # rendered from the stable Deployment
    rollout.deploy_canary(ctx)  /  rollout.plan_canary(ctx)
    rollout.collect(ctx); rollout.judge(ctx); rollout.plot(ctx)
    rollout.decide(ctx)                              # the approved plan's verdict, or the decision parameter
    rollout.promote(ctx) / plan_promote; rollout.rollback(ctx) / plan_rollback
    rollout.move_alias(ctx) / plan_alias; rollout.verify_instances(ctx)

How the version is identified, consistently with ``charts/ml-platform``: every model container has
the environment variables ``MODEL_URI`` and ``MODEL_VERSION`` (what the server loads), and the pod
template carries the annotations ``opsbook.io/model-uri`` and ``opsbook.io/model-version`` (what
people and this runbook read). The serving version is read from the stable Deployment's container
environment (the annotation when the environment lacks it; a disagreement is reported). The stable
Deployment is the one labelled ``app.kubernetes.io/name=<model>`` and ``opsbook.io/track=stable``.

The canary is a Deployment ``<stable name>-canary``: the stable pod template with the new version's
pinned URI (``models:/<name>/<version>``, never an alias, so that moving an alias cannot change what a
running pod loads on restart) and ``opsbook.io/track: canary``; its pods keep the Service's selector
labels, so the Service sends them their share of traffic; the stable Deployment's selector includes
``opsbook.io/track: stable``, so it never adopts them (preflight refuses a stable Deployment whose
selector would).

Approval flow (risk high): a plan run judges the canary and records the verdict (step
:data:`JUDGE_STEP`); the apply that names it (``--approve PLAN_RUN_ID``) reads that verdict back from
the archived plan record and acts on it (``decision=auto``), or on the ``decision`` parameter. On a
cluster with Prometheus the first plan has no canary to judge: its apply deploys the canary and holds;
after ``monitor_minutes`` a second plan judges it and that plan's apply promotes or rolls back.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Conflict, NotFound, OpsbookError, ParameterError, Problem
from opsbook.notebook.display import show_code, show_png
from opsbook.results import Check, Result

RUNBOOK_ID = "deploy-new-model"
TRACK_LABEL = "opsbook.io/track"
NAME_LABEL = "app.kubernetes.io/name"
VERSION_KEY = "opsbook.io/model-version"
URI_KEY = "opsbook.io/model-uri"
CANARY_OF_KEY = "opsbook.io/canary-of"
ENV_VERSION, ENV_URI = "MODEL_VERSION", "MODEL_URI"
CANARY_SUFFIX = "-canary"
FIELD_MANAGER = "opsbook-deploy-new-model"
JUDGE_STEP = "Judge the canary"
SERVING_STEP = "Version now serving"
REGISTRY_STEP = "Model version in the registry"
CANARY_STEP = "Render the canary"
DECISIONS = ("auto", "promote", "rollback")
DEFAULT_METRICS_FILE = "examples/metrics/proposer-canary-healthy.csv"
_SERVER_FIELDS = ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation",
                  "ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """The runbook's parameters as this module uses them, plus what the target says."""

    model: str = "proposer"
    registered_model: str = ""
    version: str = ""
    production_alias: str = "production"
    namespace: str = "ml-platform"
    deployment: str = ""
    serving_version: str = ""
    tracking_uri: str = ""
    metrics_file: str = ""
    prometheus_url: str = ""
    monitor_minutes: int = 60
    interval_seconds: int = 60
    warmup_intervals: int = 1
    tolerance: float = 0.05
    error_rate_tolerance: float = 1.0
    tail_tolerance: float = 0.25
    alpha: float = 0.05
    decision: str = "auto"
    move_alias: bool = False
    timeout: float = 300.0
    # derived
    target: str = "local"
    applying: bool = False
    has_cluster: bool = False

    @property
    def registry_name(self) -> str:
        return self.registered_model or self.model

    @property
    def window_intervals(self) -> int:
        return max(1, int(self.monitor_minutes * 60 // self.interval_seconds))

def settings_from(params: Mapping[str, Any], target: Any, *, applying: bool | None = None) -> Settings:
    known = {f for f in Settings.__dataclass_fields__ if f not in ("target", "applying", "has_cluster")}
    values = {k: params[k] for k in known if k in params and params[k] is not None}
    values["tracking_uri"] = str(values.get("tracking_uri") or getattr(target, "mlflow_uri", None) or "").rstrip("/")
    values["prometheus_url"] = str(values.get("prometheus_url") or getattr(target, "prometheus_url", None) or "")
    decision = str(values.get("decision", "auto"))
    if decision not in DECISIONS:
        raise OpsbookError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
    s = Settings(**values, target=getattr(target, "name", "local"),
                 applying=bool(params.get("mode") == "apply") if applying is None else applying,
                 has_cluster=bool(getattr(target, "has_cluster", False)))
    problems = _check_judge_settings(s)
    if problems:
        raise ParameterError(problems)
    return s


def _check_judge_settings(s: Settings) -> list[Problem]:
    """What the parameters cell's bounds cannot say: the warm-up must leave intervals to judge, and
    the tail tolerance must be one the judge takes."""
    problems = []
    w = s.warmup_intervals
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        problems.append(Problem("warmup_intervals", repr(w), "expected a whole number of intervals >= 0 (0: none)"))
    elif w >= s.window_intervals:
        problems.append(Problem("warmup_intervals", repr(w), f"expected at most {s.window_intervals - 1}: the "
                                f"warm-up must leave at least one of the monitoring period's {s.window_intervals} "
                                f"intervals of {s.interval_seconds} s (monitor_minutes={s.monitor_minutes}) to judge"))
    t = s.tail_tolerance
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t < 100):
        problems.append(Problem("tail_tolerance", repr(t), "expected a number >= 0 and < 100 (0.25: the canary may "
                                "have up to 1.25 times the stable's share of requests above its p99)"))
    return problems


def metric_specs(tolerance: float = 0.05, error_rate_tolerance: float = 1.0,
                 tail_tolerance: float | None = None) -> tuple[Any, ...]:
    """The judge's four metrics (accuracy, latency, error rate, ``d``) with the runbook's tolerances;
    ``tail_tolerance`` is latency's ``exceed_tolerance`` (its p99 exceedance test; every metric with
    tail tests); None keeps the judge's own default."""
    from opsbook.canary import DEFAULT_METRICS

    return tuple(replace(s, tolerance=error_rate_tolerance if s.name == "error_rate" else tolerance,
                         exceed_tolerance=tail_tolerance if s.tail and tail_tolerance is not None
                         else s.exceed_tolerance)
                 for s in DEFAULT_METRICS)


def _specs(s: Settings) -> tuple[Any, ...]:
    return metric_specs(s.tolerance, s.error_rate_tolerance, s.tail_tolerance)


def _warmup_text(s: Settings) -> str:
    k = s.warmup_intervals
    if not k:
        return "none: every interval is judged"
    return (f"the first {k} interval(s), {k * s.interval_seconds / 60:g} min, are not judged (warmup_intervals "
            f"{k}): a new pod's first requests are slow")


@dataclass
class Serving:
    """What serves now: the stable Deployment and the model version its pods load (the rollback target)."""

    version: str
    uri: str = ""
    deployment: str = ""
    namespace: str = ""
    replicas: int = 0
    found_by: str = ""  # how the version was read
    object: dict[str, Any] | None = None  # the stable Deployment as read before any change

    def as_details(self) -> dict[str, Any]:
        return {"version": self.version, "uri": self.uri, "deployment": self.deployment,
                "namespace": self.namespace, "replicas": self.replicas, "found_by": self.found_by}


@dataclass
class ModelRollout:
    """Settings, clients, and what the steps have found (each step reads what earlier ones stored)."""

    settings: Settings
    kube: Any = None  # clients.kube.Kube (None: no cluster on this target)
    registry: Any = None  # clients.registry.Registry (None: no tracking URI)
    prom: Any = None  # clients.prometheus.Prometheus (None: recorded metrics)
    helm: Any = None  # clients.helm.Helm, for the stand-in stable Deployment when there is no cluster
    run_id: str = ""
    operator: str = ""
    approved_plan: str | None = None
    plan_record: Any = None  # the approved plan's manifest, or a callable returning it
    metrics_path: Path | None = None
    cluster_error: str = ""
    # found by the steps
    candidate: Any = None  # clients.registry.RegistryVersion
    in_production_by: str = ""  # "alias" | "stage"
    alias_before: Any = None  # the version the production alias pointed at when the run started
    serving: Serving | None = None
    stable_name: str = ""
    canary: dict[str, Any] | None = None
    frame: Any = None
    analysis: Any = None
    verdict: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None  # promote | rollback | None (hold)
    decision_basis: dict[str, Any] = field(default_factory=dict)
    alias_move: dict[str, Any] | None = None

    @property
    def s(self) -> Settings:
        return self.settings

    @property
    def canary_name(self) -> str:
        return (self.stable_name or f"{self.s.model}") + CANARY_SUFFIX

    @property
    def target_version(self) -> str:
        """The version to deploy (found by the registry check, else the ``version`` parameter)."""
        return self.candidate.version if self.candidate is not None else self.s.version

    @property
    def target_uri(self) -> str:
        v = self.target_version
        return f"models:/{self.s.registry_name}/{v}" if v else ""

    def load_plan_record(self) -> dict[str, Any] | None:
        rec = self.plan_record
        if callable(rec):
            rec = rec()
            self.plan_record = rec
        return rec


def _find_metrics_file(path: str) -> Path | None:
    """A metrics file given relative to the current directory, the project root or notebooks/."""
    from opsbook.catalog import project_root

    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    source = os.environ.get("OPSBOOK_SOURCE")
    bases = [Path.cwd(), project_root()] + ([Path(source).parent] if source else [])
    for base in bases:
        if (base / p).exists():
            return (base / p).resolve()
    return (project_root() / p).resolve()


def configure(params: Mapping[str, Any], target: Any, *, run_id: str = "", operator: str = "",
              approved_plan: str | None = None, plan_record: Any = None, kube: Any = None, registry: Any = None,
              prom: Any = None) -> Result:
    """The settings cell: which model and version, where it serves, where the metrics come from. Clients
    are built from the target (tests pass their own)."""
    s = settings_from(params, target)
    ctx = ModelRollout(settings=s, run_id=run_id, operator=operator, approved_plan=approved_plan,
                       plan_record=plan_record, kube=kube, registry=registry, prom=prom)
    if ctx.kube is None and s.has_cluster:
        from opsbook.clients.kube import Kube

        try:
            ctx.kube = Kube(kubeconfig=getattr(target, "kubeconfig", None),
                            context=getattr(target, "kube_context", None))
        except ClientError as exc:
            ctx.cluster_error = str(exc)
    if ctx.registry is None and s.tracking_uri:
        from opsbook.clients.registry import Registry

        ctx.registry = Registry(s.tracking_uri, timeout=min(60.0, s.timeout))
    if s.metrics_file:
        ctx.metrics_path = _find_metrics_file(s.metrics_file)
    elif s.target == "local":
        ctx.metrics_path = _find_metrics_file(DEFAULT_METRICS_FILE)
    elif ctx.prom is None and s.prometheus_url:
        from opsbook.clients.prometheus import Prometheus

        ctx.prom = Prometheus(s.prometheus_url, timeout=min(30.0, s.timeout))
    metrics = (f"recorded file {ctx.metrics_path}" if ctx.metrics_path else
               f"Prometheus {getattr(ctx.prom, 'url', s.prometheus_url)}" if ctx.prom is not None else
               "none: give metrics_file, prometheus_url, or a target with prometheus_url")
    rows = [
        {"setting": "model", "value": f"{s.model} (registered as {s.registry_name})"},
        {"setting": "version to deploy", "value": s.version or f"the one @{s.production_alias} points at "
                                                               "(else the newest in stage Production)"},
        {"setting": "registry", "value": s.tracking_uri or "none on this target: registry steps plan only "
                                                           "(give tracking_uri)"},
        {"setting": "cluster", "value": (f"namespace {s.namespace} on the target's cluster"
                                         + (f" (UNREACHABLE: {ctx.cluster_error})" if ctx.cluster_error else ""))
         if s.has_cluster else "none on this target: Kubernetes steps plan only"},
        {"setting": "metrics", "value": metrics},
        {"setting": "monitoring period", "value": f"{s.monitor_minutes} min in {s.interval_seconds} s intervals "
                                                  f"({s.window_intervals} looks)"},
        {"setting": "warm-up", "value": _warmup_text(s)},
        {"setting": "tolerances", "value": f"accuracy, latency, d: {s.tolerance:.0%}; error rate: "
                                           f"{s.error_rate_tolerance:.0%}; p99 latency: the canary's share of "
                                           f"requests above the stable's p99 up to {1 + s.tail_tolerance:g}x the "
                                           f"stable's; false-rollback rate <= {s.alpha:g}"},
        {"setting": "decision", "value": {"auto": "follow the judge's verdict (of the approved plan, in apply)",
                                          "promote": "promote (operator's decision)",
                                          "rollback": "roll back (operator's decision)"}[s.decision]},
        {"setting": "registry alias", "value": f"@{s.production_alias} is moved to match the outcome"
         if s.move_alias else f"@{s.production_alias} is not touched (move_alias false)"},
    ]
    if approved_plan:
        rows.append({"setting": "approved plan", "value": approved_plan})
    return Result(summary=f"{s.model} on {s.target}: metrics from "
                  + ("a recorded file" if ctx.metrics_path else "Prometheus" if ctx.prom is not None else "nowhere"),
                  rows=rows, value=ctx,
                  details={"model": s.model, "registered_model": s.registry_name, "target": s.target,
                           "approved_plan": approved_plan, "metrics_file": str(ctx.metrics_path or ""),
                           "prometheus_url": s.prometheus_url if ctx.prom is not None else ""})


# ------------------------------------------------------------------------------------------ registry


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_registry(ctx: ModelRollout) -> list[Check]:
    """The version exists and is in Production: by alias first, else by the legacy stage. Stores the
    candidate and where the alias pointed before any change."""
    s, reg = ctx.s, ctx.registry
    if reg is None:
        return [Check("model version in Production", True,
                      "skipped: no tracking URI on this target, the registry is not checked (give tracking_uri)")]
    name = s.registry_name
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
        return [Check("model registry reachable", False, _reason(exc))]
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


def registry_version(ctx: ModelRollout) -> Result:
    """The candidate version as the registry has it: source, run, stage, aliases, and the evaluation
    metrics of the run that produced it."""
    mv = ctx.candidate
    if ctx.registry is None or mv is None:
        return Result(summary="no registry on this target (give tracking_uri): version "
                      + (ctx.s.version or "(from the production alias)") + " is taken as given", outcome="skipped")
    metrics: dict[str, float] = {}
    note = ""
    try:
        metrics = ctx.registry.run_metrics(mv.run_id)
    except ClientError as exc:
        note = f"; its run could not be read: {_reason(exc)}"
    rows = [{"field": "model", "value": f"{mv.name} v{mv.version}"},
            {"field": "status", "value": mv.status},
            {"field": "in Production", "value": f"by alias @{ctx.s.production_alias}" if ctx.in_production_by ==
             "alias" else "by legacy stage Production"},
            {"field": "stage", "value": mv.stage}, {"field": "aliases", "value": ", ".join(mv.aliases) or "-"},
            {"field": "source", "value": mv.source}, {"field": "run id", "value": mv.run_id or "-"},
            {"field": "deployed as", "value": mv.uri}]
    rows += [{"field": f"metric {k}", "value": f"{v:.6g}"} for k, v in metrics.items()]
    return Result(summary=f"{mv.name} v{mv.version} in Production by {ctx.in_production_by}, run "
                  f"{mv.run_id or '-'}, {len(metrics)} evaluation metric(s)" + note, rows=rows,
                  details={"name": mv.name, "version": mv.version, "source": mv.source, "run_id": mv.run_id,
                           "stage": mv.stage, "aliases": list(mv.aliases), "in_production_by": ctx.in_production_by,
                           "metrics": metrics, "alias_before": getattr(ctx.alias_before, "version", None)})


# ------------------------------------------------------------------------------------------ cluster


def _containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])


def _env_value(containers: list[dict[str, Any]], name: str) -> str | None:
    for c in containers:
        for e in c.get("env") or []:
            if e.get("name") == name and "value" in e:
                return str(e["value"])
    return None


def model_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(version, uri, found_by) a Deployment's pod template (or a Pod) serves: the container environment
    first, else the ``opsbook.io/model-*`` annotations."""
    if "template" not in (obj.get("spec") or {}):  # a Pod (list items carry no kind)
        containers = list((obj.get("spec") or {}).get("containers") or [])
        ann = (obj.get("metadata") or {}).get("annotations") or {}
    else:
        containers = _containers(obj)
        ann = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    version, uri = _env_value(containers, ENV_VERSION), _env_value(containers, ENV_URI)
    if version is not None:
        how = f"container env {ENV_VERSION}"
        if ann.get(VERSION_KEY) not in (None, version):
            how += f" (annotation {VERSION_KEY} says {ann[VERSION_KEY]}!)"
        return version, uri or ann.get(URI_KEY, ""), how
    if VERSION_KEY in ann:
        return str(ann[VERSION_KEY]), str(ann.get(URI_KEY, uri or "")), f"annotation {VERSION_KEY}"
    return "", uri or "", "not found"


def find_stable(ctx: ModelRollout) -> dict[str, Any]:
    """The stable Deployment: by name (``deployment``) or by labels (name=<model>, track=stable)."""
    s = ctx.s
    if s.deployment:
        return ctx.kube.get(kind="Deployment", name=s.deployment, namespace=s.namespace)
    sel = f"{NAME_LABEL}={s.model},{TRACK_LABEL}=stable"
    found = ctx.kube.list_objects(kind="Deployment", namespace=s.namespace, selector=sel)
    if not found:
        raise NotFound(f"no Deployment labelled {sel} in namespace {s.namespace} (give deployment=NAME)")
    if len(found) > 1:
        names = ", ".join(d["metadata"]["name"] for d in found)
        raise OpsbookError(f"{len(found)} Deployments labelled {sel} in {s.namespace} ({names}): name one with "
                           "deployment=NAME")
    return found[0]


def check_cluster(ctx: ModelRollout) -> list[Check]:
    """The cluster answers, the stable Deployment exists and says which version it serves, its selector
    keeps canary pods out, and we may create, patch and delete Deployments."""
    s = ctx.s
    if ctx.kube is None:
        if ctx.cluster_error:
            return [Check("cluster reachable", False, ctx.cluster_error)]
        ctx.serving = Serving(version=s.serving_version, found_by="parameter serving_version"
                              if s.serving_version else "unknown", namespace=s.namespace)
        return [Check("cluster", True, f"skipped: target {s.target} has no cluster, Kubernetes steps plan only"),
                Check("version now serving", True, f"v{s.serving_version} (parameter serving_version)" if
                      s.serving_version else "unknown: no cluster and serving_version is empty (a rollback "
                      "target is needed before a real change)")]
    checks: list[Check] = []
    try:
        ver = ctx.kube.version()
        checks.append(Check("cluster reachable", True, f"Kubernetes {ver.get('gitVersion', '?')} at {ctx.kube.host}"))
    except ClientError as exc:
        return [Check("cluster reachable", False, _reason(exc))]
    try:
        stable = find_stable(ctx)
    except (ClientError, OpsbookError) as exc:
        return [*checks, Check("stable Deployment", False, _reason(exc))]
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
        missing.append(f"(access review failed: {_reason(exc)})")
    checks.append(Check("may change Deployments", not missing, "create, patch, delete" if not missing else
                        f"not allowed to {', '.join(missing)} deployments in {s.namespace}"))
    return checks


def check_metrics_source(ctx: ModelRollout) -> list[Check]:
    if ctx.metrics_path is not None:
        from opsbook.ops.deploy_new_model.metrics import MetricsFileError, load_metrics

        try:
            frame = load_metrics(ctx.metrics_path, metrics=_specs(ctx.s))
        except MetricsFileError as exc:
            return [Check("metrics file", False, str(exc))]
        return [Check("metrics file", True, f"{ctx.metrics_path.name}: {frame['interval'].nunique()} intervals")]
    if ctx.prom is None:
        return [Check("metrics source", False, "no metrics source: give metrics_file (a recorded CSV/Parquet) or "
                      "prometheus_url, or use a target with prometheus_url")]
    ok = ctx.prom.healthy()
    return [Check("Prometheus healthy", ok, f"{ctx.prom.url} answers /-/healthy" if ok else
                  f"{ctx.prom.url} does not answer /-/healthy")]


def preflight(ctx: ModelRollout) -> list[Check]:
    """Every prerequisite, before anything changes: the registry, the cluster and the serving version,
    the metrics source, and that the new version is not the one already serving."""
    checks = check_registry(ctx) + check_cluster(ctx) + check_metrics_source(ctx)
    new, old = ctx.target_version, getattr(ctx.serving, "version", "")
    if new and old and new == old:
        where = ctx.stable_name or "the stable instances"
        checks.append(Check("a new version", False, f"v{new} is already serving on {where}: nothing to deploy"))
    elif new:
        checks.append(Check("a new version", True, f"v{new} replaces v{old or '?'}"))
    elif ctx.kube is not None or ctx.s.applying:
        checks.append(Check("a version to deploy", False, "no version: give version, or a tracking_uri whose "
                            f"registry has @{ctx.s.production_alias} or a version in stage Production"))
    else:
        checks.append(Check("a version to deploy", True, "not given (no registry, no cluster): the plan shows "
                            "the canary with a placeholder version"))
    return checks


def serving(ctx: ModelRollout) -> Result:
    """The version serving now: the rollback target, recorded before any change."""
    sv = ctx.serving
    if sv is None:
        return Result(summary="not known (preflight did not run)", outcome="failed")
    rows: list[dict[str, Any]] = [{"field": "deployment", "value": sv.deployment or "(no cluster)"},
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


def _clean_metadata(meta: Mapping[str, Any], *, name: str, namespace: str) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in meta.items() if k not in _SERVER_FIELDS}
    out["name"], out["namespace"] = name, namespace
    ann = {k: v for k, v in (out.get("annotations") or {}).items()
           if not k.startswith(("deployment.kubernetes.io/", "meta.helm.sh/", "kubectl.kubernetes.io/"))}
    if ann:
        out["annotations"] = ann
    else:
        out.pop("annotations", None)
    return out


def set_model(template: dict[str, Any], *, version: str, uri: str, container: str | None = None) -> dict[str, Any]:
    """Point a pod template at a model version: ``MODEL_VERSION``/``MODEL_URI`` in every container that
    has them (else in ``container`` or the first one), and the ``opsbook.io/model-*`` annotations."""
    t = copy.deepcopy(template)
    meta = t.setdefault("metadata", {})
    meta.setdefault("annotations", {}).update({VERSION_KEY: str(version), URI_KEY: uri})
    containers = t.setdefault("spec", {}).setdefault("containers", [])
    having = [c for c in containers if any(e.get("name") in (ENV_VERSION, ENV_URI) for e in c.get("env") or [])]
    if not having and containers:
        having = [next((c for c in containers if c.get("name") == container), containers[0])]
    for c in having:
        env = c.setdefault("env", [])
        for key, value in ((ENV_URI, uri), (ENV_VERSION, str(version))):
            for e in env:
                if e.get("name") == key:
                    e.clear()
                    e.update({"name": key, "value": value})
                    break
            else:
                env.append({"name": key, "value": value})
    return t


def render_canary(stable: Mapping[str, Any], *, version: str, uri: str, model: str = "") -> dict[str, Any]:
    """The canary Deployment: the stable one's pod template with the new version, one replica,
    ``opsbook.io/track: canary`` in its labels and selector (the Service's labels kept)."""
    meta = stable.get("metadata") or {}
    name = meta["name"] + CANARY_SUFFIX
    labels = {**(meta.get("labels") or {}), TRACK_LABEL: "canary", "app.kubernetes.io/managed-by": "opsbook"}
    labels.pop("helm.sh/chart", None)
    spec = stable.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    tmeta = template.setdefault("metadata", {})
    tlabels = {**(tmeta.get("labels") or {}), TRACK_LABEL: "canary", "app.kubernetes.io/managed-by": "opsbook"}
    tlabels.pop("helm.sh/chart", None)
    tmeta["labels"] = tlabels
    for k in ("creationTimestamp",):
        tmeta.pop(k, None)
    template = set_model(template, version=version, uri=uri, container=model or None)
    selector = {**(((spec.get("selector") or {}).get("matchLabels")) or {}), TRACK_LABEL: "canary"}
    out_meta = _clean_metadata(meta, name=name, namespace=meta.get("namespace", ""))
    out_meta["labels"] = labels
    out_meta["annotations"] = {CANARY_OF_KEY: meta["name"], VERSION_KEY: str(version), URI_KEY: uri}
    out_spec: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": selector}, "template": template}
    for k in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy"):
        if k in spec:
            out_spec[k] = copy.deepcopy(spec[k])
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": out_meta, "spec": out_spec}


def _standin_stable(ctx: ModelRollout) -> dict[str, Any] | None:
    """Without a cluster: the stable Deployment as the ml-platform chart renders it (``helm template``),
    so that the plan still shows the canary it would create."""
    from opsbook.catalog import project_root
    from opsbook.clients.helm import Helm

    chart = project_root() / "charts" / "ml-platform"
    if not chart.is_dir():
        return None
    helm = ctx.helm or Helm(namespace=ctx.s.namespace)
    sets: dict[str, Any] = {"ingress.enabled": False}
    if ctx.s.serving_version:
        sets[f"services.{ctx.s.model}.model.version"] = ctx.s.serving_version
        sets[f"services.{ctx.s.model}.model.uri"] = f"models:/{ctx.s.registry_name}/{ctx.s.serving_version}"
    ms = helm.template("ml-platform", str(chart), set_values=sets, namespace=ctx.s.namespace)
    for m in ms:
        labels = (m.get("metadata") or {}).get("labels") or {}
        if m.get("kind") == "Deployment" and labels.get(NAME_LABEL) == ctx.s.model:
            m["metadata"].setdefault("namespace", ctx.s.namespace)
            return m
    return None


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)




def canary_manifest(ctx: ModelRollout) -> Result:
    """Render the canary from the stable Deployment (on a target without a cluster: from the chart's
    rendering of it) and show it."""
    version, placeholder = ctx.target_version, False
    if not version:
        if ctx.kube is not None or ctx.registry is not None:
            return Result(summary="no version to deploy: give version (or a tracking_uri whose registry has "
                          f"@{ctx.s.production_alias})", outcome="skipped")
        version, placeholder = "NEW", True  # no cluster, no registry: an illustration of the canary
    stable: dict[str, Any] | None
    if ctx.serving is not None and ctx.serving.object is not None:
        stable, source = ctx.serving.object, f"the stable Deployment {ctx.serving.deployment}"
    else:
        try:
            stable = _standin_stable(ctx)
        except (ClientError, OSError) as exc:
            return Result(summary=f"no cluster, and the chart could not be rendered ({_reason(exc)}): the canary "
                          "is rendered from the stable Deployment when there is a cluster", outcome="skipped")
        if stable is None:
            return Result(summary="no cluster and no chart to render the stable Deployment from", outcome="skipped")
        source = "the ml-platform chart's stable Deployment (no cluster: rendered with helm template)"
        ctx.stable_name = stable["metadata"]["name"]
    uri = ctx.target_uri or f"models:/{ctx.s.registry_name}/{version}"
    ctx.canary = render_canary(stable, version=version, uri=uri, model=ctx.s.model)
    show_code(_yaml(ctx.canary))
    rows = [{"field": "name", "value": ctx.canary["metadata"]["name"]},
            {"field": "rendered from", "value": source},
            {"field": "replicas", "value": 1},
            {"field": "model", "value": f"v{version} ({uri})" + (" (no version given: a placeholder)"
                                                                 if placeholder else "")},
            {"field": "selector", "value": ctx.canary["spec"]["selector"]["matchLabels"]}]
    return Result(summary=f"{ctx.canary['metadata']['name']}: 1 replica of v{version} beside "
                  f"{ctx.stable_name or 'the stable Deployment'}" + (
                      " (no version given and no registry: VERSION NEW is a placeholder)" if placeholder else ""),
                  rows=rows, details={"manifest": ctx.canary, "placeholder": placeholder})


def plan_canary(ctx: ModelRollout) -> Result:
    """Plan mode: the canary's server-side dry run where there is a cluster."""
    if ctx.canary is None:
        return Result(summary="no canary manifest (see the step above)", outcome="skipped")
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: the canary above is not applied",
                      outcome="planned", details={"manifest": ctx.canary})
    action = _canary_action(ctx)
    dry = ctx.kube.apply([ctx.canary], namespace=ctx.s.namespace, dry_run=True, field_manager=FIELD_MANAGER)
    return Result(summary=f"{action} {ctx.canary_name} (server-side dry run accepted)", outcome="planned",
                  rows=[{"kind": "Deployment", "name": ctx.canary_name, "action": action,
                         "dry run": "accepted by the server"}], details={"manifest": ctx.canary, "dry_run": dry})


def _existing_canary(ctx: ModelRollout) -> dict[str, Any] | None:
    if ctx.kube is None:
        return None
    try:
        return ctx.kube.get(kind="Deployment", name=ctx.canary_name, namespace=ctx.s.namespace)
    except NotFound:
        return None


def _canary_action(ctx: ModelRollout) -> str:
    existing = _existing_canary(ctx)
    if existing is None:
        return "create"
    v, _, _ = model_of(existing)
    return f"keep (already running v{v})" if v == ctx.target_version else f"update (running v{v})"


def deploy_canary(ctx: ModelRollout) -> Result:
    """Apply the canary (server-side apply) and wait until its one pod is Ready."""
    if ctx.canary is None:
        return Result(summary="no canary manifest (see the step above)", outcome="skipped")
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: nothing deployed", outcome="skipped")
    action = _canary_action(ctx)
    ctx.kube.apply([ctx.canary], namespace=ctx.s.namespace, field_manager=FIELD_MANAGER)
    done = ctx.kube.wait_rollout(namespace=ctx.s.namespace, name=ctx.canary_name, timeout=ctx.s.timeout)
    sel = ",".join(f"{k}={v}" for k, v in sorted(ctx.canary["spec"]["selector"]["matchLabels"].items()))
    pods = ctx.kube.pods(namespace=ctx.s.namespace, selector=sel)
    return Result(summary=f"{action} {ctx.canary_name}: v{ctx.target_version} Ready in {done.seconds:.1f} s",
                  outcome="ok" if action.startswith("keep") else "changed", rows=pods,
                  details={"canary": ctx.canary_name, "version": ctx.target_version, "action": action,
                           "seconds": done.seconds})


# ------------------------------------------------------------------------------------------ metrics


def collect(ctx: ModelRollout, *, now: Any = None) -> Result:
    """Stable and canary metrics per analysis interval: the recorded file, or Prometheus over the
    monitoring period (from the canary's start if it is younger than the period)."""
    from opsbook.ops.deploy_new_model.metrics import collect_metrics

    specs = _specs(ctx.s)
    if ctx.metrics_path is not None:
        result = collect_metrics(recorded=ctx.metrics_path, metrics=specs)
    elif ctx.prom is not None:
        canary = _existing_canary(ctx)
        if ctx.kube is not None and canary is None:
            return Result(summary=f"no canary {ctx.canary_name} is running yet: nothing to judge. Apply this plan "
                          f"to start it, then plan again after {ctx.s.monitor_minutes} min", outcome="skipped")
        step = float(ctx.s.interval_seconds)
        end = _dt.datetime.now(_dt.UTC).timestamp() if now is None else float(now)
        end = math.floor(end / step) * step
        start = end - ctx.s.monitor_minutes * 60
        born = ((canary or {}).get("metadata") or {}).get("creationTimestamp")
        if born:
            t = _dt.datetime.fromisoformat(str(born).replace("Z", "+00:00")).timestamp()
            start = max(start, math.ceil(t / step) * step)
        if end - start < step:
            return Result(summary=f"the canary started less than one interval ({step:g} s) ago: nothing to judge "
                          "yet", outcome="skipped")
        result = collect_metrics(prom=ctx.prom, model=ctx.s.model, start=start, end=end, interval=step,
                                 metrics=specs)
    else:
        return Result(summary="no metrics source", outcome="failed")
    ctx.frame = result.value
    return result


def judge(ctx: ModelRollout) -> Result:
    """The sequential judge over the intervals (stopping at the first final verdict): per metric the
    estimates, the change, the tolerance and the reason; the verdict goes into the record."""
    from opsbook.canary import JudgeConfig
    from opsbook.ops.deploy_new_model.metrics import judge_metrics

    if ctx.frame is None:
        return Result(summary="no metrics to judge", outcome="skipped", details={"decision": None})
    config = JudgeConfig(window=ctx.s.window_intervals, alpha=ctx.s.alpha, warmup=ctx.s.warmup_intervals)
    result = judge_metrics(ctx.frame, metrics=_specs(ctx.s), config=config)
    ctx.analysis = result.value
    ctx.verdict = {**result.details, "warmup_intervals": config.warmup, "metrics": result.rows}
    result.details = dict(ctx.verdict)
    result.outcome = "ok"
    return result


def plot(ctx: ModelRollout) -> Result:
    """Each metric, stable vs canary, over the window, with the judge's boundaries (shown inline; the
    PNG's sha256 goes into the record)."""
    if ctx.analysis is None:
        return Result(summary="no analysis to plot", outcome="skipped")
    from opsbook.ops.deploy_new_model.plots import plot_analysis

    fig = plot_analysis(ctx.analysis)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    png = buf.getvalue()
    show_png(png)
    warmup = ctx.analysis.judge.config.warmup
    return Result(summary=f"{len(ctx.analysis.judge.specs)} panels, stable vs canary, decision boundaries drawn"
                  + (f", warm-up ({warmup} interval(s), not judged) shaded" if warmup else ""),
                  details={"png_sha256": hashlib.sha256(png).hexdigest(), "png_bytes": len(png),
                           "warmup_intervals": warmup}, value=fig)


# ------------------------------------------------------------------------------------------ decision


def _plan_step(record: Mapping[str, Any] | None, title: str) -> dict[str, Any] | None:
    for st in (record or {}).get("steps") or []:
        if st.get("title") == title:
            return st
    return None


def _planned_version(record: Mapping[str, Any] | None) -> str | None:
    """The version the plan was about: its registry step, else the canary it rendered."""
    reg = ((_plan_step(record, REGISTRY_STEP) or {}).get("details") or {}).get("version")
    if reg:
        return str(reg)
    manifest = ((_plan_step(record, CANARY_STEP) or {}).get("details") or {}).get("manifest") or {}
    version = ((manifest.get("metadata") or {}).get("annotations") or {}).get(VERSION_KEY)
    placeholder = ((_plan_step(record, CANARY_STEP) or {}).get("details") or {}).get("placeholder")
    return str(version) if version and not placeholder else None


def decide(ctx: ModelRollout) -> Result:
    """The decision: in apply mode the verdict of the approved plan (read back from its archived
    record), else this run's; ``decision`` promote/rollback overrides it (recorded as an override)."""
    s = ctx.s
    basis: dict[str, Any] = {"operator": ctx.operator, "run_id": ctx.run_id, "parameter": s.decision}
    verdict, reason = ctx.verdict.get("decision"), ctx.verdict.get("reason", "")
    source = "this run's judge"
    if s.applying and ctx.approved_plan:
        record = ctx.load_plan_record()
        step = _plan_step(record, JUDGE_STEP)
        details = (step or {}).get("details") or {}
        verdict, reason = details.get("decision"), details.get("reason", "")
        source = f"the approved plan {ctx.approved_plan}"
        basis["plan_run_id"] = ctx.approved_plan
        planned = _planned_version(record)
        if planned and ctx.target_version and planned != ctx.target_version:
            ctx.decision = None
            return Result(summary=f"the approved plan {ctx.approved_plan} judged v{planned}, but this run would "
                          f"deploy v{ctx.target_version} (the registry changed since the plan): nothing is "
                          "decided; make a new plan", outcome="failed",
                          details={**basis, "planned_version": planned, "version": ctx.target_version,
                                   "decision": "hold"})
        if ctx.verdict.get("decision") and ctx.verdict.get("decision") != verdict:
            basis["this_run_verdict"] = ctx.verdict.get("decision")
    elif s.applying:
        source = "this run's judge (no approved plan: an interactive apply)"
    basis.update(verdict=verdict, verdict_reason=reason, verdict_source=source)
    if s.decision in ("promote", "rollback"):
        ctx.decision = s.decision
        basis["override"] = verdict != s.decision
        why = (f"operator's decision {s.decision}" + (f", against the verdict {verdict}" if verdict and
                                                       verdict != s.decision else ""))
    elif verdict in ("promote", "rollback"):
        ctx.decision = verdict
        basis["override"] = False
        why = f"the verdict of {source}: {verdict}"
    else:
        ctx.decision = None
        said = f"the verdict of {source} is {verdict}" if verdict else f"{source} gave no verdict"
        why = (f"{said}: no automatic decision. " + (
            "Too little traffic to judge: extend monitor_minutes, or decide with decision=promote|rollback"
            if verdict == "inconclusive" else "Plan again when the canary has run longer"
            if verdict == "continue" else "Nothing was judged (no canary yet): apply this plan to start the "
            "canary, then plan again after the monitoring period"))
    ctx.decision_basis = {**basis, "decision": ctx.decision or "hold"}
    verb = "would " if not s.applying else ""
    summary = (f"{verb}{ctx.decision.upper()}: {why}" if ctx.decision else f"HOLD: {why}")
    if not s.applying and ctx.decision:
        summary += f"; the apply that approves this plan (--approve {ctx.run_id}) acts on this verdict"
    rows = [{"field": k, "value": v} for k, v in ctx.decision_basis.items()]
    return Result(summary=summary, rows=rows, details=dict(ctx.decision_basis))


def _skip_unless(ctx: ModelRollout, wanted: str) -> Result | None:
    if ctx.decision != wanted:
        return Result(summary=f"the decision is {ctx.decision or 'hold'}, not {wanted}", outcome="skipped")
    return None


def _deployment_path(ctx: ModelRollout, name: str) -> str:
    return ctx.kube.resource(kind="Deployment").path(namespace=ctx.s.namespace, name=name)


def _patch_stable(ctx: ModelRollout, *, version: str, uri: str, dry_run: bool = False,
                  attempts: int = 5) -> dict[str, Any]:
    """Strategic-merge patch of the stable Deployment's pod template (containers and env merged by name).

    The patch carries the resourceVersion it was computed from, so a change made in between (by a
    person, or the Deployment controller's own status update) is never overwritten blindly: on 409
    Conflict the Deployment is read again and the patch recomputed, as client-go's RetryOnConflict does."""
    for attempt in range(1, attempts + 1):
        stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=ctx.s.namespace)
        template = set_model(stable["spec"]["template"], version=version, uri=uri, container=ctx.s.model)
        patch = {"metadata": {"resourceVersion": stable["metadata"]["resourceVersion"]},
                 "spec": {"template": {"metadata": {"annotations": template["metadata"]["annotations"]},
                                       "spec": {"containers": [{"name": c["name"], "env": c.get("env") or []}
                                                               for c in template["spec"]["containers"]]}}}}
        try:
            return ctx.kube.request("PATCH", _deployment_path(ctx, ctx.stable_name), body=patch,
                                    content_type="application/strategic-merge-patch+json",
                                    query={"fieldManager": FIELD_MANAGER, "dryRun": "All" if dry_run else None})
        except Conflict:
            if attempt == attempts:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def _delete_canary(ctx: ModelRollout) -> bool:
    return ctx.kube.delete(kind="Deployment", name=ctx.canary_name, namespace=ctx.s.namespace)


def plan_promote(ctx: ModelRollout) -> Result:
    skip = _skip_unless(ctx, "promote")
    if skip:
        return skip
    what = (f"patch {ctx.stable_name or 'the stable Deployment'} from v{getattr(ctx.serving, 'version', '') or ctx.s.serving_version or '?'} "
            f"to v{ctx.target_version or '?'}" + (f" ({ctx.target_uri})" if ctx.target_uri else "")
            + f", delete {ctx.canary_name}")
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: would {what}", outcome="planned")
    dry = _patch_stable(ctx, version=ctx.target_version, uri=ctx.target_uri, dry_run=True)
    v, _, _ = model_of(dry)
    return Result(summary=f"would {what} (server-side dry run: the template would serve v{v})", outcome="planned",
                  details={"dry_run_version": v})


def promote(ctx: ModelRollout) -> Result:
    """Full rollout: the stable Deployment to the new version (rolling update, waited for), then the
    canary deleted."""
    skip = _skip_unless(ctx, "promote")
    if skip:
        return skip
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: nothing rolled out", outcome="skipped")
    before = ctx.serving.version if ctx.serving else ""
    _patch_stable(ctx, version=ctx.target_version, uri=ctx.target_uri)
    done = ctx.kube.wait_rollout(namespace=ctx.s.namespace, name=ctx.stable_name, timeout=ctx.s.timeout)
    deleted = _delete_canary(ctx)
    helm_values = {f"services.{ctx.s.model}.model.version": ctx.target_version,
                   f"services.{ctx.s.model}.model.uri": ctx.target_uri}
    rows = [{"field": "deployment", "value": ctx.stable_name},
            {"field": "version", "value": f"v{before or '?'} -> v{ctx.target_version} ({ctx.target_uri})"},
            {"field": "rolled out", "value": f"{done.replicas} replica(s) in {done.seconds:.1f} s"},
            {"field": "canary", "value": "deleted" if deleted else "was not there"},
            {"field": "chart values to carry on (else the next helm upgrade reverts this)",
             "value": ", ".join(f"{k}={v}" for k, v in helm_values.items())}]
    return Result(summary=f"{ctx.stable_name}: v{before or '?'} -> v{ctx.target_version}, {done.replicas} replica(s) "
                  f"rolled out in {done.seconds:.1f} s; canary {ctx.canary_name} "
                  + ("deleted" if deleted else "was not there"), outcome="changed", rows=rows,
                  details={"deployment": ctx.stable_name, "from_version": before, "to_version": ctx.target_version,
                           "uri": ctx.target_uri, "canary_deleted": deleted, "helm_values": helm_values,
                           **ctx.decision_basis})


def _rollback_target(ctx: ModelRollout) -> tuple[str, str, str]:
    """(version, uri, where from): what served before, from the approved plan's record if there is one."""
    step = _plan_step(ctx.load_plan_record() if ctx.approved_plan else None, SERVING_STEP)
    d = (step or {}).get("details") or {}
    if d.get("version"):
        return str(d["version"]), str(d.get("uri") or ""), f"the approved plan {ctx.approved_plan}"
    sv = ctx.serving or Serving(version="")
    return sv.version, sv.uri, "this run's preflight"


def plan_rollback(ctx: ModelRollout) -> Result:
    skip = _skip_unless(ctx, "rollback")
    if skip:
        return skip
    version, _, src = _rollback_target(ctx)
    return Result(summary=f"would delete {ctx.canary_name} and keep {ctx.stable_name or 'the stable Deployment'} on "
                  f"v{version or '?'} (recorded by {src})" + ("" if ctx.kube is not None else
                                                              f"; target {ctx.s.target} has no cluster"),
                  outcome="planned")


def rollback(ctx: ModelRollout) -> Result:
    """Delete the canary; the stable Deployment keeps (or gets back) exactly the version recorded
    before any change."""
    skip = _skip_unless(ctx, "rollback")
    if skip:
        return skip
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: nothing to roll back", outcome="skipped")
    version, uri, src = _rollback_target(ctx)
    deleted = _delete_canary(ctx)
    stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=ctx.s.namespace)
    now_v, now_uri, _ = model_of(stable)
    restored = False
    if version and (now_v != version or (uri and now_uri != uri)):
        _patch_stable(ctx, version=version, uri=uri or now_uri)
        ctx.kube.wait_rollout(namespace=ctx.s.namespace, name=ctx.stable_name, timeout=ctx.s.timeout)
        restored = True
    return Result(summary=f"canary {ctx.canary_name} " + ("deleted" if deleted else "was not there") + f"; "
                  f"{ctx.stable_name} " + (f"restored from v{now_v} to v{version}" if restored else
                                           f"unchanged on v{now_v}") + f" (recorded by {src})",
                  outcome="changed", details={"canary_deleted": deleted, "stable_version": version, "restored": restored,
                                              "recorded_by": src, **ctx.decision_basis})


# ------------------------------------------------------------------------------------------ alias


def _alias_plan(ctx: ModelRollout) -> tuple[str | None, str, Result | None]:
    """(version the alias should point at, why, a skip Result or None)."""
    s = ctx.s
    if not s.move_alias:
        return None, "", Result(summary=f"move_alias is false: @{s.production_alias} is not touched", outcome="skipped")
    if ctx.decision is None:
        return None, "", Result(summary="no decision: the alias is not touched", outcome="skipped")
    if ctx.registry is None:
        return None, "", Result(summary="no registry on this target (give tracking_uri): the alias move is only planned",
                                outcome="planned" if not s.applying else "skipped")
    current = ctx.registry.by_alias(s.registry_name, s.production_alias)
    cur = current.version if current else None
    if ctx.decision == "promote":
        to = ctx.target_version
        if cur == to:
            return None, "", Result(summary=f"@{s.production_alias} already points at v{to}", outcome="ok",
                                    details={"alias": s.production_alias, "version": to, "moved": False})
        return to, f"promote: v{to} now serves every instance", None
    version, _, _ = _rollback_target(ctx)
    if cur != ctx.target_version:
        return None, "", Result(summary=f"@{s.production_alias} points at v{cur or '(nothing)'}, not the rolled back "
                                f"v{ctx.target_version}: left as it is", outcome="ok",
                                details={"alias": s.production_alias, "version": cur, "moved": False})
    if not version:
        return None, "", Result(summary=f"@{s.production_alias} points at the rolled back v{cur}, but the version "
                                "that served before is unknown: move it by hand", outcome="failed")
    return version, f"rollback: v{version} serves again, v{cur} was rejected", None


def plan_alias(ctx: ModelRollout) -> Result:
    to, why, skip = _alias_plan(ctx)
    if skip:
        return skip
    return Result(summary=f"would point @{ctx.s.production_alias} of {ctx.s.registry_name} at v{to} ({why})",
                  outcome="planned", details={"alias": ctx.s.production_alias, "to_version": to})


def move_alias(ctx: ModelRollout) -> Result:
    """Point the production alias at the version that serves after the decision. The record says which
    version, when, by whom, and on what evidence (approved plan, verdict)."""
    to, why, skip = _alias_plan(ctx)
    if skip:
        return skip
    s = ctx.s
    current = ctx.registry.by_alias(s.registry_name, s.production_alias)
    at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    ctx.registry.set_alias(s.registry_name, s.production_alias, to)
    evidence = {k: ctx.decision_basis.get(k) for k in ("plan_run_id", "verdict", "verdict_reason", "verdict_source",
                                                          "override", "decision")}
    note = (f"@{s.production_alias} -> v{to} by {ctx.operator} at {at} (run {ctx.run_id}, "
            f"plan {evidence.get('plan_run_id') or '-'}, verdict {evidence.get('verdict')})")
    try:
        ctx.registry.set_version_tag(s.registry_name, to, "opsbook.alias_moved", note)
    except ClientError:
        pass  # the record below is the evidence; the tag is a convenience
    ctx.alias_move = {"alias": s.production_alias, "model": s.registry_name, "from_version":
                      current.version if current else None, "to_version": to, "at": at, "by": ctx.operator,
                      "run_id": ctx.run_id, "why": why, "evidence": evidence}
    rows = [{"field": k, "value": v} for k, v in ctx.alias_move.items() if k != "evidence"]
    rows += [{"field": f"evidence: {k}", "value": v} for k, v in evidence.items()]
    return Result(summary=note, outcome="changed", rows=rows, details=dict(ctx.alias_move))


# ------------------------------------------------------------------------------------------ verify


def verify_instances(ctx: ModelRollout, *, wait: float | None = None, poll: float = 0.5) -> Result:
    """Every pod of the stable Deployment is Ready and serves the version the decision put there, their
    number is the Deployment's replicas, and no canary pod is left (waits for old pods to go)."""
    import time

    if not ctx.s.applying:
        return Result(summary="plan mode: the instances are verified after the apply", outcome="skipped")
    if ctx.decision is None:
        return Result(summary="no decision was carried out: nothing to verify", outcome="skipped")
    if ctx.kube is None:
        return Result(summary=f"target {ctx.s.target} has no cluster: nothing to verify", outcome="skipped")
    want = ctx.target_version if ctx.decision == "promote" else _rollback_target(ctx)[0]
    stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=ctx.s.namespace)
    replicas = int(stable["spec"].get("replicas", 1))
    service_sel = ",".join(f"{k}={v}" for k, v in sorted(stable["spec"]["selector"]["matchLabels"].items())
                           if k != TRACK_LABEL)
    deadline = time.monotonic() + (min(ctx.s.timeout, 120.0) if wait is None else wait)
    from opsbook.clients.kube import pod_row

    while True:
        pods = ctx.kube.pod_objects(namespace=ctx.s.namespace, selector=service_sel)
        rows, problems = [], []
        for p in sorted(pods, key=lambda p: p["metadata"]["name"]):
            v, _, _ = model_of(p)
            track = (p["metadata"].get("labels") or {}).get(TRACK_LABEL, "")
            row = pod_row(p)
            rows.append({"pod": row["pod"], "track": track, "version": v, "ready": row["ready"], "phase": row["phase"]})
            if track != "stable":
                problems.append(f"{row['pod']} is a {track or 'unlabelled'} pod")
            elif v != want:
                problems.append(f"{row['pod']} serves v{v}")
            elif not row["ready"] or row["ready"].split("/")[0] != row["ready"].split("/")[1] or \
                    p["metadata"].get("deletionTimestamp"):
                problems.append(f"{row['pod']} is not Ready ({row['ready']} {row['phase']})")
        stable_pods = [r for r in rows if r["track"] == "stable"]
        if len(stable_pods) != replicas:
            problems.append(f"{len(stable_pods)} stable pod(s), the Deployment wants {replicas}")
        if _existing_canary(ctx) is not None:
            problems.append(f"Deployment {ctx.canary_name} still exists")
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return Result(summary=(f"all {replicas} instance(s) of {ctx.stable_name} serve v{want}, Ready; no canary left"
                           if not problems else "; ".join(problems)), outcome="ok" if not problems else "failed",
                  rows=rows, details={"version": want, "replicas": replicas, "pods": rows, "problems": problems})
