"""Testing a runbook's ops module without a notebook: the context its steps take, built the way the
notebook API builds it (settings from the runbook's parameters cell, validated by the same rules)::

    from opsbook.testing.runbook import make_context
    from opsbook.ops import environment_check

    ctx = make_context("environment-check", packages=["pytest"])
    result = environment_check.package_versions(ctx)

A runbook author tests a new runbook this way, against the real local services (the pytest plugin's
fixtures) given as clients: ``make_context(..., clients=Clients(target, kube=kube))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsbook import catalog, parameters, secrets
from opsbook.clients import Clients
from opsbook.targets import Target
from opsbook.targets import get as get_target


class Evidence(dict[str, Any]):
    """The evidence files a test context saved (name → content), redacted like the notebook API's."""

    def __call__(self, name: str, content: Any, *, description: str = "") -> dict[str, Any]:
        self[name] = content
        return {"name": name, "description": description}


def make_context(runbook_id: str, *, mode: str = "plan", target: Target | str | None = None,
                 clients: Clients | None = None, notebooks: Path | None = None, evidence: Any = None,
                 plan_record: dict[str, Any] | None = None, archive: Any = None, run_id: str = "test-run",
                 operator: str = "tester", project_dir: Path | None = None, **values: Any) -> Any:
    """The runbook's ``Context`` (its ops module's class) with ``values`` over the parameters cell's
    defaults, validated as ``opsbook run`` validates them (a bad value raises ``ParameterError``)."""
    from opsbook.notebook import _context_class, _model_name
    from opsbook.notebook.context import base_for

    rb = catalog.get(runbook_id, notebooks)
    params = parameters.validate(rb.spec, {"mode": mode, **values})
    if target is None or isinstance(target, str):
        tgt = get_target(target or str(params.get("target") or "local"))
    else:
        tgt = target
    if "target" in rb.spec:
        params = {**params, "target": tgt.name}
    settings = rb.spec.settings(params, _model_name(rb.id))

    def path_base(name: str, value: Any) -> Path:  # as in a kernel that started this runbook
        return base_for(rb, name, value)

    def secret(name: str, *, k8s: Any = None) -> str:
        return secrets.resolve(getattr(settings, name), k8s=k8s)

    return _context_class(rb.id)(
        settings=settings, target=tgt, mode=mode, run_id=run_id, operator=operator,
        clients=clients if clients is not None else Clients(tgt), secret=secret,
        evidence=evidence if evidence is not None else Evidence(),
        plan_record=(lambda: plan_record) if plan_record is not None else None,
        path_base=path_base, archive=(lambda: archive) if archive is not None else None,
        project_dir=project_dir or catalog.project_root(), incident_runs=_incident_runs(archive),
        resolve=secrets.resolve)


def _incident_runs(archive: Any) -> Any:
    if archive is None:
        return None
    from opsbook.records.bundle import incident_runs

    return lambda incident_id: incident_runs(archive, incident_id)


def do(fn: Any, ctx: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a declared step the way ``run.do`` does, without a notebook: a step that does not apply
    (its phase, no cluster, its own skip condition) returns a skipped ``Result`` with the reason and
    is not called; in plan mode a change runs its ``plan`` (a change without one returns a planned
    ``Result``). For tests that check what the notebook would record."""
    from opsbook.ops.base import declaration, skip_reason
    from opsbook.results import Result

    decl = declaration(fn)
    if decl is None:
        raise TypeError(f"{fn!r} is not a declared step")
    reason = skip_reason(decl, ctx)
    if reason is not None:
        return Result(summary=reason, outcome="skipped")
    if decl.kind == "change" and not ctx.applying:
        if decl.plan is None:
            return Result(summary="would run " + getattr(fn, "__qualname__", repr(fn)), outcome="planned")
        return decl.plan(ctx, *args, **kwargs)
    return fn(ctx, *args, **kwargs)
