"""Run a runbook headlessly: validate, execute with papermill in a private staging dir, redact, archive.

Order of a run, and why:

1. Everything that can be refused is refused before a kernel starts: the runbook, the parameters,
   the target, and (for a high-risk apply) the approval of a matching plan run.
2. papermill executes into a private staging directory (mode 0700, outside ``outputs/``), because
   it autosaves the notebook after every cell, secrets and all.
3. Whatever happened (success, a failing cell, a dead kernel, Ctrl-C, SIGTERM), the executed
   notebook is redacted (every value the kernel registered, and every env:/file: reference the
   runner can resolve itself), rendered to HTML, and archived with its manifest. While that happens
   further Ctrl-C/SIGTERM are held back, so that an interrupted run still leaves its record.
"""

from __future__ import annotations

import _imp
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsbook import approval as gate
from opsbook import catalog, secrets
from opsbook.errors import ApprovalError, ArchiveError, RecordExists, RecordNotUploaded, UsageError
from opsbook.ids import new_run_id, utcnow
from opsbook.parameters import check_required, refuse, resolve_path, validate
from opsbook.records import record as recording
from opsbook.records.archive import RunArchive, open_archive
from opsbook.runenv import (
    ENV_APPROVED_PLAN,
    ENV_EVENTS,
    ENV_EVIDENCE_DIR,
    ENV_OPERATOR,
    ENV_RUN_ID,
    ENV_SOURCE,
)
from opsbook.targets import Target
from opsbook.targets import get as get_target

if TYPE_CHECKING:
    from opsbook.records.s3 import S3Path

from opsbook.kernel import (  # noqa: F401 - KERNEL_SHUTDOWN_WAIT, cell_labels, _kernel_manager_class: re-exported
    KERNEL_SHUTDOWN_WAIT,
    ProgressCallback,
    _HtmlWarmup,
    _kernel_manager_class,
    _register_engine,
    _RunWatchdog,
    _signals_held,
    _sigterm_as_interrupt,
    _StepFeed,
    _with_steps,
    cell_labels,
)

#: Space an archive must have free before a run (``RunArchive.check_writable``): a plan, or any run
#: that is not an apply, needs RESERVE_FLOOR (a record of a few notebooks' size; refusing a plan
#: into a full or read-only archive costs nothing, its record would be lost anyway); an apply
#: approved from a plan RESERVE_FACTOR times that plan record's size plus RESERVE_FLOOR (the apply
#: runs the same notebook with the same parameters, and usually prints a bit more); an apply
#: without a plan to size it from RESERVE_NO_PLAN.
RESERVE_FLOOR = 1 << 20
RESERVE_FACTOR = 2
RESERVE_NO_PLAN = 5 << 20

#: Timeouts when neither --cell-timeout/--run-timeout, the target nor the runbook's metadata set
#: one. The longest wait a shipped runbook declares by default is 300 s per rollout (several in one
#: cell at most), and canary monitoring is a later plan run, not a wait in a cell: 30 min per cell
#: is six such waits, so only a hung cell hits it. 4 h per run is eight cells at that limit, and
#: bounds a run whose every cell is just under it; on a cluster --job-timeout (1 h) is tighter.
DEFAULT_CELL_TIMEOUT = 1800
DEFAULT_RUN_TIMEOUT = 4 * 3600


def record_reserve(archive: Any, params: dict[str, Any], approval: dict[str, Any] | None) -> int:
    """The free space (bytes) the archive must have before this run starts (see RESERVE_FLOOR)."""
    if params.get("mode") != "apply":
        return RESERVE_FLOOR
    plan = (approval or {}).get("plan_run_id")
    size = _record_size(archive, plan) if plan else None
    return RESERVE_NO_PLAN if size is None else RESERVE_FACTOR * size + RESERVE_FLOOR


