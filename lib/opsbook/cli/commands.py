"""The verbs: each parses nothing (``parser``), delegates to the engine, and prints what it gets."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from opsbook.cli.output import _console, _fitted_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _cmd_list(args: argparse.Namespace) -> int:

    from opsbook import catalog
    from opsbook.errors import RunbookError
    from opsbook.text import safe_text

    d = catalog.notebooks_dir(args.notebooks)
    books = catalog.all_runbooks(d)
    rows: list[list[str]] = []
    broken = 0
    for rb in books:
        if isinstance(rb, RunbookError):
            broken += 1
            rows.append(["[red]invalid[/red]", safe_text(rb), "", "", ""])
        else:
            risk = ("[bold red]high[/bold red]" if rb.high_risk else "low") + (
                f" (declared {rb.declared_risk}; outside the catalogue)" if rb.external else "")
            rows.append([safe_text(rb.id), safe_text(rb.title, oneline=True), safe_text(rb.version, oneline=True),
                         risk, str(len(rb.spec.params))])
    con = _console()
    con.print(_fitted_table(f"Runbooks in {safe_text(d)}", [("id", True), ("title", False), ("version", True),
                                                          ("risk", False), ("parameters", True)], rows,
                            width=con.width, drop_first=("parameters", "version")))
    return EXIT_FAILED if broken else EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from opsbook import catalog
    from opsbook.text import safe_text

    rb = catalog.get(args.runbook, catalog.notebooks_dir(args.notebooks))
    if args.markdown:
        from opsbook.paramdocs import markdown_table

        sys.stdout.write(markdown_table(rb))
        return EXIT_OK
    con = _console()
    con.print(f"[bold]{safe_text(rb.title, oneline=True)}[/bold]  ({safe_text(rb.id)} "
              f"v{safe_text(rb.version, oneline=True)}, risk {safe_text(rb.risk)})")
    con.print(f"Objective: {safe_text(rb.objective)}")
    if rb.high_risk:
        con.print("Apply needs --approve PLAN_RUN_ID (high risk).")
    table = Table(title="Parameters")
    for col in ("name", "type", "default", "expects", "help"):
        table.add_column(col, overflow="fold")
    for p in rb.spec:
        table.add_row(*(safe_text(x) for x in (p.name, p.type, repr(p.default), p.describe(), p.help)))
    con.print(table)
    if rb.rbac is None:
        con.print("RBAC: not declared (the runbook cannot run --on-cluster)")
        return EXIT_OK
    rbac = Table(title="RBAC it needs (what --on-cluster grants its Job, nothing more)")
    for col in ("scope", "apiGroups", "resources", "verbs", "resourceNames"):
        rbac.add_column(col, overflow="fold")
    for scope, rules in (("namespace", rb.rbac.rules), ("cluster", rb.rbac.cluster_rules)):
        for r in rules:
            rbac.add_row(scope, *(safe_text(", ".join(x) if x else "-") for x in (
                tuple(g or '""' for g in r.api_groups), r.resources, r.verbs, r.resource_names)))
    con.print(rbac if rb.rbac.rules or rb.rbac.cluster_rules else "RBAC: none (no Kubernetes API call)")
    return EXIT_OK


def _cmd_new(args: argparse.Namespace) -> int:
    from opsbook import scaffold

    made = scaffold.create(args.runbook, title=args.title, risk=args.risk, objective=args.objective,
                           notebooks=args.notebooks)
    what = ("the runbook: prose, parameters cell, one step per cell", "its steps: @preflight, @change with a "
            "plan, @check", "its tests: make_context/do, the Kubernetes API, a plan run")
    paths = [scaffold.shown(p) for p in made.files]
    width = max(len(p) for p in paths)
    print(f"created runbook {made.runbook_id} (risk {made.risk}):")
    for path, note in zip(paths, what, strict=True):
        print(f"  {path.ljust(width)}  {note}")
    if made.external:
        print(f"note: {made.notebook.parent} is outside the catalogue: the runbook runs as high-risk there")
    print("next:")
    for command in made.next_commands():
        print(f"  {command}")
    print("then replace each TODO, and add the runbook to docs/runbooks.md and README.md's catalogue "
          "(docs/writing-a-runbook.md)")
    return EXIT_OK


def _cmd_mlflow(args: argparse.Namespace) -> int:
    """``mlflow stop|status``: the embedded MLflow server of target local (``clients.mlflow.LocalServer``)."""
    from opsbook import catalog
    from opsbook.clients.mlflow import DEFAULT_LOCAL_PORT, LocalServer, state_dir

    folder = args.state_dir or state_dir(catalog.project_root())
    server = LocalServer(folder, port=args.port or DEFAULT_LOCAL_PORT)
    if args.action == "stop":
        print("stopped" if server.stop() else f"no embedded server running (no live pid in {server.pid_file})")
        return EXIT_OK
    pid = server.pid()
    print(f"pid {pid or '-'}; {server.url} {'answers' if server.running() else 'does not answer'}")
    return EXIT_OK if pid else EXIT_FAILED


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from opsbook.targets import scan
    from opsbook.text import safe_text

    table = Table(title="Targets")
    for col in ("name", "cluster", "namespace", "mlflow", "production", "approval", "source"):
        table.add_column(col, overflow="fold")
    usable, broken = scan()
    for t in usable.values():
        table.add_row(*(safe_text(x, oneline=True) for x in (
            t.name, t.kube_context or ("(kubeconfig)" if t.kubeconfig else "none: plan only"), t.namespace,
            t.mlflow_uri or "embedded", "YES" if t.production else "no", "required" if t.requires_approval else "-",
            t.source)))
    for b in broken:
        table.add_row(safe_text(b.name if b.name is not None else "(whole file)", oneline=True),
                      "[red]invalid[/red]", "", "", "", "", safe_text(b.source, oneline=True))
    con = _console()
    con.print(table)
    for b in broken:  # the reason, one line each (not folded into a table cell)
        con.print(f"[red]invalid[/red] {safe_text(b.reason, oneline=True)}", soft_wrap=True, highlight=False)
    return EXIT_FAILED if broken else EXIT_OK


def _given_parameters(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """The parameters given with -f files (in order) then -p pairs, and the names given as text (-p)."""
    from opsbook.parameters import load_params_file

    given: dict[str, Any] = {}
    for f in args.parameters_file:
        given.update(load_params_file(f))
    text_values: set[str] = set()
    for name, value in args.parameter:
        given[name] = value
        text_values.add(name)
    return given, text_values


def _cmd_run(args: argparse.Namespace) -> int:
    if args.on_cluster or args.dry_run:
        return _cmd_run_on_cluster(args)
    from opsbook import catalog, cireport, notify, runner, runview
    from opsbook.records import open_archive

    ci_format = cireport.choose(args.ci)  # None: terminal output
    # a bad --notify (or an env:/file: reference that cannot give a URL) is refused before anything runs
    notify_to = notify.targets(args.notify)
    given, text_values = _given_parameters(args)
    archive = open_archive(args.outputs, retention=args.retention)
    nbdir = catalog.notebooks_dir(args.notebooks)
    prep = runner.prepare(args.runbook, given, text_values=text_values, mode=args.mode, target=args.target,
                          approve=args.approve, archive=archive, notebooks=nbdir)
    ci = cireport.make(ci_format, quiet=args.quiet) if ci_format else None
    err = _console(stderr=True)
    mode = prep.params.get("mode", "plan")
    progress_cb: Any
    view: Any = None
    if ci is not None:
        ci.banner(runbook=prep.runbook.id, version=prep.runbook.version, mode=mode,
                  target=prep.target.describe(namespace=prep.params.get("namespace")),
                  approve=args.approve)
        _warn_unverified_tls(prep.target, ci, err)
        progress_cb, stop = ci.progress, ci.end_progress
    else:
        from opsbook.text import safe_text

        err.print(f"[bold]{prep.runbook.id}[/bold] v{safe_text(prep.runbook.version, oneline=True)}: mode "
                  f"[bold]{safe_text(mode)}[/bold], target "
                  f"{safe_text(prep.target.describe(namespace=prep.params.get('namespace')), oneline=True)}"
                  + (f", approved plan {safe_text(args.approve)}" if args.approve else ""))
        _warn_unverified_tls(prep.target, None, err)
        view = runview.RunView(err, quiet=args.quiet)
        view.start()
        progress_cb, stop = (None if args.quiet else view.callback), view.stop
    try:
        with _say_interrupting(view, err):
            outcome = runner.execute(prep, archive=archive, progress=progress_cb, cell_timeout=args.cell_timeout,
                                     run_timeout=args.run_timeout, run_id=args.run_id)
    finally:
        stop()
    result = cireport.run_result(outcome)
    if ci is not None:
        ci.report(result, outcome.manifest)
    else:
        view.report(status=outcome.status, run_id=outcome.run_id, manifest=outcome.manifest,
                    record=outcome.record_dir, error=outcome.error, failed_cell=outcome.failed_cell, out=_console())

    def warn(text: str) -> None:  # one line on stderr, in the CI format when there is one
        print(ci.format_warning(text) if ci is not None else f"opsbook: warning: {text}", file=sys.stderr, flush=True)

    _say_how_to_undo(outcome, args, _console())
    for problem in cireport.write_files(result, outcome.manifest, junit=args.junit, output_json=args.output_json):
        warn(problem)
    if notify_to:  # after the record is sealed; never changes the exit code
        from opsbook.clients.webhook import Webhook

        try:
            for sent in notify.deliver(notify_to, outcome.manifest, record=result["record"],
                                       link=cireport.job_url(), client=Webhook()):
                if sent.delivery.delivered:
                    print(f"opsbook: {sent.line()}", file=sys.stderr, flush=True)
                else:
                    warn(sent.line())
        except KeyboardInterrupt:
            warn("notifications skipped: interrupted")
        except Exception as exc:
            warn(f"notifications failed: {type(exc).__name__}")
    return outcome.exit_code


def _cmd_undo(args: argparse.Namespace) -> int:
    """``undo RUN_ID``: the undo runbook on the apply's own target, through ``run``."""
    from opsbook.errors import ArchiveError, UsageError
    from opsbook.records import open_archive
    from opsbook.records.record import UNDO_RUNBOOK

    archive = open_archive(args.outputs, create=False)
    try:
        applied = archive.load_manifest(args.run_id)
    except ArchiveError as exc:
        raise UsageError(f"undo {args.run_id}: {exc} (`opsbook history` lists the runs)") from None
    if applied.get("mode") != "apply" or applied.get("runbook_id") == UNDO_RUNBOOK:
        raise UsageError(f"undo {args.run_id}: that is a {applied.get('mode')} run of {applied.get('runbook_id')}; "
                         "only an apply of a runbook can be undone")
    run_args = argparse.Namespace(
        runbook=UNDO_RUNBOOK, parameter=[["undo_of", args.run_id]], parameters_file=[], mode=args.mode,
        target=str(applied.get("target") or "local"), approve=args.approve, cell_timeout=None, run_timeout=None,
        quiet=args.quiet, run_id=None, on_cluster=False, dry_run=False, retention=None, ci=args.ci, junit=None,
        output_json=args.output_json, notify=None, outputs=args.outputs, notebooks=args.notebooks)
    return _cmd_run(run_args)


