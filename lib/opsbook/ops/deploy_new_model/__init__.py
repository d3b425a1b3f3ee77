"""The `deploy-new-model` runbook's logic: a registry-checked canary of ``proposer``/``critic``, judged
by the sequential canary judge, then promoted or rolled back behind an approval, and verified.

Every step is declared once next to its code and takes the run's :class:`Context`; the notebook
calls each through the notebook API, one per cell::

    run.do(deploy_new_model.settings)          # where everything comes from
    run.do(deploy_new_model.preflight)         # registry, cluster, serving version, metrics source
    run.do(deploy_new_model.registry_version); run.do(deploy_new_model.serving)
    run.do(deploy_new_model.canary_manifest); run.do(deploy_new_model.deploy_canary)
    run.do(deploy_new_model.collect); run.do(deploy_new_model.judge); run.do(deploy_new_model.plot)
    run.do(deploy_new_model.decide)            # the approved plan's verdict, or the decision parameter
    run.do(deploy_new_model.promote); run.do(deploy_new_model.rollback); run.do(deploy_new_model.move_alias)
    run.do(deploy_new_model.verify_instances)

The modules, along the rollout's seams: :mod:`.context` (the run's context and what the steps
found), :mod:`.cluster` (the model version on Kubernetes objects, the stable Deployment, the canary
rendered from it), :mod:`.steps` (settings, preflight, versions, the canary), :mod:`.judging`
(metrics, judge, plot, decision), :mod:`.promotion` (promote, roll back, move the alias, verify),
:mod:`.metrics` (the metrics frames from Prometheus or recorded files) and :mod:`.plots`.
"""

from __future__ import annotations

from opsbook.ops.deploy_new_model.cluster import (
    find_stable,
    model_of,
    patch_stable,
    render_canary,
    set_model,
)
from opsbook.ops.deploy_new_model.context import (
    DEFAULT_METRICS_FILE,
    Context,
    Serving,
    check_judge_settings,
    metric_specs,
)
from opsbook.ops.deploy_new_model.judging import collect, decide, judge, planned_version, plot
from opsbook.ops.deploy_new_model.promotion import (
    move_alias,
    plan_alias,
    plan_promote,
    plan_rollback,
    promote,
    rollback,
    rollback_target,
    verify_instances,
)
from opsbook.ops.deploy_new_model.steps import (
    canary_manifest,
    check_cluster,
    check_metrics_source,
    check_registry,
    deploy_canary,
    plan_canary,
    preflight,
    registry_version,
    serving,
    settings,
)

__all__ = [
    "DEFAULT_METRICS_FILE", "Context", "Serving", "canary_manifest", "check_cluster", "check_judge_settings",
    "check_metrics_source", "check_registry", "collect", "decide", "deploy_canary", "find_stable", "judge",
    "metric_specs", "model_of", "move_alias", "patch_stable", "plan_alias", "plan_canary", "plan_promote",
    "plan_rollback", "planned_version", "plot", "preflight", "promote", "registry_version", "render_canary",
    "rollback", "rollback_target", "serving", "set_model", "settings", "verify_instances",
]
