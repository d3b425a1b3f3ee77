"""The command line's grammar: verbs, options, help texts (imported by ``--help``: keep it light)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  opsbook list
  opsbook show initial-kubernetes-deployment
  opsbook run initial-kubernetes-deployment -p namespace ml-platform   # plan
  opsbook run initial-kubernetes-deployment --mode apply --approve RUN_ID
  opsbook undo APPLY_RUN_ID   # then --mode apply --approve UNDO_PLAN_ID
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
        "new", help="scaffold a new runbook: notebook, ops module, tests",
        description="Write a new runbook that follows the runbook contract and passes its tests as generated: "
                    "notebooks/ID.ipynb, lib/opsbook/ops/MODULE.py (MODULE: the id with _ for -) and "
                    "tests/runbooks/test_MODULE.py, all three or none. Replace each TODO in them; "
                    "docs/writing-a-runbook.md walks through it.")
    sp.add_argument("runbook", metavar="ID", help="the new runbook's id: lowercase letters, digits and '-'")
    sp.add_argument("--title", required=True, metavar="TITLE", help="its title, one line")
    sp.add_argument("--risk", required=True, metavar="low|high",
                    help="high: an apply carries out a reviewed plan run (--approve PLAN_RUN_ID)")
    sp.add_argument("--objective", default="", metavar="TEXT",
                    help="what it achieves and when to run it (default: a TODO to replace)")
    sp.add_argument("--notebooks", metavar="DIR", help="where the notebook goes (default: the catalogue, "
                    "notebooks/; any other folder is high-risk)")

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

    sp = sub.add_parser(
        "undo", help="take back what a recorded apply changed (plan, then approved apply)",
        description="Plan the undo of apply RUN_ID from its record: every change it made (newest\n"
                    "first, also those of a failed apply), and whether each is still what the apply\n"
                    "left. The plan is a record of its own; `--mode apply --approve UNDO_PLAN_ID`\n"
                    "carries it out. Anything changed since the apply is refused (with the\n"
                    "difference), and an apply is undone once. It runs the undo runbook on the\n"
                    "apply's target: `opsbook run undo -p undo_of RUN_ID --target TARGET`.",
        epilog="exit codes: 0 succeeded, 1 refused or failed (see the record), 2 invalid\ninput, "
               "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("run_id", metavar="RUN_ID", help="the apply to take back (`opsbook history --status failed`)")
    sp.add_argument("--mode", choices=["plan", "apply"], help="plan (default: record what would be taken back) "
                    "or apply")
    sp.add_argument("--approve", metavar="UNDO_PLAN_ID", help="the undo plan run this apply carries out")
    sp.add_argument("--quiet", action="store_true", help="no per-cell progress")
    sp.add_argument("--ci", nargs="?", const="auto", choices=["auto", "github", "gitlab", "plain"],
                    metavar="FORMAT", help="CI log format, as for `run` (default: $OPSBOOK_CI)")
    sp.add_argument("--output-json", metavar="FILE", help="also write run_id, status, exit_code and record as JSON")
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

    sp = sub.add_parser("mlflow", help="stop or check the embedded MLflow server",
                        description="The MLflow server that mlflow-tracking-server starts on target local "
                        "(127.0.0.1, state in .opsbook/mlflow or $OPSBOOK_MLFLOW_STATE) keeps running "
                        "after the run: stop it, or ask whether it answers (exit 1 if it is not running).")
    sp.add_argument("action", choices=("stop", "status"), help="stop the server, or report on it")
    sp.add_argument("--state-dir", metavar="DIR", help="its state folder (default: .opsbook/mlflow)")
    sp.add_argument("--port", type=int, default=None, metavar="N", help="its port (default 5055)")
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
