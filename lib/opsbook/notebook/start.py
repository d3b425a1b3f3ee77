"""``opsbook.start``: the setup cell of every runbook, and the kernel's own approval gate."""

from __future__ import annotations

import getpass
import html
import os
import socket
from pathlib import Path
from typing import Any

from opsbook import catalog, parameters
from opsbook.errors import ParameterError, RunbookError
from opsbook.ids import new_run_id
from opsbook.notebook import interactive
from opsbook.notebook.context import _STARTED, path_base
from opsbook.notebook.display import show_html, table_html, table_text
from opsbook.notebook.echo import _ipython, _quiet_echo
from opsbook.notebook.run import Run
from opsbook.parameters import validate
from opsbook.runenv import (
    ENV_APPROVED_PLAN,
    ENV_OPERATOR,
    ENV_RUN_ID,
    ENV_SOURCE,
)
from opsbook.targets import Target
from opsbook.targets import get as get_target


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
    from opsbook.records import open_archive

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
            show_html("<pre>" + html.escape(str(exc)) + "</pre>", str(exc))
        raise
    target = get_target(params.get("target", "local"))
    # [required...] markers are checked by `opsbook run` before the kernel only: a walkthrough (or nbmake)
    # of a runbook with its defaults still runs, and shows its placeholders as placeholders
    try:  # [path...] parameters exist (opsbook run checked them before the kernel)
        if not headless:
            parameters.check_paths(rb.spec, params, path_base)
    except ParameterError as exc:
        if headless or interactive.shell() is None:
            show_html("<pre>" + html.escape(str(exc)) + "</pre>", str(exc))
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
    tls = target.tls_warning()  # the record's one mention: the client never lets urllib3 repeat it
    if tls:
        rows.append({"field": "warning", "value": tls})
    show_html("<h3>opsbook run</h3>" + table_html(rows), "opsbook run\n" + table_text(rows))
    run._emit({"event": "start", "run_id": run.id, "mode": run.mode, "target": target.name})
    return run
