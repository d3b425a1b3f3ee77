"""The ``opsbook`` command line: parse, delegate, print. No logic lives here.

Imports are deferred to the verb that needs them, so that ``opsbook --help`` stays fast (no
papermill, no mlflow, no kubernetes).

Exit codes: 0 success, 1 the runbook failed (or verify found a problem), 2 invalid input,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
examples:
  opsbook list
  opsbook show initial-kubernetes-deployment
  opsbook run initial-kubernetes-deployment -p namespace ml-platform   # plan
  opsbook run initial-kubernetes-deployment --mode apply --approve RUN_ID
  opsbook history --runbook deploy-new-model --status failed --since 2026-11-01
  opsbook verify --expect-head HASH
  opsbook run deploy-new-model --outputs s3://ops-records/prod --on-cluster \\
      --target staging
  opsbook run environment-check --ci --notify slack:env:SLACK_WEBHOOK

environment:
  OPSBOOK_OUTPUTS       archive folder or s3://BUCKET/PREFIX
  OPSBOOK_NOTEBOOKS     runbook folder (outside the catalogue: high-risk)
  OPSBOOK_TARGETS       personal targets file
  OPSBOOK_OPERATOR      who runs (default: the login name)
  OPSBOOK_SIGNING_KEY   Ed25519 key that signs ledger entries
  OPSBOOK_CI, OPSBOOK_NOTIFY, OPSBOOK_IMAGE, OPSBOOK_S3_RETENTION,
  AWS_ENDPOINT_URL_S3 and boto3's AWS_* variables
exit codes: 0 ok, 1 runbook failed / verify found a problem, 2 invalid input,
130 interrupted."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opsbook", description="Executable notebook runbooks: run, record and verify operational runbooks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def common(sp: argparse.ArgumentParser, *, outputs: bool = True, notebooks: bool = True) -> None:
        if outputs:
            sp.add_argument("--outputs", metavar="DIR|s3://BUCKET/PREFIX",
                            help="the archive: a folder, or an S3 bucket and prefix (endpoint from "
                            "$AWS_ENDPOINT_URL_S3, credentials from the AWS_* variables or boto3's usual chain) "
                            "(default: $OPSBOOK_OUTPUTS or outputs/ next to notebooks/)")
        if notebooks:
            sp.add_argument("--notebooks", metavar="DIR", help="the runbook folder (default: $OPSBOOK_NOTEBOOKS "
                            "or the nearest notebooks/)")

    sp = sub.add_parser("list", help="list the runbooks", description="List the runbooks in the catalogue.")
    common(sp, outputs=False)

    sp = sub.add_parser("show", help="show a runbook's objective and parameters",
                        description="Show a runbook: objective, risk, parameters with types, defaults and help.")
    sp.add_argument("runbook", metavar="ID")
    sp.add_argument("--markdown", action="store_true",
                    help="print the parameters as a Markdown table (as in docs/runbooks.md)")
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
    sp.add_argument("--cell-timeout", type=_seconds_arg, metavar="SECONDS",
                    help="fail a cell that runs longer (default: the target's cell_timeout, else the runbook's "
                    "opsbook.timeouts.cell, else 1800)")
    sp.add_argument("--run-timeout", type=_seconds_arg, metavar="SECONDS",
                    help="stop a run that takes longer, recorded as failed (default: the target's run_timeout, "
                    "else the runbook's opsbook.timeouts.run, else 14400)")
    sp.add_argument("--quiet", action="store_true", help="no per-cell progress")
    sp.add_argument("--run-id", type=_run_id_arg, metavar="RUN_ID",
                    help="the run id (default: a new one; --on-cluster passes its own to the Job)")
    oc = sp.add_argument_group(
        "on-cluster runs", "--on-cluster runs the same `opsbook run ID ...` as a Kubernetes Job in the target's\n"
        "cluster, with a ServiceAccount that has only the runbook's RBAC (notebook metadata opsbook.rbac), the\n"
        "parameters in a ConfigMap (secrets as references only) and the record written to an S3 archive; it\n"
        "follows the pod's log and exits with the Job's status. Ctrl-C asks whether to leave the Job running\n"
        "(without a terminal: it is left running and the kubectl commands to follow or delete it are printed).")
    oc.add_argument("--on-cluster", action="store_true", help="run the runbook as a Kubernetes Job (needs --outputs "
                    "s3://BUCKET/PREFIX or OPSBOOK_OUTPUTS=s3://..., and a target with a cluster)")
    oc.add_argument("--dry-run", action="store_true", help="with --on-cluster: print the rendered Job, "
                    "ServiceAccount, Role/ClusterRole, bindings and ConfigMap, have the API server dry-run them "
                    "(dryRun=All) and create nothing. This is how the on-cluster plan is shown")
    oc.add_argument("--image", metavar="IMG", help="the opsbook image (default: $OPSBOOK_IMAGE, else "
                    "ghcr.io/opsbook/opsbook:VERSION)")
    oc.add_argument("--namespace", metavar="NS", help="namespace of the Job and its ServiceAccount (default: the "
                    "target's namespace); the runbook's own `namespace` parameter is unchanged")
    oc.add_argument("--job-timeout", type=int, default=3600, metavar="SECONDS",
                    help="the Job's activeDeadlineSeconds; the CLI gives up 10 s later and deletes it (default 3600)")
    oc.add_argument("--s3-secret", metavar="NAME", help="Secret with keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                    "(and optional AWS_ENDPOINT_URL_S3) for the archive, mapped with secretKeyRef (default: the "
                    "pod's own credentials, e.g. workload identity)")
    oc.add_argument("--env-secret", action="append", default=[], metavar="NAME",
                    help="a Secret whose keys become the container's environment (envFrom), for env:NAME "
                    "parameters (repeatable)")
    oc.add_argument("--pod-annotation", action="append", default=[], metavar="KEY=VALUE",
                    help="annotate the Job's pod (repeatable), e.g. sidecar.istio.io/inject=false")
    sp.add_argument("--retention", metavar="MODE:DAYS", default=None,
                    help="S3 archive only: Object Lock retention for the record's objects, GOVERNANCE or "
                    "COMPLIANCE, e.g. GOVERNANCE:365 (default: $OPSBOOK_S3_RETENTION); refused before the run "
                    "if the bucket has no Object Lock")
    sp.add_argument("--ci", nargs="?", const="auto", choices=["auto", "github", "gitlab", "plain"],
                    metavar="FORMAT", help="CI log format: github (groups, ::error annotations, job summary), gitlab "
                    "(collapsible sections) or plain; bare --ci detects it from GITHUB_ACTIONS / GITLAB_CI "
                    "(default: $OPSBOOK_CI)")
    sp.add_argument("--junit", metavar="FILE", help="also write the steps and checks as a JUnit XML report")
    sp.add_argument("--output-json", metavar="FILE", help="also write run_id, status, exit_code and record as "
                    "JSON, for pipelines (e.g. the plan run id an apply job passes to --approve)")
    sp.add_argument("--notify", action="append", metavar="[FORMAT:]DEST",
                    help="post a webhook when the run ends (repeatable; default: $OPSBOOK_NOTIFY, space-separated). "
                    "FORMAT slack or generic (default); DEST env:NAME, file:PATH or an https:// URL (a Slack URL "
                    "only as env:/file:). Retried, bounded to 20 s; a failure is a warning, never the exit code")
    common(sp)

    sp = sub.add_parser("history", help="list archived runs", description="List archived runs from the ledger.")
    sp.add_argument("--runbook", metavar="ID")
    sp.add_argument("--status", choices=["succeeded", "failed", "aborted", "started"],
                    help="started: applies that began and never finished (killed before their record)")
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
    sp.add_argument("--deep", action="store_true", help="S3 archive: download and sha256 every record file (by "
                    "default files are checked by the ETag and size the store returned on upload; on disk "
                    "every file is always re-hashed)")
    common(sp, notebooks=False)

    sp = sub.add_parser(
        "upload", help="upload records that an S3 archive could not take (kept locally)",
        description="A run whose record could not be written to its S3 archive (store down, credentials refused) "
                    "keeps the record in a local folder ($OPSBOOK_S3_FALLBACK, else "
                    "~/.local/state/opsbook/unuploaded/) and says which. This uploads such records to the archive "
                    "they were meant for, resuming where the first attempt stopped, and removes each folder once "
                    "its record is in the ledger.")
    sp.add_argument("folders", nargs="*", metavar="FOLDER",
                    help="kept record folders (default: every one in the fallback folder)")

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
        "site", help="write a static HTML site over the archive",
        description="Write a static HTML site of the archive into DIR: an index of every run with filters, a page "
                    "per run (status, headline, steps, plan and apply, verify status, the executed notebook, "
                    "evidence, canary plots) and a timeline per incident. No server needed: open DIR/index.html. "
                    "Exit 1 if verify finds a problem (the pages show it).")
    sp.add_argument("--out", metavar="DIR", required=True,
                    help="where to write it (a new or empty folder, or a site written before: replaced)")
    sp.add_argument("--no-verify", action="store_true", help="do not verify the archive (the pages say so)")
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


_CI_FORMATS = ("auto", "github", "gitlab", "plain")


def _bare_ci(argv: list[str]) -> list[str]:
    """``--ci`` takes an optional FORMAT; a bare ``--ci`` followed by the runbook ID (``run --ci ID``)
    must not swallow the ID, so a ``--ci`` not followed by a format means ``--ci=auto``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ci" and (i + 1 == len(out) or out[i + 1] not in _CI_FORMATS):
            out[i] = "--ci=auto"
    return out


