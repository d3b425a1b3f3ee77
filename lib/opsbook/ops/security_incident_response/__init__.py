"""The `security-incident-response` runbook's logic, in the phases of the handbook (its ``phases``
parameter), one module each.

==================  =================================================================================
module (phase)      what it does (each step returns a :class:`~opsbook.results.Result`)
==================  =================================================================================
``context``         the run's :class:`Context` (phases, accounts, quarantine names, clients, what the
                    steps of this run found), account parsing, the skip conditions of the steps
``preflight``       the settings shown to the operator; the prerequisites
``identify``        firing alerts (Prometheus ``/api/v1/alerts``), affected pods with images and image
(identification)    digests, recent events, recent changes (helm history, ReplicaSet revisions), the
                    severity from :data:`SEVERITY_MATRIX`, the responders
``evidence``        before anything changes: pod specs, container logs (current and previous), events,
                    RBAC bindings and token Secrets of the compromised accounts, NetworkPolicies in
                    force; each one a file of the record (``ctx.evidence``), sha256 in the manifest
``contain``         quarantine label on the affected pods + a deny-all ingress/egress NetworkPolicy
(containment)       selecting it (the pods keep running, for forensics); compromised accounts
                    disabled: their subjects removed from RoleBindings/ClusterRoleBindings (a binding
                    whose only subjects they are is deleted) and their token Secrets deleted, a copy of
                    everything removed kept in the record; optionally the workload scaled to zero
``eradicate``       ``helm rollback`` to a named revision, or a known-good image digest redeployed;
(eradication)       a PostgreSQL database restored from a dump, then row counts confirmed
``recover``         isolation lifted, accounts re-enabled from the saved copies (this run's, and the
(recovery)          records of earlier runs of the same incident), replicas restored, health verified
``post_incident``   the runs of this incident so far (``opsbook incident``), the bundle command
==================  =================================================================================

``objects`` holds the Kubernetes objects several phases share (bindings, token Secrets, clean copies,
the writes); ``tokens`` watches for a token Secret that a cluster's legacy token controller (before
v1.24) issues again after containment deleted it, and says how to stop it. Each step is declared once
(``opsbook.ops.base``) with its phase and what it needs: a step of a phase not selected, or one with
nothing to do here, is recorded as skipped with the reason.
Every change has a ``plan_*`` function that shows what it would do (a server-side dry run where a
cluster is reachable), and every change is idempotent: applied twice, the second run changes nothing.
Every change also declares its undo (``opsbook undo RUN_ID``): labels, the quarantine policy,
replicas, images and the helm rollback through ``ctx.journal``; the accounts through
``recover.ACCOUNTS``, whose undo of a disable is recovery's own ``restore_item``; a database restore
through ``eradicate.DATABASE``, which restores the dump the apply took just before it (kept in
``.opsbook/undo/RUN_ID/`` on that machine, never in the record).

Token Secrets of a compromised ServiceAccount are **not** copied with their data: the record keeps
their metadata and the sha256 of each data key. Re-enabling re-creates them empty, and Kubernetes'
token controller mints a new token: a credential that leaked is never put back, nor written to disk.
"""

from opsbook.ops.security_incident_response.contain import (
    disable_accounts,
    isolate,
    isolation_in_force,
    plan_disable_accounts,
    plan_isolate,
    plan_scale_down,
    quarantine_policy,
    scale_down,
)
from opsbook.ops.security_incident_response.context import (
    ACCOUNTS_EVIDENCE,
    PHASES,
    QUARANTINE_EVIDENCE,
    QUARANTINE_LABEL,
    SCALE_EVIDENCE,
    SEVERITIES,
    Account,
    Context,
    label_value,
    parse_account,
    subject_matches,
)
from opsbook.ops.security_incident_response.eradicate import (
    image_target,
    plan_redeploy_image,
    plan_restore_database,
    plan_rollback,
    redeploy_image,
    restore_database,
    restore_verified,
    rollback,
    rollback_verified,
)
from opsbook.ops.security_incident_response.evidence import capture_evidence
from opsbook.ops.security_incident_response.identify import (
    SEVERITY_MATRIX,
    affected_pods,
    alerts,
    assess_severity,
    recent_changes,
    recent_events,
    record_responders,
)
from opsbook.ops.security_incident_response.objects import clean
from opsbook.ops.security_incident_response.post_incident import incident_so_far
from opsbook.ops.security_incident_response.preflight import incident_preflight, incident_settings
from opsbook.ops.security_incident_response.recover import (
    error_rate,
    lift_isolation,
    plan_lift_isolation,
    plan_reenable_accounts,
    plan_scale_back,
    pods_ready,
    reenable_accounts,
    saved_copies,
    scale_back,
)

__all__ = [
    "ACCOUNTS_EVIDENCE", "PHASES", "QUARANTINE_EVIDENCE", "QUARANTINE_LABEL", "SCALE_EVIDENCE", "SEVERITIES",
    "SEVERITY_MATRIX", "Account", "Context", "affected_pods", "alerts", "assess_severity", "capture_evidence",
    "clean", "disable_accounts", "error_rate", "image_target", "incident_preflight", "incident_settings",
    "incident_so_far", "isolate", "isolation_in_force", "label_value", "lift_isolation", "parse_account",
    "plan_disable_accounts", "plan_isolate", "plan_lift_isolation", "plan_redeploy_image", "plan_reenable_accounts",
    "plan_restore_database", "plan_rollback", "plan_scale_back", "plan_scale_down", "pods_ready",
    "quarantine_policy", "recent_changes", "recent_events", "record_responders", "redeploy_image",
    "reenable_accounts", "restore_database", "restore_verified", "rollback", "rollback_verified", "saved_copies",
    "scale_back", "scale_down", "subject_matches",
]