def _record_size(archive: Any, run_id: str) -> int | None:
    """Bytes of a record: its manifest plus every file its manifest lists (sizes from the S3
    upload receipts, else the files on disk); ``None`` if that cannot be told."""
    try:
        ref = archive.find(run_id)
        if ref is None:
            return None
        mbytes = ref.manifest_path.read_bytes()
        doc = json.loads(mbytes)
        stored = doc.get("s3_objects") or {}
        total = len(mbytes)
        for rel in doc.get("files") or {}:
            size = (stored.get(rel) or {}).get("size") if isinstance(stored, dict) else None
            total += size if isinstance(size, int) else os.stat(Path(ref.path) / rel).st_size
        return total
    except (OSError, ValueError, TypeError, AttributeError, ArchiveError):
        return None


def effective_timeouts(prep: Prepared, *, cell_timeout: int | None = None,
                       run_timeout: int | None = None) -> dict[str, Any]:
    """The per-cell and per-run timeouts (seconds) of a run and where each came from, first found of:
    the caller (``--cell-timeout``/``--run-timeout``), the target, the runbook's metadata
    (``opsbook.timeouts``), the defaults. Recorded in the manifest as ``timeouts``."""
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    for kind, given, default in (("cell", cell_timeout, DEFAULT_CELL_TIMEOUT), ("run", run_timeout, DEFAULT_RUN_TIMEOUT)):
        for value, where in ((given, f"--{kind}-timeout"),
                             (getattr(prep.target, f"{kind}_timeout", None), f"target {prep.target.name}"),
                             (getattr(prep.runbook, f"{kind}_timeout", None), f"runbook {prep.runbook.id} metadata"),
                             (default, "default")):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{kind} timeout {value!r} from {where}: expected a whole number of seconds, at least 1")
            out[kind], source[kind] = value, where
            break
    out["source"] = source
    return out


@dataclass
class RunOutcome:
    run_id: str
    runbook_id: str
    status: str  # succeeded | failed | aborted
    record_dir: Path | S3Path | None  # an S3Path prints as the record's s3:// URL
    failed_cell: dict[str, Any] | None = None
    error: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "failed": 1, "aborted": 130}[self.status]


@dataclass
class Prepared:
    runbook: catalog.Runbook
    params: dict[str, Any]
    target: Target
    approval: dict[str, Any] | None


def prepare(runbook_id: str, given: dict[str, Any], *, text_values: set[str] | None = None,
            mode: str | None = None, target: str | None = None, approve: str | None = None,
            archive: RunArchive | None = None, notebooks: Path | None = None,
            operator: str | None = None, check_paths: bool = True) -> Prepared:
    """Everything that is checked before a kernel starts. Raises UsageError subclasses. ``check_paths=False``
    (``--on-cluster``: the files are the pod's) leaves ``[path...]`` parameters as given."""
    rb = catalog.get(runbook_id, notebooks)
    given = dict(given)
    text_values = set(text_values or ())
    if mode is not None:
        given["mode"] = mode
        text_values.discard("mode")
    if target is not None:
        given["target"] = target
        text_values.discard("target")
    if approve:  # apply what was planned: the plan's parameters, where this apply is not given them
        declared = {p.name for p in rb.spec}
        for name, value in gate.plan_parameters(archive or open_archive(), approve).items():
            if name in declared:
                given.setdefault(name, value)
    params = validate(rb.spec, given, text_values=text_values)
    path_problems = []
    for p in rb.spec:  # a relative file: reference is relative to the folder opsbook was started in, not the
        ref = params.get(p.name)  # kernel's (notebooks/): made absolute here, so the record shows which file
        if p.secret and isinstance(ref, str) and ref.startswith("file:") and not ref[5:].startswith("~"):
            if not os.path.isabs(ref[5:]):
                params[p.name] = "file:" + os.path.abspath(ref[5:])
        if p.path and check_paths:  # [path...]: the same for path parameters, and a missing one is refused here
            params[p.name], problem = resolve_path(p, ref, mine=p.name in given, cwd=Path.cwd(),
                                                   notebook_dir=rb.path.resolve().parent)
            path_problems += [problem] if problem else []
    refuse(path_problems)
    check_required(rb.spec, params, lambda: get_target(params.get("target", "local")))  # [required...]
    tgt = get_target(params.get("target", "local"))
    approval = None
    if approve and params.get("mode") != "apply":
        raise ApprovalError("--approve names the plan run that an apply executes; use it with --mode apply")
    if approve or gate.needs_approval(rb, params, tgt):  # a given --approve is checked even where not needed
        approval = gate.check(archive or open_archive(), rb, params, approve, approver=operator or _operator(),
                              target=tgt)
    if archive is not None:
        # before any kernel: on disk a write probe and the free space the record needs (an apply that
        # made its change must not end without a record); S3: bucket, credentials, Object Lock
        archive.check_writable(record_reserve(archive, params, approval))
    return Prepared(rb, params, tgt, approval)