def _skip_unused_imports() -> None:
    """nbformat imports jsonschema, which imports ``rfc3987_syntax`` when it is installed (JupyterLab's
    jupyter-events pulls it in) and that compiles a lark grammar at import: 1.4 s of CPU in every
    ``opsbook`` command that reads or runs a notebook (5 s of wall time on a busy 2-CPU machine), for
    jsonschema's optional "iri" format checks, which no notebook schema uses. In this process only
    (never in a kernel or a Jupyter server), jsonschema is told it is not installed."""
    if "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    _skip_unused_imports()
    parser = _parser()
    args = parser.parse_args(_bare_ci(sys.argv[1:] if argv is None else list(argv)))
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


def _fitted_table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]], *, width: int,
                  drop_first: tuple[str, ...] = ()) -> Any:
    """A table that never cuts what people copy: a column marked whole (ids, statuses, times) is as
    wide as its longest value and never wraps; the others wrap. When even that does not fit in
    ``width``, the columns in ``drop_first`` are left out, in that order (the title says which)."""
    from rich.table import Table
    from rich.text import Text

    def cell_len(markup: str) -> int:
        return Text.from_markup(markup).cell_len

    names = [c for c, _ in columns]
    whole = {c for c, w in columns if w}
    need = {c: (max([cell_len(c)] + [cell_len(r[i]) for r in rows]) if c in whole else min(
        10, max([len(c)] + [cell_len(r[i]) for r in rows]))) for i, c in enumerate(names)}
    dropped: list[str] = []
    for c in drop_first:
        if sum(need[n] for n in names if n not in dropped) + 3 * (len(names) - len(dropped)) + 1 <= width:
            break
        dropped.append(c)
    keep = [i for i, c in enumerate(names) if c not in dropped]
    table = Table(title=title + (f" (not shown at this width: {', '.join(dropped)})" if dropped else ""))
    for i in keep:
        c = names[i]
        if c in whole:
            table.add_column(c, no_wrap=True, min_width=need[c])
        else:
            table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


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
    return EXIT_OK


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
    from opsbook.records.disk import open_archive

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
        progress_cb, stop = ci.progress, ci.end_progress
    else:
        from opsbook.text import safe_text

        err.print(f"[bold]{prep.runbook.id}[/bold] v{safe_text(prep.runbook.version, oneline=True)}: mode "
                  f"[bold]{safe_text(mode)}[/bold], target "
                  f"{safe_text(prep.target.describe(namespace=prep.params.get('namespace')), oneline=True)}"
                  + (f", approved plan {safe_text(args.approve)}" if args.approve else ""))
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


