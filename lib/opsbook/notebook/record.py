"""An interactive run (JupyterLab) archives itself: the notebook as the kernel ran it, redacted."""

from __future__ import annotations

import html
import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from opsbook import secrets
from opsbook.notebook import interactive
from opsbook.notebook.display import jsonable, show_html

if TYPE_CHECKING:
    from opsbook.notebook.run import Run, StepRecord


def record_interactive(run: Run, failed: list[StepRecord]) -> None:
    """Archive this interactive run: the notebook as the kernel ran it (or the runbook's source
    outside a kernel), redacted, its HTML, and a manifest like the runner's."""
    if run.recorded is not None:
        run._announce(f"already recorded as {run.recorded}; re-run the setup cell to start a new run")
        return
    import shutil

    import nbformat

    from opsbook import workdirs
    from opsbook.records import record as recording

    workdirs.sweep_stale_workdirs()  # what killed runs and dead kernels left behind
    ip = interactive.shell()
    source = interactive.notebook_path(run.runbook.path) if ip is not None else run.runbook.path
    red = recording.redactor_for(run.params, run.runbook, secrets.REDACTOR.registered())
    status = "failed" if failed else "succeeded"
    error = ("; ".join(f"{r.title}: {r.summary}" if r.summary else r.title for r in failed)[:2000]
             if failed else None)
    staging = workdirs.make_workdir(f"opsbook-{run.id}-")  # mode 0700, with an owner file
    try:
        folder = staging / "record"
        folder.mkdir()
        extra: dict[str, Any] = {"interactive": True}
        if ip is not None:
            nb, info = interactive.executed_notebook(source, ip, since=run._first_cell)
            extra["interactive_notebook"] = info
        else:
            nb = nbformat.read(str(source), as_version=4)
            extra["interactive_notebook"] = {"notebook_path": str(source),
                                             "note": "no Jupyter kernel: the runbook's source, without outputs"}
        nb = nbformat.from_dict(red.redact_obj(nb))
        nb.metadata.setdefault("opsbook", {})["run"] = {"run_id": run.id, "status": status,
                                                        "interactive": True}
        nbformat.write(nb, str(folder / recording.NOTEBOOK_NAME))
        if run.evidence_dir.is_dir():
            shutil.copytree(run.evidence_dir, folder / "evidence")
        dropped = recording.redact_evidence(folder / "evidence", red)
        evidence = [{"name": e["name"], "description": e["description"]} for e in run._evidence
                    if e["name"] not in dropped and (folder / "evidence" / e["name"]).is_file()]
        manifest = recording.manifest(
            rb=run.runbook, params=run.params, target=run.target, run_id=run.id, operator=run.operator,
            started=run.started, seconds=time.monotonic() - run._t0, status=status, failed_cell=None,
            error=error, approval=run.approval, steps=[jsonable(asdict(r)) for r in run.records], evidence=evidence,
            evidence_dropped=dropped, red=red, extra=extra)
        recording.write_html(nb, folder, red, manifest=manifest)  # its header shows the manifest's facts
        ref = run.archive().record(runbook_id=run.runbook.id, run_id=run.id, source_dir=folder,
                                    manifest=manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    run.recorded = ref.path
    run_dir = run.evidence_dir.parent  # .opsbook/interactive/RUN_ID: archived now, not kept
    if run_dir.name == run.id and not os.path.islink(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
    text = f"recorded as {run.recorded} (status {status}; `opsbook history` lists it, `opsbook verify` checks it)"
    show_html(f"<p class='opsbook-recorded'>Recorded: {html.escape(text)}</p>", text)
