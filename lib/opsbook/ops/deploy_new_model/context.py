"""What the `deploy-new-model` steps share: the run's context (settings, the clients this runbook
uses, and what earlier steps found), the labels and keys that identify a model version on the
cluster, and the judge's metric specs built from the settings.

The steps run one per cell and each reads what earlier ones stored (the candidate version, the
stable Deployment, the canary manifest, the metrics, the verdict, the decision), so that state
lives on the context, set up empty in :meth:`Context.init`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, ParameterError, Problem
from opsbook.ops import base

TRACK_LABEL = "opsbook.io/track"
NAME_LABEL = "app.kubernetes.io/name"
VERSION_KEY = "opsbook.io/model-version"
URI_KEY = "opsbook.io/model-uri"
CANARY_OF_KEY = "opsbook.io/canary-of"
ENV_VERSION, ENV_URI = "MODEL_VERSION", "MODEL_URI"
CANARY_SUFFIX = "-canary"
FIELD_MANAGER = "opsbook-deploy-new-model"
#: the recorded metrics the ``local`` target judges (no Prometheus there), from the project's folder
DEFAULT_METRICS_FILE = "examples/metrics/proposer-canary-healthy.csv"

_UNSET: Any = object()


def check_judge_settings(settings: Any) -> list[Problem]:
    """What the parameters cell's bounds cannot say, because it ties two parameters together: the
    warm-up must leave at least one interval of the monitoring period to judge."""
    w, window = settings.warmup_intervals, window_intervals(settings)
    if w >= window:
        return [Problem("warmup_intervals", repr(w), f"expected at most {window - 1}: the warm-up must leave at "
                        f"least one of the monitoring period's {window} intervals of {settings.interval_seconds} s "
                        f"(monitor_minutes={settings.monitor_minutes}) to judge")]
    return []


def window_intervals(settings: Any) -> int:
    """How many analysis intervals the monitoring period holds (the judge's looks)."""
    return max(1, int(settings.monitor_minutes * 60 // settings.interval_seconds))


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


def reason(exc: Exception) -> str:
    """An error's first line: what a check shows (the rest is a traceback's business)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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


class Context(base.Context):
    """The run, and what the steps have found so far (each step reads what earlier ones stored).

    The registry, Prometheus and the cluster come from ``clients``, made on first use from the
    settings, else the target (``tracking_uri`` / ``mlflow_uri``, ``prometheus_url``); a test hands in
    its own (``Clients(target, kube=..., registry=..., prometheus=...)``)."""

    def init(self) -> None:
        s = self.settings
        problems = check_judge_settings(s)
        if problems:
            raise ParameterError(problems)
        self.tracking_uri = str(s.tracking_uri or getattr(self.target, "mlflow_uri", None) or "").rstrip("/")
        self.prometheus_url = str(s.prometheus_url or getattr(self.target, "prometheus_url", None) or "")
        #: the recorded metrics file (None: Prometheus); the ``local`` target has no Prometheus
        self.metrics_path: Path | None = self.path("metrics_file")
        if self.metrics_path is None and self.target_name == "local":
            self.metrics_path = (self.project_dir / DEFAULT_METRICS_FILE).resolve()
        self._kube: Any = _UNSET
        self.cluster_error = ""
        # found by the steps
        self.candidate: Any = None  # clients.registry.RegistryVersion
        self.in_production_by = ""  # "alias" | "stage"
        self.alias_before: Any = None  # the version the production alias pointed at when the run started
        self.serving: Serving | None = None
        self.stable_name = ""
        self.canary: dict[str, Any] | None = None
        self.frame: Any = None
        self.analysis: Any = None
        self.verdict: dict[str, Any] = {}
        self.decision: str | None = None  # promote | rollback | None (hold)
        self.decision_basis: dict[str, Any] = {}
        self.alias_move: dict[str, Any] | None = None
        self._plan: Any = _UNSET

    # -- clients ---------------------------------------------------------------------------------
    @property
    def kube(self) -> Any:
        """The cluster (``clients.kube.Kube``), or None: no cluster on this target, or one whose
        kubeconfig cannot be loaded (``cluster_error`` says why; the preflight fails on it)."""
        if self._kube is _UNSET:
            try:
                self._kube = self.clients.kube
            except ClientError as exc:
                self._kube, self.cluster_error = None, str(exc)
        return self._kube

    @kube.setter
    def kube(self, value: Any) -> None:
        self._kube = value

    @property
    def registry(self) -> Any:
        """The MLflow registry (``clients.registry.Registry``), or None without a tracking URI."""
        if self.tracking_uri:
            return self.clients.registry(self.tracking_uri, timeout=min(60.0, self.settings.timeout))
        return self.clients.given("registry")

    @property
    def prom(self) -> Any:
        """Prometheus (``clients.prometheus.Prometheus``), or None: a recorded metrics file, or no URL."""
        if self.metrics_path is not None:
            return None
        if self.prometheus_url:
            return self.clients.prometheus(self.prometheus_url, timeout=min(30.0, self.settings.timeout))
        return self.clients.given("prometheus")

    # -- the approved plan -----------------------------------------------------------------------
    def plan_record(self) -> Any:
        """The approved plan's manifest, read once (every later step sees the same record)."""
        if self._plan is _UNSET:
            self._plan = super().plan_record()
        return self._plan

    @property
    def approved_plan(self) -> str | None:
        """The run id of the plan this apply carries out, or None."""
        record = self.plan_record()
        return str(record.get("run_id") or "?") if record is not None else None

    # -- derived from the settings and the findings -----------------------------------------------
    @property
    def registry_name(self) -> str:
        return str(self.settings.registered_model or self.settings.model)

    @property
    def window_intervals(self) -> int:
        return window_intervals(self.settings)

    @property
    def specs(self) -> tuple[Any, ...]:
        s = self.settings
        return metric_specs(s.tolerance, s.error_rate_tolerance, s.tail_tolerance)

    @property
    def canary_name(self) -> str:
        return (self.stable_name or str(self.settings.model)) + CANARY_SUFFIX

    @property
    def target_version(self) -> str:
        """The version to deploy (found by the registry check, else the ``version`` parameter)."""
        return str(self.candidate.version) if self.candidate is not None else str(self.settings.version)

    @property
    def target_uri(self) -> str:
        v = self.target_version
        return f"models:/{self.registry_name}/{v}" if v else ""

    def warmup_text(self) -> str:
        s = self.settings
        k = s.warmup_intervals
        if not k:
            return "none: every interval is judged"
        return (f"the first {k} interval(s), {k * s.interval_seconds / 60:g} min, are not judged (warmup_intervals "
                f"{k}): a new pod's first requests are slow")
