"""The notebook API: what runbook cells call.

A runbook's setup cell creates the run context from its parameters::

    import opsbook
    run = opsbook.start("initial-kubernetes-deployment", globals())

and every later cell is one call through it::

    run.preflight(deploy.preflight(helm=helm, kube=kube))     # stops the run if a prerequisite fails
    run.step("Render values.yaml", deploy.render_values, params)   # ok / failed
    run.change("Install the release", deploy.install, helm, release, plan=deploy.plan_install)
    run.check("Pods are Ready", deploy.pods_ready, kube, namespace)
    run.summary()

``change`` is the plan/apply guard: in ``plan`` mode the change is not made, and the step is recorded
as ``planned`` with what the ``plan`` callable returns (rendered manifests, a server-side dry run);
in ``apply`` mode it is made and recorded as ``changed``. Every outcome (``ok``, ``changed``,
``planned``, ``skipped``, ``failed``) is shown in the notebook and, under ``opsbook run``, written to
the run's events file, from which the runner builds the record's manifest.

Interactive runs (JupyterLab, not ``opsbook run``) are recorded too: ``run.summary()`` archives the
run when it runs in a kernel started by a Jupyter server (``record=True``/``False`` forces it either
way). The record's
notebook is built from what the kernel ran (see ``opsbook.notebook.interactive``), redacted with every secret
the kernel resolved, rendered to HTML, with a manifest like a headless run's plus
``"interactive": true``. A run is recorded once: re-running the summary cell shows the record and
does not archive again; re-running the setup cell starts a new run (a new run id). In apply mode,
``run.change`` refuses to apply the same title twice in one run. Errors raised by opsbook or inside
a step are shown as a short message with the traceback folded (``opsbook.notebook.interactive``).
"""

from __future__ import annotations

import contextlib
import getpass
import html
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opsbook import catalog, parameters, secrets
from opsbook.errors import OpsbookError, ParameterError, PreflightFailed, RunbookError, RunFailed
from opsbook.ids import new_run_id, utcnow
from opsbook.notebook import interactive
from opsbook.parameters import validate
from opsbook.results import Check, Result
from opsbook.runenv import (  # noqa: F401 - re-exported
    ENV_APPROVED_PLAN,
    ENV_EVENTS,
    ENV_EVIDENCE_DIR,
    ENV_OPERATOR,
    ENV_RUN_ID,
    ENV_SOURCE,
)
from opsbook.targets import Target
from opsbook.targets import get as get_target
from opsbook.text import shorten

MAX_ROWS = 200
#: one symbol per outcome: text symbols that every system font has (emoji show as empty boxes where
#: no emoji font is installed, as on most servers that render records)
_ICONS = {"ok": "✓", "changed": "●", "planned": "○", "skipped": "–", "failed": "✗"}
#: how a summary is cut in the summary table (at a word, marked "…"; the record keeps it whole)
SUMMARY_WIDTH = 120
#: what a step that lists rows shows when the list is empty
NO_ROWS = "(none)"


@dataclass
class StepRecord:
    kind: str  # step | change | check | preflight
    title: str
    outcome: str
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0
    rows: list[dict[str, Any]] | None = None  # the table shown, kept in the manifest (first MAX_ROWS)
    headline: str = ""  # the run's main finding, if this step has it (``Result.headline``)
    id: str = ""  # the step's stable id (its declaration's, ``opsbook.ops.base``; else from its title)


