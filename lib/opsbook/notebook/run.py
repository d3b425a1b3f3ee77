"""The run context a runbook's cells call: step, change, check, preflight, do, summary."""

from __future__ import annotations

import contextlib
import html
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opsbook import catalog, secrets
from opsbook.errors import OpsbookError, PreflightFailed, RunFailed
from opsbook.ids import utcnow
from opsbook.notebook import interactive
from opsbook.notebook.context import _context_class, _model_name, path_base
from opsbook.notebook.display import jsonable, show_html, table_html, table_text
from opsbook.notebook.echo import _returned
from opsbook.results import Check, Result
from opsbook.runenv import (
    ENV_EVENTS,
    ENV_EVIDENCE_DIR,
)
from opsbook.targets import Target
from opsbook.text import shorten

MAX_ROWS = 200
#: one symbol per outcome: text symbols that every system font has (emoji show as empty boxes where
#: no emoji font is installed, as on most servers that render records)
_ICONS = {"ok": "✓", "changed": "●", "planned": "○", "skipped": "–", "failed": "✗"}
#: how a summary is cut in the summary table (at a word, marked "…"; the record keeps it whole)
SUMMARY_WIDTH = 120


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
    #: a change in apply mode: how ``opsbook undo`` takes it back (``opsbook.ops.journal.undo_record``):
    #: ``{"by": UNDOER, "entries": [...]}``, or ``{"none": why}``; None: it changed nothing
    undo: dict[str, Any] | None = None





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
        from opsbook.records import open_archive

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
            data = json.dumps(jsonable(content), indent=2, sort_keys=True).encode()
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
                project_dir=catalog.project_root(), incident_runs=self._incident_runs, resolve=secrets.resolve)
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
        try:  # the context checks what spans settings (a warm-up longer than the monitoring period...)
            ctx = self.ctx
        except Exception as exc:  # recorded as this step's failure, like an error inside the step
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._record(decl.kind, decl.title, "failed", detail, {}, None, time.monotonic(), utcnow(),
                         step_id=decl.id)
            raise
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
            return self.change(decl.title, fn, ctx, *args, plan=decl.plan, step_id=decl.id, undo=decl.undo,
                               **kwargs)
        return self.step(decl.title, fn, ctx, *args, step_id=decl.id, **kwargs)

    def step(self, title: str, fn: Callable[..., Any], *args: Any, step_id: str = "", **kwargs: Any) -> Any:
        """Run a step that changes nothing (read, render, compute). Outcome ok, or failed (re-raised)."""
        return _returned(self._call("step", title, fn, args, kwargs, default_outcome="ok", step_id=step_id))

    def change(self, title: str, fn: Callable[..., Any], *args: Any,
               plan: Callable[..., Any] | None = None, step_id: str = "", undo: Any = None, **kwargs: Any) -> Any:
        """A step that changes the world. In plan mode only ``plan(*args, **kwargs)`` runs (if given)
        and the step is recorded as planned; in apply mode ``fn`` runs and it is recorded as changed,
        with what ``opsbook undo`` needs to take it back: the entries of the journal the step's context
        gets (``ctx.journal``), and how (``undo``, see ``opsbook.ops.journal``)."""
        if not self.applying:
            self._announce(f"plan mode: {title} is not applied")
            if plan is None:
                return _returned(self._record("change", title, "planned", "would run " + _callable_name(fn), {},
                                              None, time.monotonic(), utcnow(), step_id=step_id))
            return _returned(self._call("change", title, plan, args, kwargs, default_outcome="planned",
                                        step_id=step_id))
        key = step_id or _slug(title)  # a change is known by its id: a reworded title is the same change
        done = next((r for r in self.records if r.kind == "change" and r.id == key
                     and r.outcome == "changed"), None)
        if done is not None:
            raise OpsbookError(
                f"{title!r} was already applied in run {self.id} (at {done.started}); not applying it twice. "
                "To apply it again, re-run the setup cell to start a new run.")
        self._announce(f"apply mode: {title} changes the target {self.target.name}")
        from opsbook.ops.journal import Journal

        journal = Journal()
        if args and hasattr(args[0], "journal"):  # an ops Context: the step's changes go into this journal
            args[0].journal = journal
        return _returned(self._call("change", title, fn, args, kwargs, default_outcome="changed", step_id=step_id,
                                    undo=(undo, journal)))

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
        show_html(f"<h3>Summary: {html.escape(verdict)}</h3>" + table_html(rows),
                 f"Summary: {verdict}\n" + table_text(rows))
        self._emit({"event": "summary", "outcome": "failed" if failed else "succeeded"})
        if record is None or self.must_record:
            record = self.must_record or interactive.in_jupyter_server()
        if record and not self.headless:
            self._record_interactive(failed)
        if failed and self.applying:
            self._say_how_to_undo()
        if failed:
            reasons = "; ".join(f"{r.title}: {r.summary}" if r.summary else r.title for r in failed)
            raise RunFailed(f"{verdict}: {reasons}"[:2000], run_id=self.id)
        return StepRecords(self.records)

    # -- internals ------------------------------------------------------------------------------
    def _say_how_to_undo(self) -> None:
        """After a failed apply: what it changed, and the command that takes it back (as the CLI says)."""
        from opsbook.records.record import changes_made

        changes = changes_made({"steps": [asdict(r) for r in self.records]})
        if not changes:
            return
        cmd = f"opsbook undo {self.id}"
        show_html(f"<p><strong>This apply changed {len(changes)} thing(s) before it stopped:</strong></p><ul>"
                  + "".join(f"<li><code>{html.escape(c)}</code></li>" for c in changes)
                  + f"</ul><p>To take them back (once this run is recorded): <code>{html.escape(cmd)}</code></p>",
                  f"This apply changed {len(changes)} thing(s) before it stopped:\n"
                  + "\n".join(f"  - {c}" for c in changes) + f"\nTo take them back (once this run is recorded): {cmd}")


    def _record_interactive(self, failed: list[StepRecord]) -> None:
        from opsbook.notebook.record import record_interactive

        record_interactive(self, failed)

    def _announce(self, text: str) -> None:
        if self.applying and text.startswith("apply mode:"):  # about to change the target: say so plainly
            show_html("<p class='opsbook-applying' style='border-left:4px solid #ef6c00;padding:2px 8px'>"
                     f"<strong>⚠ {html.escape(text)}</strong></p>", text)
            return
        show_html(f"<p><em>{html.escape(text)}</em></p>", text)

    def _call(self, kind: str, title: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              *, default_outcome: str, step_id: str = "", undo: tuple[Any, Any] | None = None) -> Any:
        t0, started = time.monotonic(), utcnow()

        def undo_of(outcome: str) -> dict[str, Any] | None:
            if undo is None:
                return None
            from opsbook.ops.journal import undo_record

            # a step that failed may have changed something even without a journal entry: say so
            return undo_record(undo[0], list(undo[1].entries), changed=outcome in ("changed", "failed"))

        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, Exception) and not (undo is not None and undo[1].entries):
                raise  # an interrupt before any change: nothing to record here (the runner records the run)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._record(kind, title, "failed", detail, {}, None, t0, started, step_id=step_id,
                         undo=undo_of("failed"))
            with contextlib.suppress(Exception):  # shown as a short message in JupyterLab
                setattr(exc, interactive.STEP_ATTR, title)
            raise
        if isinstance(value, Result):
            outcome = value.outcome or default_outcome
            self._record(kind, title, outcome, value.summary, value.details, value.rows,
                         t0, started, headline=value.headline, step_id=step_id, undo=undo_of(outcome))
            _show(value.show)
            return value.value if value.value is not None else value
        self._record(kind, title, default_outcome, "", {}, None, t0, started, step_id=step_id,
                     undo=undo_of(default_outcome))
        return value

    def _record(self, kind: str, title: str, outcome: str, summary: str, details: dict[str, Any],
                rows: list[dict[str, Any]] | None, t0: float, started: str, headline: str = "",
                step_id: str = "", undo: dict[str, Any] | None = None) -> StepRecord:
        summary = secrets.REDACTOR.redact(summary)
        headline = shorten(secrets.REDACTOR.redact(str(headline)), 300)  # one line, cut at a word
        if rows:
            rows = secrets.REDACTOR.redact_obj(jsonable(rows))
        rec = StepRecord(kind=kind, title=title, outcome=outcome, summary=summary,
                         details=secrets.REDACTOR.redact_obj(jsonable(details)), started=started,
                         seconds=round(time.monotonic() - t0, 3), rows=rows[:MAX_ROWS] if rows else None,
                         headline=headline, id=step_id or _slug(title),
                         undo=secrets.REDACTOR.redact_obj(jsonable(undo)) if undo is not None else None)
        if rows and len(rows) > MAX_ROWS:
            rec.details["rows_truncated"] = f"{len(rows)} rows, the first {MAX_ROWS} kept in the manifest"
        self.records.append(rec)
        icon = _ICONS.get(outcome, "")
        head = f"{icon} {title}: {outcome}" + (f" ({summary})" if summary else "")
        html_text = f"<p><strong>{icon} {html.escape(title)}</strong>: <code>{outcome}</code>" + (
            f" &mdash; {html.escape(summary)}" if summary else "") + "</p>"
        plain = head
        if rows is not None:  # a list: its table, or for an empty list one line saying so (not an empty table)
            html_text += table_html(rows)
            plain += "\n" + table_text(rows)
        show_html(html_text, plain)
        self._emit({"event": "step", **asdict(rec)})
        return rec

    def _emit(self, event: dict[str, Any]) -> None:
        if not self._events:
            return
        line = secrets.REDACTOR.redact(json.dumps(jsonable(event), sort_keys=True)) + "\n"
        with open(self._events, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()



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
