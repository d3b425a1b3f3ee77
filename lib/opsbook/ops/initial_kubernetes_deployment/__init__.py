"""The `initial-kubernetes-deployment` runbook's logic: a first Helm install of the ML platform, verified.

Declared steps over the run's :class:`Context` (the settings from the notebook's parameters cell, the
helm/Kubernetes/HTTP clients, and what the steps found so far: values.yaml, the rendered manifests);
the notebook calls them one per cell, in this order::

    run.do(initial_kubernetes_deployment.connect)            # the cluster, or why it cannot be reached
    run.do(initial_kubernetes_deployment.preflight)          # stops the run on a missing prerequisite
    add_repo, write_values, ensure_db_secret (a change), render_manifests, access_checks (a preflight),
    server_dry_run, install (a change), verify_pods, service_logs, probe_ingress, events_not_ready

Seams: :mod:`.context` (the Context), :mod:`.prepare` (connect, preflight, the database Secret, the
repository), :mod:`.values` (values.yaml and the manifests), :mod:`.release` (access, dry run,
install), :mod:`.verify` (the checks after the install). A test builds the context with its own
clients: ``make_context("initial-kubernetes-deployment", clients=Clients(target, kube=kube, helm=helm))``.
"""

from __future__ import annotations

from .context import RUNBOOK_ID, Context, is_chart_path
from .prepare import UPGRADE_HINT, add_repo, connect, ensure_db_secret, plan_db_secret, preflight
from .release import access_checks, install, plan_install, server_dry_run
from .values import Text, deep_merge, parse_overrides, render_manifests, write_values
from .verify import ERROR_LINE, events_not_ready, ingress_urls, probe_ingress, service_logs, verify_pods

__all__ = [
    "ERROR_LINE", "RUNBOOK_ID", "UPGRADE_HINT", "Context", "Text", "access_checks", "add_repo", "connect",
    "deep_merge", "ensure_db_secret", "events_not_ready", "ingress_urls", "install", "is_chart_path",
    "parse_overrides", "plan_db_secret", "plan_install", "preflight", "probe_ingress", "render_manifests",
    "server_dry_run", "service_logs", "verify_pods", "write_values",
]