def _display(html_text: str, plain: str) -> None:
    """Show rich HTML in Jupyter and plain text in a terminal/headless log (both are kept)."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/html": html_text, "text/plain": plain}, raw=True)
            return
    except ImportError:
        pass
    print(plain)


def _table_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"<p class='opsbook-empty'><em>{NO_ROWS}</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return NO_ROWS
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(str(c).ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def _jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        if isinstance(obj, dict):
            return {str(k): _jsonable(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [_jsonable(v) for v in obj]
        return repr(obj)


class Run:
    """The context of one runbook run: parameters, mode, target, and the outcomes recorded so far."""

    def __init__(self, *, runbook: catalog.Runbook, params: dict[str, Any], target: Target, run_id: str,
                 operator: str, headless: bool):
        self.runbook = runbook
        self.params = params
        self.mode: str = params.get("mode", "plan")
        self.target = target
        self.id = run_id
        self.operator = operator
        self.headless = headless
        self.records: list[StepRecord] = []
        self.approval: dict[str, Any] | None = None  # the approval this kernel checked
        self.must_record = False  # an apply that no runner records: its summary archives it, always
        self._events = os.environ.get(ENV_EVENTS) if headless else None
        self.started = utcnow()
        self._t0 = time.monotonic()
        self._first_cell = 0  # interactive: the execution count of the setup cell
        self.recorded: Any = None  # interactive: the record this run was archived as (Path, or S3Path)
        self._evidence: list[dict[str, Any]] = []  # interactive: the evidence files and their descriptions
        #: the parameters as the runbook's typed, frozen settings model (built from its parameters cell)
        self.settings: Any = runbook.spec.settings(params, _model_name(runbook.id))
        self._ctx: Any = None

    # -- public API -----------------------------------------------------------------------------
    @property
    def outputs(self) -> str:
        """Where this run's record goes: the archive folder, or its ``s3://`` URL."""
        return str(self.archive().location)

    @property
    def approved_plan(self) -> str | None:
        """The plan run this apply executes (``opsbook run ... --approve PLAN_RUN_ID``, or in
        JupyterLab ``OPSBOOK_APPROVED_PLAN`` checked by ``opsbook.start``), if any."""
        return (self.approval or {}).get("plan_run_id")

    def plan_record(self) -> dict[str, Any] | None:
        """The manifest of the approved plan run: its parameters, status and step outcomes (with
        their details), so an apply can act on the evidence that was approved."""
        plan = self.approved_plan
        return self.archive().load_manifest(plan) if plan else None

    def archive(self) -> Any:
        from opsbook.records.disk import open_archive

        return open_archive()  # $OPSBOOK_OUTPUTS: a folder or s3://BUCKET/PREFIX

    @property
    def applying(self) -> bool:
        return self.mode == "apply"

    def secret(self, name: str, *, k8s: secrets.K8sReader | None = None) -> str:
        """Resolve the secret reference held by parameter ``name`` (registered for redaction)."""
        ref = self.params.get(name)
        if not ref:
            raise OpsbookError(f"parameter {name!r} holds no secret reference")
        return secrets.resolve(ref, k8s=k8s)

    @property
    def evidence_dir(self) -> Path:
        """Where evidence files go: under ``opsbook run`` the record's ``evidence/`` folder (archived
        with the run, each file hashed in the manifest); interactively ``.opsbook/interactive/RUN_ID/evidence``
        (RUN_ID/ is mode 0700 with an owner file, removed once the run is recorded, or swept by
        ``opsbook.workdirs`` once its kernel is gone)."""
        env = os.environ.get(ENV_EVIDENCE_DIR) if self.headless else None
        return Path(env) if env else catalog.project_root() / ".opsbook" / "interactive" / self.id / "evidence"

    def evidence(self, name: str, content: str | bytes | dict[str, Any] | list[Any], *,
                 description: str = "") -> dict[str, Any]:
        """Save one piece of evidence (a pod spec, a log, an RBAC dump...) as a file of the record.

        ``name`` is a relative path such as ``pods/web-0.json``; dicts and lists are written as
        JSON. Text is redacted before it is written. Returns the file's name, size and sha256."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise OpsbookError(f"evidence name {name!r}: expected a relative path inside the record")
        if isinstance(content, (dict, list)):
            data = json.dumps(_jsonable(content), indent=2, sort_keys=True).encode()
        elif isinstance(content, str):
            data = content.encode()
        else:
            data = bytes(content)
        try:
            data = secrets.REDACTOR.redact(data.decode()).encode()
        except UnicodeDecodeError:
            pass  # binary: the runner checks it for secrets before archiving
        evdir = self.evidence_dir
        if not (self.headless and os.environ.get(ENV_EVIDENCE_DIR)):  # .opsbook/interactive/RUN_ID/
            from opsbook import workdirs

            workdirs.claim_dir(evdir.parent)  # mode 0700, with an owner file
        path = evdir / rel
        evdir.parent.mkdir(parents=True, exist_ok=True)
        for d in (evdir, *(evdir.joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts)))):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=0o700)  # each folder private, not only the last one
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # also when the file existed
            fh.write(data)
        import hashlib

        entry = {"name": rel.as_posix(), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "description": description}
        self._emit({"event": "evidence", **entry})
        self._evidence = [e for e in self._evidence if e["name"] != entry["name"]] + [entry]
        return entry

    @property
    def ctx(self) -> Any:
        """The context ops steps take (``opsbook.ops.base.Context``): the class the runbook's ops module
        (``opsbook.ops.<id with _>``) names ``Context``, or the base one; built on first use."""
        if self._ctx is None:
            self._ctx = _context_class(self.runbook.id)(
                settings=self.settings, target=self.target, mode=self.mode, run_id=self.id,
                operator=self.operator, secret=self.secret, evidence=self.evidence,
                plan_record=self.plan_record, path_base=path_base, archive=self.archive,
                project_dir=catalog.project_root(), incident_runs=self._incident_runs)
        return self._ctx

    def _incident_runs(self, incident_id: str) -> list[Any]:
        from opsbook.records.bundle import incident_runs

        return incident_runs(self.archive(), incident_id)

    def do(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a declared ops step (``@step``/``@change``/``@check``/``@preflight`` of
        ``opsbook.ops.base``) with this run's context: its id, title and kind come from the
        declaration; a step that does not apply here (a phase not selected, no cluster, its own skip
        condition) is recorded as skipped with the reason and not called."""
        from opsbook.ops.base import declaration, skip_reason

        decl = declaration(fn)
        if decl is None:
            raise OpsbookError(f"{_callable_name(fn)} is not a declared step (opsbook.ops.base: @step, "
                               "@change, @check or @preflight); call run.step/change/check with a title instead")
        ctx = self.ctx
        reason = skip_reason(decl, ctx)
        if reason is not None:
            self._record(decl.kind, decl.title, "skipped", reason, {}, None, time.monotonic(), utcnow(),
                         step_id=decl.id)
            return _returned(None)
        if decl.kind == "preflight":
            return self.preflight(fn(ctx, *args, **kwargs), title=decl.title, step_id=decl.id)
        if decl.kind == "check":
            return self.check(decl.title, fn, ctx, *args, step_id=decl.id, **kwargs)
        if decl.kind == "change":
            return self.change(decl.title, fn, ctx, *args, plan=decl.plan, step_id=decl.id, **kwargs)
        return self.step(decl.title, fn, ctx, *args, step_id=decl.id, **kwargs)

    def step(self, title: str, fn: Callable[..., Any], *args: Any, step_id: str = "", **kwargs: Any) -> Any:
        """Run a step that changes nothing (read, render, compute). Outcome ok, or failed (re-raised)."""
        return _returned(self._call("step", title, fn, args, kwargs, default_outcome="ok", step_id=step_id))

    def change(self, title: str, fn: Callable[..., Any], *args: Any,
               plan: Callable[..., Any] | None = None, step_id: str = "", **kwargs: Any) -> Any:
        """A step that changes the world. In plan mode only ``plan(*args, **kwargs)`` runs (if given)
        and the step is recorded as planned; in apply mode ``fn`` runs and it is recorded as changed."""
        if not self.applying:
            self._announce(f"plan mode: {title} is not applied")
            if plan is None:
                return _returned(self._record("change", title, "planned", "would run " + _callable_name(fn), {},
                                              None, time.monotonic(), utcnow(), step_id=step_id))
            return _returned(self._call("change", title, plan, args, kwargs, default_outcome="planned",
                                        step_id=step_id))
        done = next((r for r in self.records if r.kind == "change" and r.title == title
                     and r.outcome == "changed"), None)
        if done is not None:
            raise OpsbookError(
                f"{title!r} was already applied in run {self.id} (at {done.started}); not applying it twice. "
                "To apply it again, re-run the setup cell to start a new run.")
        self._announce(f"apply mode: {title} changes the target {self.target.name}")
        return _returned(self._call("change", title, fn, args, kwargs, default_outcome="changed", step_id=step_id))

    def check(self, title: str, fn: Callable[..., Any] | bool, *args: Any, step_id: str = "", **kwargs: Any) -> bool:
        """A verification. ``fn`` returns a bool, a Check or a Result; a failed check is recorded (the
        summary then fails the run) but does not stop the cells after it. Returns whether it passed
        (False also for a skipped check); a cell that ends with it does not echo that (see ``_returned``)."""
        t0, started = time.monotonic(), utcnow()
        try:
            value = fn(*args, **kwargs) if callable(fn) else fn
        except Exception as exc:  # a check that cannot run has failed
            self._record("check", title, "failed", f"{type(exc).__name__}: {exc}", {}, None, t0, started,
                         step_id=step_id)
            return _returned(False)
        if isinstance(value, Check):
            outcome, summary, details = ("ok" if value.passed else "failed"), value.reason, value.evidence
            rows = None
        elif isinstance(value, Result):
            outcome, summary, details, rows = value.outcome or "ok", value.summary, value.details, value.rows
        else:
            outcome, summary, details, rows = ("ok" if value else "failed"), "", {}, None
        self._record("check", title, outcome, summary, details, rows, t0, started, step_id=step_id,
                     headline=value.headline if isinstance(value, Result) else "")
        if isinstance(value, Result):
            _show(value.show)
        return _returned(outcome == "ok")

    def preflight(self, checks: Iterable[Check], *, title: str = "Preflight", step_id: str = "") -> None:
        """Record each prerequisite pass/fail with its reason; stop the run if any failed."""
        t0, started = time.monotonic(), utcnow()
        checks = list(checks)
        rows = [{"prerequisite": c.name, "status": "pass" if c.passed else "FAIL", "reason": c.reason}
                for c in checks]
        failed = [c for c in checks if not c.passed]
        outcome = "failed" if failed else "ok"
        summary = (f"{len(failed)} of {len(checks)} prerequisites failed: " + "; ".join(
            f"{c.name}: {c.reason}" for c in failed)) if failed else f"{len(checks)} prerequisites met"
        self._record("preflight", title, outcome, summary, {"checks": rows}, rows, t0, started, step_id=step_id)
        if failed:
            raise PreflightFailed(summary)

    def skip(self, title: str, reason: str, *, step_id: str = "") -> None:
        self._record("step", title, "skipped", reason, {}, None, time.monotonic(), utcnow(), step_id=step_id)

    def summary(self, *, record: bool | None = None) -> StepRecords:
        """Show every step and check with its status; raise RunFailed if any failed.

        Interactive runs are archived here: ``record`` defaults to True in a kernel that a Jupyter
        server started for an open notebook (JupyterLab), False elsewhere (plain Python, nbclient,
        nbmake); headless runs are archived by the runner, never here."""
        rows = [{"": _ICONS.get(r.outcome, ""), "kind": r.kind, "step": r.title, "outcome": r.outcome,
                 "seconds": f"{r.seconds:.1f}", "summary": shorten(r.summary, SUMMARY_WIDTH)} for r in self.records]
        failed = [r for r in self.records if r.outcome == "failed"]
        verdict = (f"FAILED: {len(failed)} step(s) failed" if failed else
                   f"{'APPLIED' if self.applying else 'PLANNED'}: {len(self.records)} step(s), none failed")
        _display(f"<h3>Summary: {html.escape(verdict)}</h3>" + _table_html(rows),
                 f"Summary: {verdict}\n" + _table_text(rows))
        self._emit({"event": "summary", "outcome": "failed" if failed else "succeeded"})
        if record is None or self.must_record:
            record = self.must_record or interactive.in_jupyter_server()
        if record and not self.headless:
            self._record_interactive(failed)
        if failed:
            reasons = "; ".join(f"{r.title}: {r.summary}" if r.summary else r.title for r in failed)
            raise RunFailed(f"{verdict}: {reasons}"[:2000], run_id=self.id)
        return StepRecords(self.records)

    # -- internals ------------------------------------------------------------------------------
    def _record_interactive(self, failed: list[StepRecord]) -> None:
        """Archive this interactive run: the notebook as the kernel ran it (or the runbook's source
        outside a kernel), redacted, its HTML, and a manifest like the runner's."""
        if self.recorded is not None:
            self._announce(f"already recorded as {self.recorded}; re-run the setup cell to start a new run")
            return
        import shutil

        import nbformat

        from opsbook import workdirs
        from opsbook.records import record as recording

        workdirs.sweep_stale_workdirs()  # what killed runs and dead kernels left behind
        ip = interactive.shell()
        source = interactive.notebook_path(self.runbook.path) if ip is not None else self.runbook.path
        red = recording.redactor_for(self.params, self.runbook, secrets.REDACTOR.registered())
        status = "failed" if failed else "succeeded"
        error = ("; ".join(f"{r.title}: {r.summary}" if r.summary else r.title for r in failed)[:2000]
                 if failed else None)
        staging = workdirs.make_workdir(f"opsbook-{self.id}-")  # mode 0700, with an owner file
        try:
            folder = staging / "record"
            folder.mkdir()
            extra: dict[str, Any] = {"interactive": True}
            if ip is not None:
                nb, info = interactive.executed_notebook(source, ip, since=self._first_cell)
                extra["interactive_notebook"] = info
            else:
                nb = nbformat.read(str(source), as_version=4)
                extra["interactive_notebook"] = {"notebook_path": str(source),
                                                 "note": "no Jupyter kernel: the runbook's source, without outputs"}
            nb = nbformat.from_dict(red.redact_obj(nb))
            nb.metadata.setdefault("opsbook", {})["run"] = {"run_id": self.id, "status": status,
                                                            "interactive": True}
            nbformat.write(nb, str(folder / recording.NOTEBOOK_NAME))
            if self.evidence_dir.is_dir():
                shutil.copytree(self.evidence_dir, folder / "evidence")
            dropped = recording.redact_evidence(folder / "evidence", red)
            evidence = [{"name": e["name"], "description": e["description"]} for e in self._evidence
                        if e["name"] not in dropped and (folder / "evidence" / e["name"]).is_file()]
            manifest = recording.manifest(
                rb=self.runbook, params=self.params, target=self.target, run_id=self.id, operator=self.operator,
                started=self.started, seconds=time.monotonic() - self._t0, status=status, failed_cell=None,
                error=error, approval=self.approval, steps=[_jsonable(asdict(r)) for r in self.records], evidence=evidence,
                evidence_dropped=dropped, red=red, extra=extra)
            recording.write_html(nb, folder, red, manifest=manifest)  # its header shows the manifest's facts
            ref = self.archive().record(runbook_id=self.runbook.id, run_id=self.id, source_dir=folder,
                                        manifest=manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.recorded = ref.path
        run_dir = self.evidence_dir.parent  # .opsbook/interactive/RUN_ID: archived now, not kept
        if run_dir.name == self.id and not os.path.islink(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        text = f"recorded as {self.recorded} (status {status}; `opsbook history` lists it, `opsbook verify` checks it)"
        _display(f"<p class='opsbook-recorded'>Recorded: {html.escape(text)}</p>", text)

    def _announce(self, text: str) -> None:
        if self.applying and text.startswith("apply mode:"):  # about to change the target: say so plainly
            _display("<p class='opsbook-applying' style='border-left:4px solid #ef6c00;padding:2px 8px'>"
                     f"<strong>⚠ {html.escape(text)}</strong></p>", text)
            return
        _display(f"<p><em>{html.escape(text)}</em></p>", text)

    def _call(self, kind: str, title: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              *, default_outcome: str, step_id: str = "") -> Any:
        t0, started = time.monotonic(), utcnow()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._record(kind, title, "failed", detail, {}, None, t0, started, step_id=step_id)
            with contextlib.suppress(Exception):  # shown as a short message in JupyterLab
                setattr(exc, interactive.STEP_ATTR, title)
            raise
        if isinstance(value, Result):
            self._record(kind, title, value.outcome or default_outcome, value.summary, value.details, value.rows,
                         t0, started, headline=value.headline, step_id=step_id)
            _show(value.show)
            return value.value if value.value is not None else value
        self._record(kind, title, default_outcome, "", {}, None, t0, started, step_id=step_id)
        return value

    def _record(self, kind: str, title: str, outcome: str, summary: str, details: dict[str, Any],
                rows: list[dict[str, Any]] | None, t0: float, started: str, headline: str = "",
                step_id: str = "") -> StepRecord:
        summary = secrets.REDACTOR.redact(summary)
        headline = shorten(secrets.REDACTOR.redact(str(headline)), 300)  # one line, cut at a word
        if rows:
            rows = secrets.REDACTOR.redact_obj(_jsonable(rows))
        rec = StepRecord(kind=kind, title=title, outcome=outcome, summary=summary,
                         details=secrets.REDACTOR.redact_obj(_jsonable(details)), started=started,
                         seconds=round(time.monotonic() - t0, 3), rows=rows[:MAX_ROWS] if rows else None,
                         headline=headline, id=step_id or _slug(title))
        if rows and len(rows) > MAX_ROWS:
            rec.details["rows_truncated"] = f"{len(rows)} rows, the first {MAX_ROWS} kept in the manifest"
        self.records.append(rec)
        icon = _ICONS.get(outcome, "")
        head = f"{icon} {title}: {outcome}" + (f" ({summary})" if summary else "")
        html_text = f"<p><strong>{icon} {html.escape(title)}</strong>: <code>{outcome}</code>" + (
            f" &mdash; {html.escape(summary)}" if summary else "") + "</p>"
        plain = head
        if rows is not None:  # a list: its table, or for an empty list one line saying so (not an empty table)
            html_text += _table_html(rows)
            plain += "\n" + _table_text(rows)
        _display(html_text, plain)
        self._emit({"event": "step", **asdict(rec)})
        return rec

    def _emit(self, event: dict[str, Any]) -> None:
        if not self._events:
            return
        line = secrets.REDACTOR.redact(json.dumps(_jsonable(event), sort_keys=True)) + "\n"
        with open(self._events, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()


#: what the last ``run.step``/``change``/``check`` returned, and in which cell (``_returned``)
_LAST_RETURN: dict[str, Any] = {}


def _returned(value: Any) -> Any:
    """Note ``value`` as what the step wrapper returned in this cell, so that a cell ending with the
    call (``run.step("Python packages", ...)``, ``run.check(...)``) does not echo it as
    ``Out[5]: Result(...)``/``Out[17]: False``: the step showed its outcome, summary and table already.
    The value still goes to ``_`` and ``Out``, and a cell that assigns it gets it as always."""
    ip = _ipython()
    if ip is not None:
        _LAST_RETURN.update(cell=getattr(ip, "execution_count", None), value=value)
    return value


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _quiet_echo(ip: Any) -> None:
    """Make IPython's display hook skip the value ``_returned`` noted in the same cell (once per shell;
    any other value of a cell is echoed as usual). Never raises: at worst the value is echoed."""
    hook = getattr(ip, "displayhook", None)
    if hook is None or getattr(hook, "_opsbook_quiet", False):
        return
    try:
        original = hook.compute_format_data

        def compute_format_data(result: Any) -> Any:
            if (_LAST_RETURN.get("value") is result and "value" in _LAST_RETURN
                    and _LAST_RETURN.get("cell") == getattr(ip, "execution_count", None)):
                return {}, {}  # nothing to publish: no execute_result, no "Out[n]:"
            return original(result)

        hook.compute_format_data = compute_format_data
        hook._opsbook_quiet = True
    except Exception:  # an IPython without this hook: the values are echoed, one line for a Result
        pass


class StepRecords(list[StepRecord]):
    """What ``run.summary()`` returns: the run's step records (a list), echoed in one line in Jupyter."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        counts: dict[str, int] = {}
        for r in self:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        p.text(f"({len(self)} step record(s): " + ", ".join(f"{n} {o}" for o, n in counts.items()) + ")")


def _slug(title: str) -> str:
    """A step id from a title, for steps run without a declaration (``run.step("Add the repo", ...)``)."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "step"


def _model_name(runbook_id: str) -> str:
    return "".join(w.capitalize() for w in runbook_id.split("-") if w) + "Settings"


def _context_class(runbook_id: str) -> Any:
    """The ``Context`` class of the runbook's ops module (``opsbook.ops.<id with _>``), or the base one
    (a runbook without an ops module of its own, such as a test fixture)."""
    import importlib

    from opsbook.ops.base import Context

    name = "opsbook.ops." + runbook_id.replace("-", "_")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the module exists and one of its imports is missing: say so
            raise
        return Context
    cls = getattr(module, "Context", Context)
    return cls if isinstance(cls, type) and issubclass(cls, Context) else Context


def _show(items: Iterable[Any]) -> None:
    """Show what a step's Result carries (``Result.show``): code, links, figures, in order."""
    from opsbook.notebook import display
    from opsbook.results import Code, Figure, Link

    for item in items or ():
        if isinstance(item, Code):
            display.show_code(item.text, item.lang)
        elif isinstance(item, Link):
            display.show_link(item.url, item.label)
        elif isinstance(item, Figure):
            display.show_png(item.png)


def _callable_name(fn: Callable[..., Any]) -> str:
    mod = getattr(fn, "__module__", "") or ""
    return f"{mod}.{getattr(fn, '__qualname__', repr(fn))}".lstrip(".")


def _gate(rb: catalog.Runbook, params: dict[str, Any], target: Target, operator: str, *,
          headless: bool, run_id: str | None) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The kernel's own plan/approve/apply gate, whatever started the kernel (``opsbook run``,
    papermill, nbclient, JupyterLab): an apply that needs approval checks the plan named by
    ``OPSBOOK_APPROVED_PLAN`` against the archive itself (``opsbook.approval.check``), and every apply
    has a write-ahead ``started`` ledger entry before its first step: the runner's, proven by its
    one-time token, or one this kernel writes. Returns (approval, the run id, whether the runner
    records this run)."""
    from opsbook import approval as gate
    from opsbook.errors import ApprovalError
    from opsbook.records.disk import open_archive

    if params.get("mode") != "apply":
        return None, run_id, headless
    plan = os.environ.get(ENV_APPROVED_PLAN) or None
    archive = open_archive()
    checked = None
    if gate.needs_approval(rb, params, target) or (plan and headless):  # the runner checks a given --approve too
        if not plan:
            why = gate.why_needed(rb, target)
            raise ApprovalError(
                f"apply mode needs an approved plan ({why}). Run it in plan mode first, review the "
                "record, then name that plan run: `%env OPSBOOK_APPROVED_PLAN=PLAN_RUN_ID` in a cell above "
                "this one (or start `opsbook lab --approve PLAN_RUN_ID`), or run headless with "
                f"`opsbook run {rb.id} --mode apply --approve PLAN_RUN_ID`.")
        # the notebook's own sha256 is compared only under the runner: a walkthrough edits its parameters cell
        checked = gate.check(archive, rb, params, plan, approver=operator, check_source=headless,
                             run_id=run_id if headless else None, target=target)
    else:
        plan = None  # not needed: nothing is consumed
    if headless and gate.runner_claim_ok(archive, run_id, plan if checked else None):
        return checked, run_id, True
    own = new_run_id()
    archive.start_run(runbook_id=rb.id, run_id=own, plan=plan if checked else None,
                      fields=gate.start_fields(rb=rb, params=params, target=target, operator=operator))
    return checked, own, False


#: the runbook ``start`` loaded last in this kernel (``path_base`` resolves its relative defaults)
_STARTED: dict[str, catalog.Runbook] = {}


def path_base(name: str, value: Any) -> Path:
    """The folder a relative path in parameter ``name`` is taken from, in the kernel: the runbook's own
    folder for the default as written in its parameters cell (``chart = "../charts/ml-platform"``,
    whatever folder papermill or JupyterLab started the kernel in), else the working folder (a value a
    caller gave; ``opsbook run`` has already made those absolute against the caller's folder)."""
    rb = _STARTED.get("runbook")
    p = rb.spec.params.get(name) if rb is not None else None
    if rb is not None and p is not None and value == p.default:
        return rb.path.resolve().parent
    source = os.environ.get(ENV_SOURCE)
    if p is None and source and value:  # no start() in this process: the runner's notebook
        return Path(source).resolve().parent
    return Path.cwd()


def start(runbook_id: str, namespace: dict[str, Any]) -> Run:
    """Create the run context from the notebook's parameters (validated again here, so that a
    notebook run directly in JupyterLab gets the same checks as ``opsbook run``) and show the banner."""
    source = os.environ.get(ENV_SOURCE) or ""
    headless = bool(source)
    if headless and Path(source).stem != runbook_id:
        raise RunbookError(f"this notebook calls opsbook.start({runbook_id!r}) but runs as {Path(source).stem!r} "
                           f"({source}): a runbook's setup cell names its own id")
    rb = catalog.load(Path(source)) if headless else catalog.get(runbook_id)
    given = {p.name: namespace[p.name] for p in rb.spec if p.name in namespace}
    # a name assigned next to the parameters (`namespace_typo = 3` in the parameters cell, or papermill's
    # injected cell) that is not one of them: validate() refuses it as an unknown parameter
    given.update({n: namespace[n] for n in parameters.assigned_with_parameters(rb.spec, namespace.get("In"))
                  if n not in rb.spec and n in namespace})
    _STARTED["runbook"] = rb
    if not headless and (ip := interactive.shell()) is not None:
        interactive.install(ip)  # before validation, so that a ParameterError is shown readably
    try:
        params = validate(rb.spec, given)
    except ParameterError as exc:
        if headless or interactive.shell() is None:  # in JupyterLab the error handler shows it
            _display("<pre>" + html.escape(str(exc)) + "</pre>", str(exc))
        raise
    target = get_target(params.get("target", "local"))
    # [required...] markers are checked by `opsbook run` before the kernel only: a walkthrough (or nbmake)
    # of a runbook with its defaults still runs, and shows its placeholders as placeholders
    try:  # [path...] parameters exist (opsbook run checked them before the kernel)
        if not headless:
            parameters.check_paths(rb.spec, params, path_base)
    except ParameterError as exc:
        if headless or interactive.shell() is None:
            _display("<pre>" + html.escape(str(exc)) + "</pre>", str(exc))
        raise
    run_id = os.environ.get(ENV_RUN_ID) if headless else None
    operator = os.environ.get(ENV_OPERATOR) or getpass.getuser()
    approval, run_id, headless = _gate(rb, params, target, operator, headless=headless, run_id=run_id)
    run = Run(runbook=rb, params=params, target=target, run_id=run_id or new_run_id(), operator=operator,
              headless=headless)
    run.approval = approval
    run.must_record = run.applying and not headless  # an apply no runner records archives itself
    if (shell := _ipython()) is not None:
        _quiet_echo(shell)  # headless too: a record shows each step once
    ip = None if headless else interactive.shell()
    if ip is not None:
        interactive.install(ip)
        run._first_cell = interactive.current_cell(ip)
    mode_note = ("APPLY: changes will be made" if run.applying else "plan: nothing will be changed")
    rows = [
        {"field": "runbook", "value": f"{rb.id} v{rb.version} ({rb.title}), risk {rb.risk}"},
        {"field": "run id", "value": run.id + ("" if headless else " (interactive)")},
        {"field": "mode", "value": mode_note},
        {"field": "target", "value": target.describe(namespace=params.get("namespace"))
         + (" [PRODUCTION]" if target.production else "")},
        {"field": "operator", "value": f"{operator}@{socket.gethostname()}"},
    ]
    _display("<h3>opsbook run</h3>" + _table_html(rows), "opsbook run\n" + _table_text(rows))
    run._emit({"event": "start", "run_id": run.id, "mode": run.mode, "target": target.name})
    return run
