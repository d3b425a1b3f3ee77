"""The ``opsbook`` command line: parse, delegate, print. No logic lives here.

Imports are deferred to the verb that needs them, so that ``opsbook --help`` stays fast (no
papermill, no mlflow, no kubernetes).

Exit codes: 0 success, 1 the runbook failed (or verify found a problem), 2 invalid input,
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
examples:
  opsbook list
  opsbook show initial-kubernetes-deployment
  opsbook run initial-kubernetes-deployment -p namespace ml-platform          # plan mode (default)
  opsbook run initial-kubernetes-deployment --mode apply --approve RUN_ID    # apply an approved plan
  opsbook history --runbook deploy-new-model --status failed --since 2026-11-01
  opsbook verify --expect-head HASH

environment: OPSBOOK_OUTPUTS (archive folder), OPSBOOK_NOTEBOOKS (runbook folder),
OPSBOOK_TARGETS (personal targets file), OPSBOOK_OPERATOR (who runs).
exit codes: 0 ok, 1 runbook failed / verify found a problem, 2 invalid input, 130 interrupted."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opsbook", description="Executable notebook runbooks: run, record and verify operational runbooks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def common(sp: argparse.ArgumentParser, *, outputs: bool = True, notebooks: bool = True) -> None:
        if outputs:
            sp.add_argument("--outputs", metavar="DIR", help="the archive (default: $OPSBOOK_OUTPUTS or "
                            "outputs/ next to notebooks/)")
        if notebooks:
            sp.add_argument("--notebooks", metavar="DIR", help="the runbook folder (default: $OPSBOOK_NOTEBOOKS "
                            "or the nearest notebooks/)")

    sp = sub.add_parser("list", help="list the runbooks", description="List the runbooks in the catalogue.")
    common(sp, outputs=False)

    sp = sub.add_parser("show", help="show a runbook's objective and parameters",
                        description="Show a runbook: objective, risk, parameters with types, defaults and help.")
    sp.add_argument("runbook", metavar="ID")
    common(sp, outputs=False)

    sp = sub.add_parser(
        "run", help="run a runbook headlessly and archive its record",
        description="Validate the parameters, execute the runbook with papermill in a private staging folder, "
                    "redact secrets, and archive the executed notebook, its HTML and manifest.",
        epilog="exit codes: 0 succeeded, 1 failed, 2 invalid input, 130 interrupted (the record is kept)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("runbook", metavar="ID")
    sp.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set a parameter (repeatable; applied after -f files)")
    sp.add_argument("-f", "--parameters-file", action="append", default=[], metavar="FILE",
                    help="YAML file of parameters (repeatable, later files win)")
    sp.add_argument("--mode", choices=["plan", "apply"], help="plan (default: record what would change) or apply")
    sp.add_argument("--target", metavar="NAME", help="target environment (see `opsbook targets`; default local)")
    sp.add_argument("--approve", metavar="PLAN_RUN_ID", help="the plan run this apply executes (high-risk "
                    "runbooks and targets that require approval)")
    sp.add_argument("--cell-timeout", type=int, metavar="SECONDS", help="fail a cell that runs longer")
    sp.add_argument("--quiet", action="store_true", help="no per-cell progress")
    common(sp)

    sp = sub.add_parser("history", help="list archived runs", description="List archived runs from the ledger.")
    sp.add_argument("--runbook", metavar="ID")
    sp.add_argument("--status", choices=["succeeded", "failed", "aborted"])
    sp.add_argument("--since", metavar="DATE", help="YYYY-MM-DD or an ISO 8601 time (UTC)")
    sp.add_argument("--limit", type=int, default=50, metavar="N", help="newest N runs (default 50; 0 = all)")
    sp.add_argument("--json", action="store_true", help="print JSON lines")
    common(sp, notebooks=False)

    sp = sub.add_parser(
        "verify", help="verify every record and the ledger chain",
        description="Recompute every file hash and the whole ledger chain; exit 1 naming each record that was "
                    "modified, removed, reordered or added outside the ledger. Prints the chain head: keep it "
                    "somewhere the runner cannot rewrite, and pass it back with --expect-head.")
    sp.add_argument("--expect-head", metavar="HASH", help="a chain head kept earlier; detects a truncated ledger")
    common(sp, notebooks=False)

    sp = sub.add_parser("incident", help="list the runs of one incident in time order",
                        description="List every archived run whose parameter incident_id is INCIDENT_ID, oldest first.")
    sp.add_argument("incident_id", metavar="INCIDENT_ID")
    sp.add_argument("--json", action="store_true", help="print JSON lines")
    common(sp, notebooks=False)

    sp = sub.add_parser(
        "evidence", help="export or verify an incident's evidence bundle",
        description="Export the records of an incident, their manifests, the ledger lines that cover them, a "
                    "SHA256SUMS and a post-mortem draft as FILE.tar.gz; or verify such a bundle without the archive.")
    sp.add_argument("incident_id", metavar="INCIDENT_ID", nargs="?")
    sp.add_argument("--out", metavar="FILE.tar.gz", help="where to write the bundle")
    sp.add_argument("--verify", metavar="FILE.tar.gz", help="verify a bundle (exit 1 naming each problem)")
    common(sp, notebooks=False)

    sp = sub.add_parser(
        "lab", help="open the runbooks in JupyterLab (interactive walkthroughs)",
        description="Start JupyterLab on 127.0.0.1 in this environment, with the runbook folder open and a kernel "
                    "that has opsbook; print the URL (with its token). A run's summary cell archives the run like "
                    "`opsbook run` does. Ctrl-C stops the server and its kernels.")
    sp.add_argument("--port", type=int, default=8888, metavar="N", help="port on 127.0.0.1 (default 8888; 0 = any free)")
    sp.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    sp.add_argument("--approve", metavar="PLAN_RUN_ID", help="the plan run that an apply-mode walkthrough of a "
                    "high-risk runbook executes (checked by the notebook's setup cell)")
    common(sp)

    sp = sub.add_parser("targets", help="list target environments",
                        description="List the targets (built-in, targets.yaml, ~/.config/opsbook/targets.yaml).")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"opsbook {version('opsbook')}")
        return EXIT_OK
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    from opsbook.errors import OpsbookError, ParameterError, UsageError

    handler = globals()[f"_cmd_{args.verb}"]
    try:
        return int(handler(args))
    except ParameterError as exc:
        print(f"opsbook: {len(exc.problems)} invalid parameter(s); nothing was run:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.name}: got {problem.value}; {problem.expected}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OpsbookError as exc:
        print(f"opsbook: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("opsbook: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        # piped into a file or a CI log: do not squeeze tables into 80 columns
        con = Console(stderr=stderr, highlight=False, width=200)
    return con


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from opsbook import catalog
    from opsbook.errors import RunbookError

    d = catalog.notebooks_dir(args.notebooks)
    books = catalog.all_runbooks(d)
    table = Table(title=f"Runbooks in {d}")
    for col in ("id", "title", "version", "risk", "parameters"):
        table.add_column(col)
    broken = 0
    for rb in books:
        if isinstance(rb, RunbookError):
            broken += 1
            table.add_row("[red]invalid[/red]", escape(str(rb)), "", "", "")
        else:
            risk = "[bold red]high[/bold red]" if rb.high_risk else "low"
            table.add_row(rb.id, escape(rb.title), escape(rb.version), risk, str(len(rb.spec.params)))
    _console().print(table)
    return EXIT_FAILED if broken else EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from opsbook import catalog

    rb = catalog.get(args.runbook, catalog.notebooks_dir(args.notebooks))
    con = _console()
    con.print(f"[bold]{escape(rb.title)}[/bold]  ({rb.id} v{escape(rb.version)}, risk {rb.risk})")
    con.print(f"Objective: {escape(rb.objective)}")
    if rb.high_risk:
        con.print("Apply needs --approve PLAN_RUN_ID (high risk).")
    table = Table(title="Parameters")
    for col in ("name", "type", "default", "expects", "help"):
        table.add_column(col, overflow="fold")
    for p in rb.spec:
        table.add_row(*(escape(x) for x in (p.name, p.type, repr(p.default), p.describe(), p.help)))
    con.print(table)
    return EXIT_OK


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from opsbook.targets import load_all

    table = Table(title="Targets")
    for col in ("name", "cluster", "namespace", "mlflow", "production", "approval", "source"):
        table.add_column(col, overflow="fold")
    for t in load_all().values():
        table.add_row(t.name, t.kube_context or ("(kubeconfig)" if t.kubeconfig else "none: plan only"),
                      t.namespace, t.mlflow_uri or "embedded", "YES" if t.production else "no",
                      "required" if t.requires_approval else "-", t.source)
    _console().print(table)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from opsbook import catalog, runner
    from opsbook.archive import open_archive
    from opsbook.parameters import load_params_file

    given: dict[str, Any] = {}
    for f in args.parameters_file:
        given.update(load_params_file(f))
    text_values: set[str] = set()
    for name, value in args.parameter:
        given[name] = value
        text_values.add(name)
    archive = open_archive(args.outputs)
    nbdir = catalog.notebooks_dir(args.notebooks)
    prep = runner.prepare(args.runbook, given, text_values=text_values, mode=args.mode, target=args.target,
                          approve=args.approve, archive=archive, notebooks=nbdir)
    err = _console(stderr=True)
    mode = prep.params.get("mode", "plan")
    err.print(f"[bold]{prep.runbook.id}[/bold] v{prep.runbook.version}: mode [bold]{mode}[/bold], "
              f"target {prep.target.describe()}" + (f", approved plan {args.approve}" if args.approve else ""))
    progress_cb, stop = _progress(err, quiet=args.quiet)
    try:
        outcome = runner.execute(prep, archive=archive, progress=progress_cb, cell_timeout=args.cell_timeout)
    finally:
        stop()
    colour = {"succeeded": "green", "failed": "red", "aborted": "yellow"}[outcome.status]
    out = _console()
    out.print(f"[{colour}]{outcome.status}[/{colour}] run {outcome.run_id}")
    if outcome.failed_cell:
        fc = outcome.failed_cell
        out.print(f"  failing cell: #{fc.get('index')} of the runbook (code cell {fc.get('code_cell')})")
        if fc.get("source"):
            out.print("  " + fc["source"].splitlines()[0][:100])
    if outcome.error:
        out.print(f"  error: {outcome.error}")
    out.print(f"  record: {outcome.record_dir}")
    return outcome.exit_code


def _progress(con: Any, *, quiet: bool) -> tuple[Any, Any]:
    """Per-cell progress: a live bar on a terminal, one line per cell otherwise (CI logs)."""
    if quiet:
        return None, lambda: None
    if not con.is_terminal:
        def log_line(event: str, index: int, total: int, label: str) -> None:
            if event == "start" and not label.startswith("(markdown)"):
                con.print(f"[{index + 1}/{total}] {label}", markup=False)
        return log_line, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=con, transient=False)
    task = prog.add_task("starting kernel", total=None)
    prog.start()

    def cb(event: str, index: int, total: int, label: str) -> None:
        if event == "start":
            prog.update(task, total=total, completed=index, description=f"cell {index + 1}: {label[:50]}")
        else:
            prog.update(task, completed=index + 1)

    return cb, prog.stop


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

    from opsbook import catalog
    from opsbook.archive import open_archive

    archive = open_archive(args.outputs)
    entries = archive.history(runbook=args.runbook, status=args.status, since=_parse_since(args.since),
                              limit=args.limit or None)
    if args.json:
        for e in entries:
            print(json.dumps(asdict(e), sort_keys=True))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"Runs in {archive.root} ({len(entries)} shown)")
    for col in ("run id", "runbook", "status", "mode", "target", "operator", "started"):
        table.add_column(col, no_wrap=col in ("run id", "started", "status"))
    colours = {"succeeded": "green", "failed": "red", "aborted": "yellow"}
    for e in entries:
        d = asdict(e)
        c = colours.get(d.get("status") or "", "white")
        table.add_row(d["run_id"], d["runbook_id"], f"[{c}]{d.get('status')}[/{c}]", str(d.get("mode") or ""),
                      str(d.get("target") or ""), str(d.get("operator") or ""), str(d.get("started") or ""))
    _console().print(table)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from opsbook import catalog
    from opsbook.archive import open_archive

    archive = open_archive(args.outputs)
    report = archive.verify(expect_head=args.expect_head)
    con = _console()
    for info in getattr(report, "info", []) or []:
        con.print(f"note: {info}")
    for prob in report.problems:
        con.print(f"[red]{prob.kind}[/red] {prob.record or ''}: {prob.detail}", markup=True, highlight=False)
    verdict = "[green]OK[/green]" if report.ok else f"[red]FAILED[/red] ({len(report.problems)} problem(s))"
    con.print(f"{verdict}: {report.records} record(s) in {archive.root}")
    con.print(f"chain head: {report.head or '(empty ledger)'}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_incident(args: argparse.Namespace) -> int:
    import json

    from opsbook import catalog, incident_bundle
    from opsbook.archive import open_archive

    archive = open_archive(args.outputs)
    runs = incident_bundle.incident_runs(archive, args.incident_id)
    if args.json:
        for r in runs:
            m = r.manifest
            print(json.dumps({"run_id": r.run_id, "runbook_id": r.runbook_id, "started": r.started,
                              "ended": m.get("ended"), "mode": m.get("mode"), "status": m.get("status"),
                              "operator": m.get("operator"), "seq": r.entry.seq,
                              "phases": (m.get("parameters") or {}).get("phases")}, sort_keys=True))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"Incident {args.incident_id}: {len(runs)} run(s) in {archive.root}")
    for col in ("started", "run id", "runbook", "mode", "status", "operator", "phases"):
        table.add_column(col, no_wrap=col in ("run id", "started"))
    for r in runs:
        m = r.manifest
        table.add_row(r.started, r.run_id, r.runbook_id, str(m.get("mode") or ""), str(m.get("status") or ""),
                      str(m.get("operator") or ""), ", ".join((m.get("parameters") or {}).get("phases") or []))
    _console().print(table)
    return EXIT_OK if runs else EXIT_FAILED


def _cmd_evidence(args: argparse.Namespace) -> int:
    from opsbook import incident_bundle
    from opsbook.errors import UsageError

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
    from opsbook import catalog
    from opsbook.archive import open_archive

    info = incident_bundle.export(open_archive(args.outputs), args.incident_id, args.out)
    con.print(f"bundle of incident {info.incident_id}: {len(info.runs)} run(s), {info.files} file(s) -> {info.path}")
    con.print(f"ledger head of the bundle: {info.head}")
    return EXIT_OK



def _cmd_lab(args: argparse.Namespace) -> int:
    from opsbook import lab

    return lab.serve(port=args.port or None, notebooks=args.notebooks, outputs=args.outputs,
                     open_browser=not args.no_browser, approve=args.approve)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