#: The approval check (kept under its old name for callers of ``opsbook.runner``).
check_approval = gate.check


def _operator() -> str:
    import getpass

    return os.environ.get(ENV_OPERATOR) or getpass.getuser()


def _locate_failed_cell(nb: Any) -> dict[str, Any]:
    """Where the failing cell is in the runbook as written (papermill adds an injected-parameters
    cell and error markers to the executed notebook, which shift its indices)."""
    index, code_number = 0, 0
    running: dict[str, Any] | None = None
    for cell in nb.cells:
        meta = cell.get("metadata", {})
        tags = meta.get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        if cell.cell_type == "code":
            code_number += 1
            where = {"index": index, "code_cell": code_number, "source": "".join(cell.source)[:500]}
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                return where
            if meta.get("papermill", {}).get("status") in ("running", "failed") and running is None:
                running = where  # a cell that timed out, or was running when the kernel died
        index += 1
    return running or {"source": ""}


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def execute(prep: Prepared, *, archive: RunArchive, progress: ProgressCallback | None = None,
            operator: str | None = None, run_id: str | None = None, cell_timeout: int | None = None,
            run_timeout: int | None = None) -> RunOutcome:
    """Execute a prepared run and archive its record, whatever happens. Never raises for a run that
    failed or was interrupted: the outcome says so (``status``, ``exit_code``). ``cell_timeout`` and
    ``run_timeout`` (seconds) override the target's, the runbook's and the defaults
    (``effective_timeouts``); a run that exceeds its run timeout is stopped and recorded as failed."""
    rb, params = prep.runbook, prep.params
    timeouts = effective_timeouts(prep, cell_timeout=cell_timeout, run_timeout=run_timeout)
    run_id = run_id or new_run_id()
    operator = operator or _operator()
    started, t0 = utcnow(), time.monotonic()
    watchdog = _RunWatchdog(timeouts["run"], t0)
    from opsbook import workdirs

    workdirs.sweep_stale_workdirs()  # the staging folders of runs that were killed (SIGKILL)
    staging = workdirs.make_workdir(f"opsbook-{run_id}-")  # mode 0700, with an owner file for that sweep
    out_nb = staging / "record" / recording.NOTEBOOK_NAME
    out_nb.parent.mkdir()
    events, secrets_file = staging / "events.jsonl", staging / "secrets.jsonl"
    claim_file = staging / "claim"
    if params.get("mode") == "apply":  # write ahead: the archive shows this apply before its first cell runs
        token, digest = gate.new_claim()
        try:
            archive.start_run(runbook_id=rb.id, run_id=run_id, claim=digest,
                              plan=(prep.approval or {}).get("plan_run_id"),
                              fields=gate.start_fields(rb=rb, params=params, target=prep.target, operator=operator))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fd = os.open(claim_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
    env_keys = {ENV_RUN_ID: run_id, ENV_SOURCE: str(rb.path.resolve()), ENV_EVENTS: str(events),
                secrets.ENV_SECRETS_FILE: str(secrets_file), ENV_OPERATOR: operator,
                catalog.ENV_OUTPUTS: archive.location,
                ENV_APPROVED_PLAN: (prep.approval or {}).get("plan_run_id", ""),
                ENV_EVIDENCE_DIR: str(out_nb.parent / "evidence"),
                gate.ENV_CLAIM_FILE: str(claim_file) if claim_file.exists() else ""}
    saved_env = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    status, failed_cell, error = "succeeded", None, None
    warm = _HtmlWarmup()
    pm_error: type[BaseException] | None = None
    try:
        with _sigterm_as_interrupt():
            # papermill (and with it nbformat, nbclient, jupyter_client) is imported in this thread
            # before the HTML warm-up thread starts: two threads importing the same package at once
            # can see it half-initialised ("cannot import name ... from partially initialized module").
            import papermill
            from papermill.exceptions import PapermillExecutionError

            pm_error = PapermillExecutionError
            warm.start()
            engine = _register_engine()
            manager = _kernel_manager_class(staging)
            feed = _StepFeed(events, lambda: recording.redactor_for(params, rb, secrets.read_registered(secrets_file)))
            with watchdog:
                papermill.execute_notebook(
                    str(rb.path), str(out_nb), parameters=params, engine_name=engine, progress_bar=False,
                    cwd=str(rb.path.parent), log_output=False, execution_timeout=timeouts["cell"],
                    # the kernel's own TCP-transport warning is noise in an operator's terminal
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"], **watchdog.engine_kwargs(timeouts["cell"]),
                    **({"kernel_manager_class": manager} if manager is not None else {}),
                    opsbook_progress=_with_steps(progress, feed) if progress is not None else None)
    except KeyboardInterrupt as exc:
        if watchdog.fired:  # a time limit like the cell timeout: failed (exit 1), not an operator's abort
            status, failed_cell, error = "failed", {}, watchdog.message
        else:
            status = "aborted"
            error = f"interrupted ({str(exc) or 'Ctrl-C'})"
    except Exception as exc:  # a failing cell, a dead kernel, a timeout, a kernel that never started
        status = "failed"
        if pm_error is not None and isinstance(exc, pm_error):
            failed_cell = {"index": getattr(exc, "cell_index", None),
                           "execution_count": getattr(exc, "exec_count", None),
                           "ename": getattr(exc, "ename", ""), "evalue": getattr(exc, "evalue", "")}
            error = f"{failed_cell['ename']}: {failed_cell['evalue']}"
        else:
            failed_cell = {}
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            if "DeadKernel" in type(exc).__name__:
                error = f"the kernel died (killed or out of memory): {exc}"
        if "Timeout" in type(exc).__name__ and watchdog.exceeded():  # a cell capped at the run's time left
            error = f"{watchdog.message} ({error})"
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with _signals_held() as held:
        try:
            outcome = _finalize(prep, archive=archive, staging=staging, out_nb=out_nb, events=events,
                                secrets_file=secrets_file, run_id=run_id, operator=operator, started=started,
                                seconds=time.monotonic() - t0, status=status, failed_cell=failed_cell,
                                error=error, warm=warm, timeouts=timeouts)
        except (RecordExists, RecordNotUploaded):
            raise  # a refused run id; or S3 failed and the record is kept locally (the error says where)
        except Exception as exc:
            outcome = _minimal_record(prep, archive=archive, run_id=run_id, operator=operator, started=started,
                                      status=status, error=error, finalize_error=exc, secrets_file=secrets_file,
                                      timeouts=timeouts)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if held and outcome.status == "succeeded":
            outcome.error = "interrupted while the record was written; the record is complete"
    return outcome


def _minimal_record(prep: Prepared, *, archive: RunArchive, run_id: str, operator: str, started: str, status: str,
                    error: str | None, finalize_error: BaseException, secrets_file: Path,
                    timeouts: dict[str, Any] | None = None) -> RunOutcome:
    """The full record could not be built: keep a manifest-only record rather than nothing. The
    executed notebook is left out, since it may not have been redacted; the error texts are
    redacted, or left out if even that is not possible."""
    try:
        red = recording.redactor_for(prep.params, prep.runbook, secrets.read_registered(secrets_file))
    except Exception:
        red = None
        error = "(the error text is left out: the redactor could not be built)"
    manifest: dict[str, Any] = {
        "run_id": run_id, "runbook_id": prep.runbook.id, "runbook_version": prep.runbook.version,
        "source_sha256": prep.runbook.sha256, "source_content_sha256": prep.runbook.content_sha256,
        "parameters": prep.params, "mode": prep.params.get("mode", "plan"),
        "target": prep.target.name, "operator": operator, "host": socket.gethostname(), "started": started,
        "ended": utcnow(), "status": "failed" if status == "succeeded" else status,
        "error": (error or "") + f" [record incomplete: {type(finalize_error).__name__}: {finalize_error}; "
                                 "the executed notebook was not archived]",
        "timeouts": timeouts,
    }
    if red is not None:
        manifest = red.redact_obj(manifest)
    with tempfile.TemporaryDirectory(prefix="opsbook-min-") as empty:
        ref = archive.record(runbook_id=prep.runbook.id, run_id=run_id, source_dir=Path(empty), manifest=manifest)
    return RunOutcome(run_id=run_id, runbook_id=prep.runbook.id, status=manifest["status"],
                      record_dir=ref.path, error=manifest["error"], manifest=manifest)


def _finalize(prep: Prepared, *, archive: RunArchive, staging: Path, out_nb: Path, events: Path,
              secrets_file: Path, run_id: str, operator: str, started: str, seconds: float, status: str,
              failed_cell: dict[str, Any] | None, error: str | None, warm: _HtmlWarmup,
              timeouts: dict[str, Any] | None = None) -> RunOutcome:
    import nbformat

    rb, params = prep.runbook, prep.params
    red = recording.redactor_for(params, rb, secrets.read_registered(secrets_file))
    if out_nb.exists():
        nb = nbformat.read(str(out_nb), as_version=4)
    else:  # interrupted before papermill's first save: keep the source as the record's notebook
        nb = nbformat.read(str(rb.path), as_version=4)
    nb = nbformat.from_dict(red.redact_obj(nb))
    nb.metadata.setdefault("opsbook", {})["run"] = {"run_id": run_id, "status": status}
    nbformat.write(nb, str(out_nb))
    if failed_cell is not None:
        try:
            failed_cell.update(_locate_failed_cell(nb))
        except Exception as exc:  # never lose the record over a detail
            failed_cell["locate_error"] = repr(exc)
        if not failed_cell.get("source") and "evalue" not in failed_cell:
            failed_cell = None  # the kernel never got to a cell (did not start)
        else:
            failed_cell["evalue"] = red.redact(str(failed_cell.get("evalue", "")))
    dropped = recording.redact_evidence(out_nb.parent / "evidence", red)
    evs = _read_events(events)
    steps = [{k: v for k, v in e.items() if k != "event"} for e in evs if e.get("event") == "step"]
    summary = next((e["outcome"] for e in reversed(evs) if e.get("event") == "summary"), None)
    if status == "succeeded" and any(s.get("outcome") == "failed" for s in steps) and summary is None:
        # a step failed but the notebook did not raise: the run is not a success
        status, error = "failed", "a step reported failed"
    manifest = recording.manifest(
        rb=rb, params=params, target=prep.target, run_id=run_id, operator=operator, started=started,
        seconds=seconds, status=status, failed_cell=failed_cell, error=error, approval=prep.approval, steps=steps,
        evidence=[{k: v for k, v in e.items() if k in ("name", "description")} for e in evs
                  if e.get("event") == "evidence" and e.get("name") not in dropped],
        evidence_dropped=dropped, red=red, extra={"timeouts": timeouts} if timeouts is not None else None)
    # the HTML after the manifest (its header shows the run's final status, headline and timings) and
    # before the archive hashes the record's files
    isolated = False
    if warm.ident is not None:  # started
        warm.join(timeout=2)
        # a Ctrl-C that lands inside the import machinery of this thread can leave the global import
        # lock held (it is re-entrant for this thread, not for the warm-up thread, which then waits for
        # ever holding nbconvert's module locks): render in a fresh interpreter instead of hanging
        isolated = warm.is_alive() and _imp.lock_held()
        if not isolated:
            warm.join(timeout=28)
    recording.write_html(nb, out_nb.parent, red, exporter=None if isolated else warm.exporter, manifest=manifest,
                         isolated=isolated)
    ref = archive.record(runbook_id=rb.id, run_id=run_id, source_dir=out_nb.parent, manifest=manifest)
    return RunOutcome(run_id=run_id, runbook_id=rb.id, status=status, record_dir=ref.path,
                      failed_cell=failed_cell, error=manifest["error"], manifest=manifest)

