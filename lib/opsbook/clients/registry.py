"""The MLflow model registry, as the ``deploy-new-model`` runbook needs it: a version with its stage,
by alias or by the legacy stage, aliases set, and the metrics of the run that produced it.

    reg = Registry("http://127.0.0.1:5000")
    mv = reg.version("proposer", "7")                     # RegistryVersion (stage, aliases, source, run)
    reg.by_alias("proposer", "production")                # None when the alias is not set
    reg.latest_in_stage("proposer", "Production")         # legacy stages (None when no version is there)
    reg.set_alias("proposer", "production", "7")
    reg.run_metrics(mv.run_id)                            # {"accuracy": 0.91, ...} (latest values)

Built on :class:`opsbook.clients.mlflow.Mlflow` (same bounded retries, same error mapping: NotFound,
Unreachable, ...). Stages are deprecated in MLflow 2.9+ and 3.x (``get_latest_versions`` and
``transition_model_version_stage`` emit a FutureWarning on every call); the warning is silenced here,
locally, because a registry that still uses stages is exactly the case those calls are for.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opsbook.clients.mlflow import Mlflow
from opsbook.errors import Invalid, NotFound

__all__ = ["Registry", "RegistryVersion"]


@dataclass(frozen=True)
class RegistryVersion:
    """One registered model version, as the registry has it."""

    name: str
    version: str
    source: str
    run_id: str
    status: str
    stage: str = "None"  # legacy stage: None, Staging, Production, Archived
    aliases: tuple[str, ...] = ()
    description: str = ""
    created: int | None = None  # ms since the epoch
    tags: dict[str, str] = field(default_factory=dict)
    model_id: str | None = None

    @property
    def uri(self) -> str:
        """The version's pinned model URI (``models:/NAME/VERSION``): what a canary or promote deploys."""
        return f"models:/{self.name}/{self.version}"


def _from_mlflow(mv: Any) -> RegistryVersion:
    return RegistryVersion(
        name=str(mv.name), version=str(mv.version), source=str(mv.source or ""), run_id=str(mv.run_id or ""),
        status=str(mv.status or ""), stage=str(getattr(mv, "current_stage", None) or "None"),
        aliases=tuple(getattr(mv, "aliases", None) or ()), description=str(mv.description or ""),
        created=getattr(mv, "creation_timestamp", None), tags=dict(getattr(mv, "tags", None) or {}),
        model_id=getattr(mv, "model_id", None))


@contextlib.contextmanager
def _stages_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


class Registry(Mlflow):
    """The model registry of the MLflow server at ``tracking_uri``."""

    def model_exists(self, name: str) -> bool:
        try:
            self._call(f"read registered model {name!r}", self.client.get_registered_model, name)
        except NotFound:
            return False
        return True

    def version(self, name: str, version: str) -> RegistryVersion:
        """The version; NotFound names the model and version."""
        return _from_mlflow(self._call(f"read {name} v{version}", self.client.get_model_version, name, str(version)))

    def by_alias(self, name: str, alias: str) -> RegistryVersion | None:
        """The version ``alias`` points at, or None if the alias is not set (or the model does not exist)."""
        try:
            mv = self._call(f"read {name}@{alias}", self.client.get_model_version_by_alias, name, alias)
        except NotFound:
            return None
        except Invalid as exc:  # MLflow 3 answers an unset alias INVALID_PARAMETER_VALUE "... alias X not found."
            if f"alias {alias} not found" in str(exc):
                return None
            raise
        return _from_mlflow(mv)

    def latest_in_stage(self, name: str, stage: str = "Production") -> RegistryVersion | None:
        """The newest version in the legacy ``stage`` (None if there is none)."""
        with _stages_quiet():
            try:
                found = self._call(f"latest {name} versions in stage {stage}", self.client.get_latest_versions,
                                   name, [stage])
            except NotFound:
                return None
        versions = [_from_mlflow(mv) for mv in found or []]
        return max(versions, key=lambda v: int(v.version)) if versions else None

    def transition_stage(self, name: str, version: str, stage: str, *,
                         archive_existing: bool = False) -> RegistryVersion:
        """Move a version to a legacy stage (tests and registries that still use stages)."""
        with _stages_quiet():
            mv = self._call(f"move {name} v{version} to stage {stage}", self.client.transition_model_version_stage,
                            name, str(version), stage, archive_existing_versions=archive_existing)
        return _from_mlflow(mv)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"point {name}@{alias} at v{version}", self.client.set_registered_model_alias, name, alias,
                   str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias`` (the version it pointed at stays)."""
        self._call(f"delete {name}@{alias}", self.client.delete_registered_model_alias, name, alias)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(f"tag {name} v{version}", self.client.set_model_version_tag, name, str(version), key, value)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of every metric of the run (its evaluation results); {} without a run."""
        if not run_id:
            return {}
        run = self._call(f"read run {run_id}", self.client.get_run, run_id)
        return {str(k): float(v) for k, v in sorted((run.data.metrics or {}).items())}