def _archive_flags(args: argparse.Namespace) -> str:
    """``--outputs``/``--notebooks`` as given, so that a printed command acts on the same archive."""
    out = ""
    if getattr(args, "outputs", None):
        out += f" --outputs {shlex.quote(args.outputs)}"
    if getattr(args, "notebooks", None):
        out += f" --notebooks {shlex.quote(args.notebooks)}"
    return out


def _say_how_to_undo(outcome: Any, args: argparse.Namespace, out: Any) -> None:
    """After an apply that did not succeed: what it changed, and the exact command that takes it back."""
    from opsbook.records.record import UNDO_RUNBOOK, changes_made
    from opsbook.text import safe_text

    m = outcome.manifest or {}
    if m.get("mode") != "apply" or outcome.status == "succeeded":
        return
    if m.get("runbook_id") == UNDO_RUNBOOK:  # an undo that stopped: a new one takes back what is left
        undoes = str(m.get("undoes") or "")
        if undoes:
            out.print(f"This undo stopped before everything was taken back (see its record). Fix the cause, then "
                      f"plan a new undo: it takes back what is left.\n  opsbook undo {shlex.quote(undoes)}"
                      + _archive_flags(args), highlight=False, markup=False, soft_wrap=True)
        return
    changes = changes_made(m)
    if not changes:
        out.print("This apply changed nothing that its record can undo.", highlight=False)
        return
    cmd = f"opsbook undo {outcome.run_id}" + _archive_flags(args)
    out.print(f"This apply changed {len(changes)} thing(s) before it stopped:", highlight=False)
    for line in changes:
        out.print(f"  - {safe_text(line, oneline=True)}", highlight=False, markup=False, soft_wrap=True)
    out.print("To take them back (a plan first, then --mode apply --approve UNDO_PLAN_ID):", highlight=False)
    out.print(f"  {cmd}", highlight=False, markup=False, soft_wrap=True)


