"""Targets: the environment a run acts on, so that parameters stay about the runbook.

Targets are read from ``targets.yaml`` at the project root (shared ones, in git) and from
``~/.config/opsbook/targets.yaml`` (personal ones; ``$OPSBOOK_TARGETS`` names another file). A
file maps target names to fields::

    staging:
      description: shared staging cluster
      kube_context: staging-admin
      namespace: ml-platform
      mlflow_uri: https://mlflow.staging.example.com
      prometheus_url: http://prometheus.staging:9090
      log_store_url: https://logs.staging:9200
      log_store_kind: opensearch
      s3_endpoint: https://minio.staging:9000
      production: false
      requires_approval: true
      cell_timeout: 900        # seconds a cell may run; run_timeout: seconds a whole run may take

``local`` is built in and needs nothing: no cluster (Kubernetes steps plan only), an embedded MLflow
store under ``.opsbook/mlflow`` and recorded metrics files. A production target is never the default.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opsbook.errors import TargetError

ENV_TARGETS = "OPSBOOK_TARGETS"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    kubeconfig: str | None = None
    kube_context: str | None = Field(default=None, description="None: no cluster; Kubernetes steps plan only")
    namespace: str = "ml-platform"
    mlflow_uri: str | None = None
    prometheus_url: str | None = None
    log_store_url: str | None = None
    log_store_kind: Literal["opensearch", "elasticsearch", "loki"] = "opensearch"
    s3_endpoint: str | None = None
    production: bool = False
    requires_approval: bool = False
    cell_timeout: int | None = Field(default=None, gt=0, description="seconds a cell may run (default: the runbook's, "
                                     "else 1800); --cell-timeout overrides it")
    run_timeout: int | None = Field(default=None, gt=0, description="seconds a whole run may take (default: the "
                                    "runbook's, else 14400); --run-timeout overrides it")
    source: str = "built-in"

    @property
    def has_cluster(self) -> bool:
        return self.kube_context is not None or self.kubeconfig is not None

    def insecure_cluster(self) -> str | None:
        """The cluster this target reaches with TLS verification off (``insecure-skip-tls-verify`` in
        its kubeconfig), or None. Read from the kubeconfig each time, without the Kubernetes client."""
        if not self.has_cluster:
            return None
        from opsbook.clients.kubeconfig import insecure_cluster

        return insecure_cluster(self.kubeconfig, self.kube_context)

    def tls_warning(self) -> str | None:
        """The banner's one line about an unverified API server, or None when there is nothing to say."""
        cluster = self.insecure_cluster()
        if cluster is None:
            return None
        return (f"TLS verification is off for cluster {cluster} (insecure-skip-tls-verify in kubeconfig): "
                "the API server's identity is not checked")

    def describe(self, namespace: str | None = None) -> str:
        """``staging: context staging-admin, namespace ml-platform``. ``namespace``: the run's own
        (a runbook's ``namespace`` parameter), shown instead of the target's default when given."""
        cluster = f"context {self.kube_context or '(current)'}" if self.has_cluster else "no cluster (plan only)"
        return f"{self.name}: {cluster}, namespace {namespace or self.namespace}"


LOCAL = Target(name="local", description="built in: no cluster (Kubernetes steps plan only), embedded MLflow, "
               "recorded metrics", namespace="ml-platform", mlflow_uri=None)


def _files() -> list[Path]:
    from opsbook.catalog import project_root

    files = [project_root() / "targets.yaml"]
    if os.environ.get(ENV_TARGETS):
        files.append(Path(os.environ[ENV_TARGETS]))
    else:
        files.append(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "opsbook" / "targets.yaml")
    return files


@dataclass(frozen=True)
class BrokenTarget:
    """A target (or, with ``name`` None, a whole targets file) that cannot be used, and why, in one line."""

    name: str | None
    source: str
    reason: str


