"""``opsbook run ID --on-cluster`` end to end: validate here (parameters, approval, RBAC, S3 archive),
then run the same command as a Kubernetes Job, follow it, and clean up. The CLI parses the command
line and hands it here with its consoles; this module decides, the CLI only prints what it returns."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def run(args: argparse.Namespace, given: dict[str, Any], text_values: set[str], *, out: Any, err: Any) -> int:
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
    archive = None
    if args.approve:  # the approved plan is checked here, in the same S3 archive, before anything is created
        from opsbook.records import open_archive

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
    kube = Kube(kubeconfig=tgt.kubeconfig, context=tgt.kube_context)
    tls = tgt.tls_warning()  # said once, here: the client keeps urllib3 from repeating it per request
    if tls:
        err.print(f"[yellow]warning:[/yellow] {safe_text(tls, oneline=True)}", soft_wrap=True, highlight=False)
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
            return _interrupted(kube, req, objs, err)
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


def _interrupted(kube: Any, req: Any, objs: list[dict[str, Any]], err: Any) -> int:
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
