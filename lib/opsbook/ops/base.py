"""What every runbook's ops module builds on: the run's context and the declaration of its steps.

A runbook is one notebook plus one ops module named after its id (``environment-check`` →
``opsbook.ops.environment_check``). The module declares each step once, next to its code::

    @change("install", "Install the release", plan=plan_install, needs_cluster=True)
    def install(ctx: Context) -> Result: ...

and the notebook calls it through the notebook API, one call per cell::

    run.do(initial_kubernetes_deployment.install)

The declaration carries what every runbook used to repeat by hand: the step's stable id (plan
records are keyed by it, not by its title), its title, its kind (``step``, ``change``, ``check``,
``preflight``), the plan function of a change, whether it needs a cluster, the phase it belongs to,
and any other reason to skip it. ``run.do`` records a skipped step with its reason and never calls
the function; in plan mode it calls a change's ``plan`` instead of the change.

Every step function takes the run's :class:`Context` (the notebook API builds it; a test builds one
directly with its own clients) and returns a :class:`~opsbook.results.Result`, a
:class:`~opsbook.results.Check` or a list of checks (a preflight). Ops functions never display
anything: code, links and figures go into ``Result.show``. This module, like all of ``ops``, imports
no engine module: only :mod:`opsbook.results`, :mod:`opsbook.errors`, :mod:`opsbook.text` and
:mod:`opsbook.clients`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from opsbook.errors import OpsbookError
from opsbook.results import Check, Code, Figure, Link, Result

__all__ = ["Check", "Code", "Context", "Figure", "Link", "Result", "StepDecl", "change", "check",
           "declaration", "preflight", "skip_reason", "step"]

Kind = Literal["step", "change", "check", "preflight"]
F = TypeVar("F", bound=Callable[..., Any])
_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ATTR = "__opsbook_step__"


@dataclass(frozen=True)
class StepDecl:
    """How a step is run and recorded (see the module docstring)."""

    id: str
    title: str
    kind: Kind
    plan: Callable[..., Any] | None = None  # a change's plan-mode function (same arguments)
    #: skipped, with the reason, on a target without a cluster; "apply": only an apply needs one (the
    #: plan of a change renders without a cluster, client-side)
    needs_cluster: bool | Literal["apply"] = False
    phase: str | None = None  # skipped unless ``ctx.wants(phase)``
    skip_if: Callable[[Any], str | None] | None = None  # a reason to skip, or None to run
    #: a change's undo (``opsbook.ops.journal``): JOURNAL (its ``ctx.journal`` entries are reversed), a
    #: runbook's own Undoer, or ``irreversible("why")``; None: recorded as ``undo: none``
    undo: Any = None


def _declare(kind: Kind, step_id: str, title: str, **kw: Any) -> Callable[[F], F]:
    if not _ID.match(step_id):
        raise ValueError(f"step id {step_id!r}: expected lowercase letters, digits and '-' (a stable key)")
    decl = StepDecl(id=step_id, title=title, kind=kind, **kw)

    def mark(fn: F) -> F:
        setattr(fn, _ATTR, decl)
        return fn

    return mark


def step(step_id: str, title: str, *, needs_cluster: bool = False, phase: str | None = None,
         skip_if: Callable[[Any], str | None] | None = None) -> Callable[[F], F]:
    """A step that changes nothing (read, render, compute): recorded ok or failed."""
    return _declare("step", step_id, title, needs_cluster=needs_cluster, phase=phase, skip_if=skip_if)


def change(step_id: str, title: str, *, plan: Callable[..., Any] | None = None,
           needs_cluster: bool | Literal["apply"] = False,
           phase: str | None = None, skip_if: Callable[[Any], str | None] | None = None,
           undo: Any = None) -> Callable[[F], F]:
    """A step that changes the world: in plan mode only ``plan`` runs and the step is recorded as
    planned; in apply mode the function runs and it is recorded as changed. ``undo`` says how
    ``opsbook undo`` takes it back (``opsbook.ops.journal``: ``JOURNAL`` for the changes it makes
    through ``ctx.journal``, or ``irreversible("why")``)."""
    return _declare("change", step_id, title, plan=plan, needs_cluster=needs_cluster, phase=phase,
                    skip_if=skip_if, undo=undo)


def check(step_id: str, title: str, *, needs_cluster: bool = False, phase: str | None = None,
          skip_if: Callable[[Any], str | None] | None = None) -> Callable[[F], F]:
    """A verification: returns a bool, a Check or a Result; a failure is recorded and the run goes on."""
    return _declare("check", step_id, title, needs_cluster=needs_cluster, phase=phase, skip_if=skip_if)


def preflight(step_id: str, title: str = "Preflight", *, phase: str | None = None,
              skip_if: Callable[[Any], str | None] | None = None) -> Callable[[F], F]:
    """Prerequisites: returns a list of Check; the run stops if any failed."""
    return _declare("preflight", step_id, title, phase=phase, skip_if=skip_if)


def declaration(fn: Any) -> StepDecl | None:
    """The declaration of a step function (None: not declared)."""
    return getattr(fn, _ATTR, None)


def skip_reason(decl: StepDecl, ctx: Context) -> str | None:
    """Why this step does not run in this context, or None."""
    if decl.phase and not ctx.wants(decl.phase):
        return f"phase {decl.phase} not selected"
    if decl.needs_cluster == "apply":
        if ctx.applying and not ctx.has_cluster:
            return f"no cluster on target {ctx.target_name}: nothing to change"
    elif decl.needs_cluster and not ctx.has_cluster:
        return f"no cluster on target {ctx.target_name}: nothing to {'change' if decl.kind == 'change' else 'read'}"
    if decl.skip_if is not None:
        return decl.skip_if(ctx)
    return None


class Context:
    """One run as ops see it: the runbook's settings (a frozen model built from its parameters cell),
    the target, the mode, who runs it, the clients (made on first use, ``opsbook.clients.Clients``),
    and the notebook API's services (secrets, evidence files, the approved plan). A runbook whose
    steps share what they find subclasses it and sets that state up in :meth:`init`.

    A test builds one directly: ``Context(settings=..., target=..., clients=Clients(target, kube=kube))``.
    """

    def __init__(self, *, settings: Any, target: Any = None, mode: str | None = None, run_id: str = "",
                 operator: str = "", clients: Any = None, secret: Callable[..., str] | None = None,
                 evidence: Callable[..., Any] | None = None, plan_record: Callable[[], Any] | None = None,
                 path_base: Callable[[str, Any], Path] | None = None, archive: Callable[[], Any] | None = None,
                 project_dir: Path | None = None, incident_runs: Callable[[str], list[Any]] | None = None,
                 resolve: Callable[..., str] | None = None):
        self.settings = settings
        self.target = target
        self.mode: str = mode or str(getattr(settings, "mode", "plan"))
        self.run_id = run_id
        self.operator = operator
        if clients is None:
            from opsbook.clients import Clients

            clients = Clients(target)
        self.clients = clients
        self._secret = secret
        self._evidence = evidence
        self._plan_record = plan_record
        self._path_base = path_base
        self._archive = archive
        #: the project's folder (``.opsbook/`` state, ``charts/``): the notebook API's, else the working folder
        self.project_dir = project_dir or Path.cwd()
        self._incident_runs = incident_runs
        self._resolve = resolve
        from opsbook.ops.journal import Journal

        #: what the running change did, for ``opsbook undo`` (the notebook API gives each change in
        #: apply mode a fresh one and records its entries with the step; see ``opsbook.ops.journal``)
        self.journal = Journal()
        self.init()

    def init(self) -> None:
        """Set up the runbook's own state (a subclass's hook; nothing here)."""

    # -- what the run is ------------------------------------------------------------------------
    @property
    def applying(self) -> bool:
        return self.mode == "apply"

    @property
    def target_name(self) -> str:
        return str(getattr(self.target, "name", "") or "(none)")

    @property
    def has_cluster(self) -> bool:
        """Whether the target has a cluster (a kube context or kubeconfig), or a test gave a client."""
        return bool(self.clients.has_cluster)

    def wants(self, phase: str) -> bool:
        """Whether ``phase`` is one this run was asked for (``settings.phases``; every phase if none)."""
        phases = getattr(self.settings, "phases", None)
        if phases is None:
            return True
        if isinstance(phases, str):
            phases = [p.strip() for p in phases.split(",") if p.strip()]
        return phase in phases

    # -- what the notebook API provides --------------------------------------------------------
    def secret(self, name: str) -> str:
        """The value behind the secret reference that setting ``name`` holds (registered for
        redaction by the notebook API before it is returned)."""
        if self._secret is None:
            raise OpsbookError(f"no secret resolver in this context: cannot resolve {name!r}")
        k8s = None  # a k8s:NAMESPACE/SECRET/KEY reference is read through the target's cluster
        if str(getattr(self.settings, name, "") or "").startswith("k8s:") and self.has_cluster:
            k8s = getattr(self.clients.kube, "read_secret_key", None)
        return self._secret(name, k8s=k8s)

    def resolve_secret(self, ref: str) -> str:
        """The value behind a secret reference kept in a record (an undo reconnecting with the
        reference its apply recorded), registered for redaction like :meth:`secret`'s."""
        if self._resolve is None:
            raise OpsbookError(f"no secret resolver in this context: cannot resolve {ref!r}")
        k8s = getattr(self.clients.kube, "read_secret_key", None) if ref.startswith("k8s:") and self.has_cluster \
            else None
        return self._resolve(ref, k8s=k8s)

    def evidence(self, name: str, content: Any, *, description: str = "") -> dict[str, Any] | None:
        """Save a file into the record's ``evidence/`` (redacted); None when this context keeps none."""
        if self._evidence is None:
            return None
        return self._evidence(name, content, description=description)

    def archive(self) -> Any:
        """The run's archive (where its record goes: ``verify()``, ``check_writable()``, ``root``...)."""
        if self._archive is None:
            raise OpsbookError("no archive in this context")
        return self._archive()

    def incident_runs(self, incident_id: str) -> list[Any]:
        """The archived runs of one incident, oldest first (``records.bundle.IncidentRun``: ``manifest``,
        ``run_id``...); empty when this context has no archive."""
        return self._incident_runs(incident_id) if self._incident_runs is not None else []

    def plan_record(self) -> Mapping[str, Any] | None:
        """The manifest of the plan run this apply carries out (None: no approved plan)."""
        return self._plan_record() if self._plan_record is not None else None

    def planned(self, step_id: str) -> Mapping[str, Any] | None:
        """The approved plan's record of step ``step_id`` (its outcome, summary and details), or None."""
        record = self.plan_record()
        for s in (record or {}).get("steps", []) or []:
            if s.get("id") == step_id:
                return s
        return None

    def path(self, name: str) -> Path | None:
        """The local path setting ``name`` names (a relative default from the runbook's folder, a
        relative value from the working folder), or None when it is empty."""
        value = getattr(self.settings, name)
        if not value:
            return None
        p = Path(str(value)).expanduser()
        if p.is_absolute():
            return p
        base = self._path_base(name, value) if self._path_base is not None else Path.cwd()
        return (base / p).resolve()