def _cmd_run_on_cluster(args: argparse.Namespace) -> int:
    """``run ID --on-cluster``: everything is validated here first (parameters, approval, RBAC, S3
    archive), then the same command runs as a Kubernetes Job; the logic is in ``opsbook.oncluster``."""
    from opsbook import catalog, oncluster, runner
    from opsbook.clients.kube import Kube
    from opsbook.errors import UsageError
    from opsbook.ids import new_run_id
    from opsbook.text import safe_text

    for flag in ("junit", "output_json", "notify", "run_timeout"):  # a Job's limit is --job-timeout
        if getattr(args, flag, None):
            raise UsageError(f"--{flag.replace('_', '-')} is not supported with --on-cluster (the run happens in "
                             "the Job's pod)")
    if args.dry_run and not args.on_cluster:
        raise UsageError("--dry-run goes with --on-cluster (a local plan is --mode plan)")
    outputs = oncluster.require_s3_outputs(args.outputs)
    annotations = oncluster.parse_annotations(args.pod_annotation)
    given, text_values = _given_parameters(args)
    archive = None
    if args.approve:  # the approved plan is checked here, in the same S3 archive, before anything is created
        from opsbook.records.disk import open_archive

        archive = open_archive(outputs)
    prep = runner.prepare(args.runbook, given, text_values=text_values, mode=args.mode, target=args.target,
                          approve=args.approve, archive=archive, notebooks=catalog.notebooks_dir(args.notebooks),
                          check_paths=False)  # [path...] parameters name files in the pod, not here
    tgt = prep.target
    if not tgt.has_cluster:
        raise UsageError(f"--on-cluster needs a target with a cluster; {tgt.name} has none (see `opsbook targets`, "
                         "choose one with --target)")
    req = oncluster.JobRequest(
        runbook=prep.runbook, params=prep.params, target=tgt, run_id=args.run_id or new_run_id(),
        namespace=args.namespace or tgt.namespace, image=args.image or oncluster.default_image(), outputs=outputs,
        s3_secret=args.s3_secret, env_secrets=tuple(args.env_secret), approve=args.approve,
        cell_timeout=args.cell_timeout, job_timeout=args.job_timeout, pod_annotations=annotations)
    objs = oncluster.render(req)
    err, out = _console(stderr=True), _console()
    kube = Kube(kubeconfig=tgt.kubeconfig, context=tgt.kube_context)
    try:
        oncluster.preflight(kube, req, objs)
        if args.dry_run:
            import yaml
            from rich.table import Table

            print(f"# opsbook run {req.runbook.id} --on-cluster --dry-run: {len(objs)} object(s) for run "
                  f"{req.run_id}, mode {req.mode}, target {tgt.name}")
            print(yaml.safe_dump_all(objs, sort_keys=False), end="", flush=True)
            table = Table(title=f"RBAC of ServiceAccount {req.namespace}/{req.name}")
            rows = oncluster.summary_rows(objs)
            for col in ("kind", "namespace", "apiGroups", "resources", "verbs", "resourceNames"):
                table.add_column(col, overflow="fold")
            for r in rows:
                table.add_row(*(r[c] for c in ("kind", "namespace", "apiGroups", "resources", "verbs",
                                                "resourceNames")))
            err.print(table if rows else "RBAC: none (the runbook makes no Kubernetes API call)")
            accepted = oncluster.server_dry_run(kube, objs)
            err.print(f"server-side dry run (dryRun=All): {len(accepted)} object(s) accepted; nothing was created")
            return EXIT_OK
        oncluster.server_dry_run(kube, objs)  # refuse a bad object before any is created
        oncluster.launch(kube, objs)
        err.print(f"[bold]{req.runbook.id}[/bold] v{safe_text(req.runbook.version, oneline=True)}: mode [bold]{req.mode}[/bold], target "
                  f"{tgt.describe()}: Job {req.namespace}/{req.name} (image {req.image}), run {req.run_id}")

        def status(st: Any) -> None:
            if not st.done:
                err.print(f"job: {st.detail or st.state}", markup=False)

        try:
            st = oncluster.follow(kube, req, on_line=lambda line: print(line, flush=True), on_status=status)
        except KeyboardInterrupt:
            return _on_cluster_interrupted(kube, req, objs, err)
        problems = oncluster.stop(kube, req, objs) if st.reason == "Timeout" else oncluster.revoke(kube, objs)
        for p in problems:
            print(f"opsbook: warning: could not delete {p}", file=sys.stderr, flush=True)
        if st.state == "succeeded":
            out.print(f"[green]succeeded[/green] run {req.run_id} (Job {req.namespace}/{req.name})")
        else:
            out.print(f"[red]failed[/red] run {req.run_id} (Job {req.namespace}/{req.name}): {st.describe()}",
                      markup=True, highlight=False)
            if st.reason == "Timeout":
                out.print("  the Job was deleted (its pod is stopped; the run archives itself as aborted)")
        out.print(f"  record: run {req.run_id} in {outputs} (`opsbook history --outputs {outputs}`)")
        return EXIT_OK if st.state == "succeeded" else EXIT_FAILED
    finally:
        kube.close()


