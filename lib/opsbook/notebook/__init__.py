"""The notebook API: what runbook cells call.

A runbook's setup cell creates the run context from its parameters::

    import opsbook
    run = opsbook.start("initial-kubernetes-deployment", globals())

and every later cell is one call through it, to a step its ops module declares
(``opsbook.ops.base``: id, title, kind, plan function, when it does not apply)::

    run.do(initial_kubernetes_deployment.preflight)   # stops the run if a prerequisite fails
    run.do(initial_kubernetes_deployment.write_values) # ok / failed
    run.do(initial_kubernetes_deployment.install)      # a change: planned in plan mode, changed in apply
    run.do(initial_kubernetes_deployment.verify_pods)  # a check: failed is recorded, the run goes on
    run.summary()

``run.do`` builds the runbook's context once (``run.ctx``: the ``Context`` class of
``opsbook.ops.<id with _>``, with the typed settings of the parameters cell, the target, lazy
clients, secrets, evidence and the approved plan) and records a step that does not apply here as
skipped with its reason. ``run.step``/``change``/``check``/``preflight`` with a title stay for
notebooks without an ops module (test fixtures). ``change`` is the plan/apply guard: in ``plan`` mode
the change is not made, and the step is recorded as ``planned`` with what its plan function returns
(rendered manifests, a server-side dry run); in ``apply`` mode it is made and recorded as
``changed``. Every outcome (``ok``, ``changed``, ``planned``, ``skipped``, ``failed``) is shown in
the notebook and, under ``opsbook run``, written to the run's events file, from which the runner
builds the record's manifest (each step with its stable ``id``).

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

from opsbook.notebook.context import _context_class, _model_name, path_base
from opsbook.notebook.display import table_html as _table_html
from opsbook.notebook.echo import _quiet_echo, _returned
from opsbook.notebook.run import _ICONS, MAX_ROWS, SUMMARY_WIDTH, Run, StepRecord, StepRecords
from opsbook.notebook.start import _gate, start
from opsbook.runenv import (
    ENV_APPROVED_PLAN,
    ENV_EVENTS,
    ENV_EVIDENCE_DIR,
    ENV_OPERATOR,
    ENV_RUN_ID,
    ENV_SOURCE,
)

__all__ = ["ENV_APPROVED_PLAN", "ENV_EVENTS", "ENV_EVIDENCE_DIR", "ENV_OPERATOR", "ENV_RUN_ID", "ENV_SOURCE",
           "MAX_ROWS", "SUMMARY_WIDTH", "Run", "StepRecord", "StepRecords", "_ICONS", "_context_class", "_gate",
           "_model_name", "_quiet_echo", "_returned", "_table_html", "path_base", "start"]