def _field_errors(exc: ValidationError) -> str:
    """Pydantic's errors as one line of ours: the field, what is wrong and, for an unknown field, the
    nearest known one. Never pydantic's text (several lines and a URL)."""
    known = [f for f in Target.model_fields if f not in ("name", "source")]
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(x) for x in err.get("loc", ())) or "?"
        if err.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
            out.append(f"unknown field {field!r}" + (f" (did you mean {close[0]!r}?)" if close else
                                                    f" (known: {', '.join(known)})"))
            continue
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        msg = " ".join(str(err.get("msg", "invalid")).split())
        out.append(f"field {field!r}: {msg[:1].lower() + msg[1:]} (got {got})")
    return "; ".join(out) or "invalid"


def scan() -> tuple[dict[str, Target], list[BrokenTarget]]:
    """Every target that can be used, and every one that cannot (with its one-line reason). A broken
    target breaks only the runs that use it (``get``); a targets file that does not parse at all breaks
    every target it could define (all but ``local``)."""
    from opsbook import safeyaml

    targets = {"local": LOCAL}
    broken: list[BrokenTarget] = []
    for f in _files():
        if not f.is_file():
            continue
        try:  # within opsbook.safeyaml's size, nesting and alias limits
            data = safeyaml.load_file(str(f), where=f"targets file {f}") or {}
        except safeyaml.YamlInputError as exc:
            broken.append(BrokenTarget(None, str(f), " ".join(str(exc).split())))
            continue
        if not isinstance(data, dict):
            broken.append(BrokenTarget(None, str(f), f"targets file {f}: expected a mapping of target name to settings"))
            continue
        for name, fields in data.items():
            name = str(name)
            where = f"targets file {f}: target {name!r}"
            if name == "local":
                broken.append(BrokenTarget(name, str(f), f"targets file {f}: 'local' is built in and cannot be "
                                                         "redefined"))
                continue
            if fields is not None and not isinstance(fields, dict):
                broken.append(BrokenTarget(name, str(f), f"{where}: expected a mapping of field: value, got "
                                                         f"{type(fields).__name__}"))
                continue
            try:
                tgt = Target(name=name, source=str(f), **(fields or {}))
            except ValidationError as exc:
                broken.append(BrokenTarget(name, str(f), f"{where}: {_field_errors(exc)}"))
                continue
            except TypeError as exc:  # e.g. a field name that is not a string
                broken.append(BrokenTarget(name, str(f), f"{where}: {' '.join(str(exc).split())}"))
                continue
            targets[name] = _keep_guards(targets.get(name), tgt)
    for b in broken:  # a broken definition (shared or personal) is never replaced by the other file's
        if b.name is not None:
            targets.pop(b.name, None)
    return targets, broken


def load_all() -> dict[str, Target]:
    """Every target; raises TargetError (one line) for the first that cannot be used. ``scan`` keeps
    going past broken ones."""
    targets, broken = scan()
    if broken:
        raise TargetError(broken[0].reason)
    return targets


def _keep_guards(shared: Target | None, personal: Target) -> Target:
    """A personal file may redefine a shared target's endpoints, never lower its guards: a target the
    shared file marks ``requires_approval`` or ``production`` stays so, and ``source`` names both files."""
    if shared is None:
        return personal
    return personal.model_copy(update={
        "requires_approval": shared.requires_approval or personal.requires_approval,
        "production": shared.production or personal.production,
        "source": f"{personal.source} (over {shared.source}, whose requires_approval/production it cannot lower)"})


def get(name: str) -> Target:
    """The target ``name``. Only its own definition can refuse it: a typo in another target (or
    another file) does not break this one."""
    targets, broken = scan()
    mine = [b for b in broken if b.name == name]
    if mine:
        raise TargetError(mine[0].reason)
    if name not in targets:
        unreadable = [b for b in broken if b.name is None]
        if unreadable:  # it may be defined in a file that does not parse
            raise TargetError(unreadable[0].reason)
        raise TargetError(f"unknown target {name!r} (known: {', '.join(sorted(targets))}; see `opsbook targets`)")
    return targets[name]
