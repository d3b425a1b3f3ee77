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

import os
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

    def describe(self) -> str:
        cluster = f"context {self.kube_context or '(current)'}" if self.has_cluster else "no cluster (plan only)"
        return f"{self.name}: {cluster}, namespace {self.namespace}"


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


def load_all() -> dict[str, Target]:
    from opsbook import safeyaml

    targets = {"local": LOCAL}
    for f in _files():
        if not f.is_file():
            continue
        try:  # within opsbook.safeyaml's size, nesting and alias limits
            data = safeyaml.load_file(str(f), where=f"targets file {f}") or {}
        except safeyaml.YamlInputError as exc:
            raise TargetError(str(exc)) from None
        if not isinstance(data, dict):
            raise TargetError(f"targets file {f}: expected a mapping of target name to settings")
        for name, fields in data.items():
            if name == "local":
                raise TargetError(f"targets file {f}: 'local' is built in and cannot be redefined")
            try:
                tgt = Target(name=str(name), source=str(f), **(fields or {}))
            except (ValidationError, TypeError) as exc:
                raise TargetError(f"targets file {f}: target {name!r}: {exc}") from None
            targets[str(name)] = _keep_guards(targets.get(str(name)), tgt)
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
    targets = load_all()
    if name not in targets:
        raise TargetError(f"unknown target {name!r} (known: {', '.join(sorted(targets))}; see `opsbook targets`)")
    return targets[name]