def _on_cluster_interrupted(kube: Any, req: Any, objs: list[dict[str, Any]], err: Any) -> int:
    """Ctrl-C while following: on a terminal ask whether to leave the Job running (default yes);
    otherwise leave it and print the kubectl commands to follow or delete it."""
    from opsbook import oncluster

    leave = True
    if sys.stdin.isatty() and err.is_terminal:
        from rich.prompt import Confirm

        try:
            leave = Confirm.ask(f"Leave Job {req.namespace}/{req.name} running?", default=True, console=err)
        except (KeyboardInterrupt, EOFError):
            leave = True
    if leave:
        err.print(f"left running: Job {req.namespace}/{req.name} (run {req.run_id}); it and its RBAC stay until "
                  "it finishes and you delete them:", markup=False)
        for line in oncluster.kubectl_hints(req, objs):
            err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    else:
        for p in oncluster.stop(kube, req, objs):
            print(f"opsbook: warning: could not delete {p}", file=sys.stderr, flush=True)
        err.print(f"deleted Job {req.namespace}/{req.name} and its RBAC (the pod is stopped: the run archives "
                  "itself as aborted)", markup=False)
    return EXIT_INTERRUPTED


def _seconds_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of seconds, at least 1")
    return value


def _run_id_arg(text: str) -> str:
    from opsbook.ids import RUN_ID

    if not RUN_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (YYYYMMDDTHHMMSSZ-xxxxxx)")
    return text


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

    from opsbook.records.disk import open_archive
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
    from opsbook.records.disk import open_archive

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
    from opsbook.records.disk import open_archive
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
    from opsbook.records.disk import open_archive
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
    from opsbook.records.disk import open_archive

    info = incident_bundle.export(open_archive(args.outputs, create=False), args.incident_id, args.out)
    con.print(f"bundle of incident {info.incident_id}: {len(info.runs)} run(s), {info.files} file(s) -> {info.path}")
    con.print(f"ledger head of the bundle: {info.head}")
    return EXIT_OK



def _cmd_site(args: argparse.Namespace) -> int:
    from opsbook.records import site
    from opsbook.records.disk import open_archive

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
