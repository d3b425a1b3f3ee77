"""The notebook API: what runbook cells call.

A runbook's setup cell creates the run context from its parameters::

    import opsbook
    run = opsbook.start("initial-kubernetes-deployment", globals())

and every later cell is one call through it::

    run.preflight(deploy.preflight(helm=helm, kube=kube))     # stops the run if a prerequisite fails
    run.step("Render values.yaml", deploy.render_values, params)   # ok / failed
    run.change("Install the release", deploy.install, helm, release, plan=deploy.plan_install)
    run.check("Pods are Ready", deploy.pods_ready, kube, namespace)
    run.summary()

``change`` is the plan/apply guard: in ``plan`` mode the change is not made, and the step is recorded
as ``planned`` with what the ``plan`` callable returns (rendered manifests, a server-side dry run);
in ``apply`` mode it is made and recorded as ``changed``. Every outcome (``ok``, ``changed``,
``planned``, ``skipped``, ``failed``) is shown in the notebook and, under ``opsbook run``, written to
the run's events file, from which the runner builds the record's manifest.

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