def _warn_unverified_tls(target: Any, ci: Any, err: Any) -> None:
    """Part of the banner: the one place a run says its API server's identity is not checked (the
    Kubernetes client keeps urllib3 from repeating it on every request, in the records too)."""
    text = target.tls_warning()
    if not text:
        return
    from opsbook.text import safe_text

    if ci is not None:
        print(ci.format_warning(text), file=ci.stream, flush=True)
    else:
        err.print(f"[yellow]warning:[/yellow] {safe_text(text, oneline=True)}", soft_wrap=True, highlight=False)


def _cmd_run_on_cluster(args: argparse.Namespace) -> int:
    """``run ID --on-cluster``: ``opsbook.oncluster.command`` validates, launches and follows the Job."""
    from opsbook.oncluster import command

    given, text_values = _given_parameters(args)
    return command.run(args, given, text_values, out=_console(), err=_console(stderr=True))


@contextlib.contextmanager
def _say_interrupting(view: Any, con: Any) -> Iterator[None]:
    """The first Ctrl-C prints "interrupting…" at once, then interrupts as usual (the run stops, its
    record is written): stopping a kernel that is still starting takes a moment, and silence reads as
    a hang."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C is an ordinary one
        try:
            if view is not None:
                view.interrupting()
            else:
                print("opsbook: interrupting… the kernel is stopped and the run's record written",
                      file=sys.stderr, flush=True)
        finally:
            raise KeyboardInterrupt("Ctrl-C")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _parse_since(text: str | None) -> Any:
    if not text:
        return None
    from datetime import UTC, datetime

    from opsbook.errors import UsageError

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected YYYY-MM-DD or an ISO 8601 time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cmd_history(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from opsbook.records import open_archive
    from opsbook.text import safe_text

    archive = open_archive(args.outputs, create=False)  # a read verb never creates an archive
    entries = archive.history(runbook=args.runbook, status=args.status, since=_parse_since(args.since),
                              limit=args.limit or None)
    if args.json:
        for e in entries:
            print(json.dumps(asdict(e), sort_keys=True))
        return EXIT_OK

    colours = {"succeeded": "green", "failed": "red", "aborted": "yellow"}
    rows = []
    for e in entries:
        d = asdict(e)
        c = colours.get(d.get("status") or "", "magenta")
        status = "started, never finished" if e.is_start else d.get("status")
        rows.append([*(safe_text(v, oneline=True) for v in (d["run_id"], d["runbook_id"])),
                     f"[{c}]{safe_text(status, oneline=True)}[/{c}]",
                     *(safe_text(d.get(k) or "", oneline=True) for k in ("mode", "target", "operator", "started"))])
    con = _console()
    con.print(_fitted_table(f"Runs in {archive.root} ({len(entries)} shown)",
                            [("run id", True), ("runbook", True), ("status", True), ("mode", True), ("target", True),
                             ("operator", False), ("started", True)], rows, width=con.width,
                            drop_first=("operator", "started", "target", "mode")))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from opsbook.records import open_archive

    archive = open_archive(args.outputs, create=False)  # a mistyped --outputs is exit 2, not "OK: 0 record(s)"
    report = archive.verify(expect_head=args.expect_head, deep=args.deep)
    con = _console()
    for info in getattr(report, "info", []) or []:
        con.print(f"note: {info}")
    for prob in report.problems:
        con.print(f"[red]{prob.kind}[/red] {prob.record or ''}: {prob.detail}", markup=True, highlight=False)
    verdict = "[green]OK[/green]" if report.ok else f"[red]FAILED[/red] ({len(report.problems)} problem(s))"
    con.print(f"{verdict}: {report.records} record(s) in {archive.root}")
    con.print(f"chain head: {report.head or '(empty ledger)'}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_upload(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from opsbook.errors import OpsbookError
    from opsbook.records import open_archive
    from opsbook.records.s3 import PENDING_NAME, S3Archive, default_fallback_dir

    folders = [Path(f) for f in args.folders]
    if not folders:
        base = default_fallback_dir()
        folders = sorted(p.parent for p in base.glob(f"*/{PENDING_NAME}")) if base.is_dir() else []
        if not folders:
            _console().print(f"nothing to upload: no kept records in {base}")
            return EXIT_OK
    failed = 0
    for folder in folders:
        try:
            pending = json.loads((folder / PENDING_NAME).read_text(encoding="utf-8"))
            archive = open_archive(str(pending["archive"]))
            if not isinstance(archive, S3Archive):
                raise ValueError(f"it names {pending['archive']}, not an s3:// archive")
            ref = archive.upload_pending(folder)
        except (OSError, ValueError, KeyError) as exc:
            failed += 1
            print(f"opsbook: {folder}: not a kept record ({exc})", file=sys.stderr)
        except OpsbookError as exc:
            failed += 1
            print(f"opsbook: {folder}: {exc}", file=sys.stderr)
        else:
            _console().print(f"uploaded {folder} -> {ref.path}")
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_incident(args: argparse.Namespace) -> int:
    import json

    from opsbook.errors import UsageError
    from opsbook.records import bundle as incident_bundle
    from opsbook.records import open_archive
    from opsbook.text import safe_text

    archive = open_archive(args.outputs, create=False)
    runs = incident_bundle.incident_runs(archive, args.incident_id)
    if not runs:  # say what is missing (a typo in the id, or the wrong archive), as `evidence` does
        raise UsageError(f"no archived run has incident_id {args.incident_id!r} in {archive.root}")
    if args.json:
        for r in runs:
            m = r.manifest
            print(json.dumps({"run_id": r.run_id, "runbook_id": r.runbook_id, "started": r.started,
                              "ended": m.get("ended"), "mode": m.get("mode"), "status": m.get("status"),
                              "operator": m.get("operator"), "seq": r.entry.seq,
                              "phases": (m.get("parameters") or {}).get("phases")}, sort_keys=True))
        return EXIT_OK

    rows = []
    for r in runs:
        m = r.manifest
        phases = ", ".join(str(p) for p in (m.get("parameters") or {}).get("phases") or [])
        rows.append([safe_text(v, oneline=True) for v in (r.started, r.run_id, r.runbook_id, m.get("mode") or "",
                                                           m.get("status") or "", m.get("operator") or "", phases)])
    con = _console()
    con.print(_fitted_table(f"Incident {args.incident_id}: {len(runs)} run(s) in {archive.root}",
                            [("started", True), ("run id", True), ("runbook", True), ("mode", True), ("status", True),
                             ("operator", False), ("phases", False)], rows, width=con.width,
                            drop_first=("operator", "phases", "started", "mode")))
    return EXIT_OK


def _cmd_evidence(args: argparse.Namespace) -> int:
    from opsbook.errors import UsageError
    from opsbook.records import bundle as incident_bundle

    con = _console()
    if args.verify:
        if args.incident_id or args.out:
            raise UsageError("evidence --verify FILE takes no INCIDENT_ID nor --out")
        report = incident_bundle.verify_bundle(args.verify)
        for prob in report.problems:
            con.print(f"[red]problem[/red] {prob}", markup=True, highlight=False)
        verdict = "[green]OK[/green]" if report.ok else f"[red]FAILED[/red] ({len(report.problems)} problem(s))"
        con.print(f"{verdict}: incident {report.incident_id or '?'}, {len(report.runs)} run(s), "
                  f"{report.files} file(s) in {args.verify}")
        con.print(f"ledger head: {report.head or '-'} (compare with the chain head kept at the time)")
        return EXIT_OK if report.ok else EXIT_FAILED
    if not args.incident_id or not args.out:
        raise UsageError("evidence INCIDENT_ID --out FILE.tar.gz, or evidence --verify FILE.tar.gz")
    from opsbook.records import open_archive

    info = incident_bundle.export(open_archive(args.outputs, create=False), args.incident_id, args.out)
    con.print(f"bundle of incident {info.incident_id}: {len(info.runs)} run(s), {info.files} file(s) -> {info.path}")
    con.print(f"ledger head of the bundle: {info.head}")
    return EXIT_OK



def _cmd_site(args: argparse.Namespace) -> int:
    from opsbook.records import open_archive, site

    archive = open_archive(args.outputs, create=False)  # a read verb never creates an archive
    err = _console(stderr=True)
    info = site.build(archive, args.out, verify=not args.no_verify,
                      progress=lambda msg: err.print(msg, markup=False, highlight=False))
    verdict = ("not verified" if info.verified is None else "verify OK" if info.verified
               else f"verify FAILED: {info.problems} problem(s), shown on the pages")
    _console().print(f"site of {info.runs} run(s), {info.incidents} incident(s), {verdict} -> "
                     f"{info.path / 'index.html'} ({info.seconds:.1f} s)", markup=False, highlight=False, soft_wrap=True)
    return EXIT_FAILED if info.verified is False else EXIT_OK


def _cmd_lab(args: argparse.Namespace) -> int:
    from opsbook import lab

    return lab.serve(port=args.port or None, notebooks=args.notebooks, outputs=args.outputs,
                     open_browser=not args.no_browser, approve=args.approve)

