"""Phase 3, containment: the affected pods quarantined (a label and a deny-all NetworkPolicy; they
keep running, for forensics), the compromised accounts disabled, and optionally the workload scaled
to zero. Everything removed is saved into the record first: recovery restores from those copies.
Each change is idempotent: applied twice, the second run changes nothing.

What each change did is also kept for ``opsbook undo``: the labels, the policy and the replicas
through ``ctx.journal`` (:data:`~opsbook.ops.journal.JOURNAL`), the accounts as the saved copies
themselves (:data:`~opsbook.ops.security_incident_response.recover.ACCOUNTS`: the undo puts them back
with recovery's own ``restore_item``)."""

from __future__ import annotations

from typing import Any

from opsbook.errors import NotFound
from opsbook.ops.base import Result, change, check
from opsbook.ops.journal import JOURNAL
from opsbook.ops.security_incident_response import objects, tokens
from opsbook.ops.security_incident_response.context import (
    ACCOUNTS_EVIDENCE,
    QUARANTINE_EVIDENCE,
    QUARANTINE_LABEL,
    SCALE_EVIDENCE,
    Context,
    apply_needs_cluster,
    first,
    unless,
)
from opsbook.ops.security_incident_response.objects import item_rows
from opsbook.ops.security_incident_response.recover import ACCOUNTS, disabled_entry

_NOT_ISOLATING = unless("isolate", why="isolate is false: the pods are not quarantined")
_NO_ACCOUNTS = unless("disable_accounts", "compromised_accounts",
                      why="no compromised account to disable (compromised_accounts empty or disable_accounts false)")
_NOT_SCALING = unless("scale_down", why="scale_down is false (the quarantined pods keep running for forensics)")


# ------------------------------------------------------------------------------------------ quarantine


def quarantine_policy(ctx: Context) -> dict[str, Any]:
    """Deny every ingress and egress of the pods carrying the quarantine label of this incident."""
    s = ctx.settings
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": ctx.policy_name, "namespace": s.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "opsbook", QUARANTINE_LABEL: ctx.quarantine_value},
                         "annotations": {"opsbook.io/incident": s.incident_id}},
            "spec": {"podSelector": {"matchLabels": {QUARANTINE_LABEL: ctx.quarantine_value}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}}


def plan_isolate(ctx: Context) -> Result:
    """The pods that would be labelled and the policy, accepted by a server-side dry run where a
    cluster is reachable; without one, what would be done."""
    s = ctx.settings
    policy = quarantine_policy(ctx)
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {"policy": policy}
    if ctx.has_cluster:
        for p in objects.affected_pods(ctx):
            has = (p["metadata"].get("labels") or {}).get(QUARANTINE_LABEL) == ctx.quarantine_value
            rows.append({"object": f"Pod/{p['metadata']['name']}", "action": "already labelled" if has else
                         f"label {QUARANTINE_LABEL}={ctx.quarantine_value}"})
        dry = ctx.kube.apply([policy], namespace=s.namespace, dry_run=True)
        details["dry_run"] = "accepted by the server" if dry else ""
    rows.append({"object": f"NetworkPolicy/{ctx.policy_name}", "action": "apply: deny all ingress and egress"})
    pods = f"{len(rows) - 1} pod(s)" if ctx.has_cluster else \
        f"the pods matching {s.selector or '(every pod)'} (no cluster: not listed)"
    return Result(summary=f"would quarantine {pods} behind NetworkPolicy {ctx.policy_name}",
                  outcome="planned", rows=rows, details=details)


@change("quarantine", "Quarantine the affected pods", plan=plan_isolate, phase="containment",
        skip_if=first(_NOT_ISOLATING, apply_needs_cluster), undo=JOURNAL)
def isolate(ctx: Context) -> Result:
    """Label the affected pods and apply the deny-all policy (both idempotent). Pods keep running."""
    s = ctx.settings
    rows, changed = [], 0
    for p in objects.affected_pods(ctx):
        name = p["metadata"]["name"]
        if (p["metadata"].get("labels") or {}).get(QUARANTINE_LABEL) == ctx.quarantine_value:
            rows.append({"object": f"Pod/{name}", "action": "already labelled"})
            continue
        with ctx.journal.object(ctx.kube, kind="Pod", name=name, namespace=s.namespace, api_version="v1"):
            objects.patch_labels(ctx, name, {QUARANTINE_LABEL: ctx.quarantine_value})
        changed += 1
        rows.append({"object": f"Pod/{name}", "action": f"labelled {QUARANTINE_LABEL}={ctx.quarantine_value}"})
    try:
        before = objects.clean(ctx.kube.get(kind="NetworkPolicy", name=ctx.policy_name, namespace=s.namespace))
    except NotFound:
        before = None
    policy = quarantine_policy(ctx)
    after = ctx.journal.apply(ctx.kube, [policy], namespace=s.namespace)[0]  # the undo deletes it
    same = before is not None and before.get("spec") == after.get("spec")
    changed += 0 if same else 1
    rows.append({"object": f"NetworkPolicy/{ctx.policy_name}", "action": "unchanged" if same else "applied"})
    ctx.save(QUARANTINE_EVIDENCE, {"pods": [r["object"] for r in rows[:-1]], "policy": policy},
             "the quarantine applied: pods labelled and the deny-all NetworkPolicy")
    return Result(summary=f"{len(rows) - 1} pod(s) quarantined behind {ctx.policy_name}" +
                  ("" if changed else " (already in force: nothing changed)"),
                  outcome="changed" if changed else "ok", rows=rows, details={"changed": changed})


@check("quarantine-in-force", "Quarantine in force", phase="containment", needs_cluster=True,
       skip_if=_NOT_ISOLATING)
def isolation_in_force(ctx: Context) -> Result:
    """Check: the policy selects the quarantine label, denies both directions, and the labelled pods
    run. In plan mode a quarantine already in force (an earlier apply) is checked too."""
    s = ctx.settings
    try:
        pol = ctx.kube.get(kind="NetworkPolicy", name=ctx.policy_name, namespace=s.namespace)
    except NotFound:
        if not ctx.applying:
            return Result(summary="plan mode: the quarantine is not applied", outcome="skipped")
        return Result(summary=f"NetworkPolicy {ctx.policy_name} is missing", outcome="failed")
    spec = pol.get("spec") or {}
    ok_sel = (spec.get("podSelector") or {}).get("matchLabels") == {QUARANTINE_LABEL: ctx.quarantine_value}
    ok_types = sorted(spec.get("policyTypes") or []) == ["Egress", "Ingress"]
    ok_rules = not spec.get("ingress") and not spec.get("egress")
    pods = ctx.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={ctx.quarantine_value}")
    rows = [{"pod": p["metadata"]["name"], "phase": (p.get("status") or {}).get("phase", "")} for p in pods]
    ok = ok_sel and ok_types and ok_rules
    return Result(summary=(f"deny-all in force for {len(pods)} quarantined pod(s)" if ok else
                           f"policy {ctx.policy_name} does not deny all: selector {ok_sel}, types {ok_types}, "
                           f"no rules {ok_rules}"), outcome="ok" if ok else "failed", rows=rows)


# ------------------------------------------------------------------------------------------ accounts


def _disable_plan(ctx: Context) -> list[dict[str, Any]]:
    """What disabling changes, one item per object, each with a copy of the object as it is now
    (the token Secrets without their values): the form recovery restores from."""
    items: list[dict[str, Any]] = []
    for b in objects.bindings(ctx):
        obj = b["binding"]
        subjects = obj.get("subjects") or []
        removed = [subjects[i] for i in b["matching"]]
        action = "delete" if len(removed) == len(subjects) else "remove_subjects"
        items.append({"kind": obj["kind"], "namespace": obj["metadata"].get("namespace", ""),
                      "name": obj["metadata"]["name"], "action": action, "removed_subjects": removed,
                      "object": objects.clean(obj)})
    for sec in objects.token_secrets(ctx):
        items.append({"kind": "Secret", "namespace": sec["metadata"]["namespace"], "name": sec["metadata"]["name"],
                      "action": "delete", "removed_subjects": [], "object": objects.secret_copy(sec)})
    return items


def plan_disable_accounts(ctx: Context) -> Result:
    if not ctx.has_cluster:
        return Result(summary=f"would disable {len(ctx.settings.compromised_accounts)} account(s): remove them from "
                      "every RoleBinding/ClusterRoleBinding and delete their token Secrets (no cluster: not listed)",
                      outcome="planned", rows=[{"account": str(a)} for a in ctx.accounts()])
    items = _disable_plan(ctx)
    watched = tokens.referenced(ctx, [it["object"] for it in items if it["kind"] == "Secret"])
    legacy = (f"; ServiceAccount(s) {', '.join(f'{ns}/{sa}' for ns, sa in sorted(watched))} reference their token "
              "Secret: a legacy token controller may issue a new one (watched for after the deletion)") if watched else ""
    return Result(summary=f"would change {len(items)} object(s); a copy of each goes into the record{legacy}",
                  outcome="planned", rows=item_rows(items), details={"items": items})


@change("disable-accounts", "Disable the compromised accounts", plan=plan_disable_accounts, phase="containment",
        skip_if=first(_NO_ACCOUNTS, apply_needs_cluster), undo=ACCOUNTS)
def disable_accounts(ctx: Context, *, reissue_wait: float = tokens.REISSUE_WAIT, poll: float = 0.5) -> Result:
    """Remove the compromised subjects from their bindings (delete a binding left without subjects) and
    delete their token Secrets, saving a copy of each object as it was into the record first. Then,
    where a ServiceAccount referenced a deleted token (the mark of a legacy token controller), watch
    up to ``reissue_wait`` seconds for a new one: a token that came back fails the step, by name, with
    how to stop it (:mod:`~opsbook.ops.security_incident_response.tokens`)."""
    items = _disable_plan(ctx)
    if not items:
        return Result(summary="nothing to disable: no binding or token Secret names these accounts (already "
                      "disabled?)", outcome="ok", rows=[])
    saved = ctx.save(ACCOUNTS_EVIDENCE, {"incident_id": ctx.settings.incident_id, "items": items},
                     "copy of every binding and token Secret removed to disable the compromised accounts")
    token_copies = [it["object"] for it in items if it["kind"] == "Secret"]
    watched = tokens.referenced(ctx, token_copies)
    for it in items:  # each one journalled as done: the undo restores it from its copy (restore_item)
        ctx.journal.record(disabled_entry(it, objects.disable_item(ctx, it)))
    ctx.disabled.extend(items)
    rows = item_rows(items)
    details: dict[str, Any] = {"copy": saved["name"], "sha256": saved["sha256"]}
    summary = f"{len(items)} object(s) changed; copy saved as {saved['name']}"
    back = tokens.reissued(ctx, watched, {t["metadata"]["name"] for t in token_copies}, wait=reissue_wait, poll=poll)
    if not back:
        return Result(summary=summary, outcome="changed", rows=rows, details=details)
    names = [f"{ns}/{n}" for (ns, _sa), new in sorted(back.items()) for n in new]
    rows += [{"object": f"Secret/{name}", "role": "", "action": "RE-ISSUED by the legacy token controller: a valid token"}
             for name in names]
    details["reissued"] = names
    return Result(summary=f"{summary}; but token Secret(s) {', '.join(names)} were re-issued by the cluster's legacy "
                  "token controller: the account(s) have a valid token again (see below how to stop it)",
                  outcome="failed", rows=rows, details=details,
                  headline=f"token re-issued after containment: {', '.join(names)}", show=[tokens.advice(back)])


# ------------------------------------------------------------------------------------------- scaling


def plan_scale_down(ctx: Context) -> Result:
    if not ctx.has_cluster:
        return Result(summary="would scale the affected Deployments to 0 (no cluster: not listed)", outcome="planned")
    deps = objects.owning_deployments(ctx)
    return Result(summary=f"would scale {len(deps)} Deployment(s) to 0", outcome="planned",
                  rows=[{"deployment": d, "replicas now": r} for d, r in deps.items()])


@change("scale-down", "Scale the workload down", plan=plan_scale_down, phase="containment",
        skip_if=first(_NOT_SCALING, apply_needs_cluster), undo=JOURNAL)
def scale_down(ctx: Context) -> Result:
    """Scale the Deployments owning the affected pods to zero, saving their replica counts."""
    deps = {d: r for d, r in objects.owning_deployments(ctx).items() if r > 0}
    if not deps:
        return Result(summary="nothing to scale down (already at 0)", outcome="ok")
    ctx.save(SCALE_EVIDENCE, {"namespace": ctx.settings.namespace, "replicas": deps},
             "replica counts before the scale-down, for recovery")
    for d in deps:
        with ctx.journal.object(ctx.kube, kind="Deployment", name=d, namespace=ctx.settings.namespace,
                                api_version="apps/v1"):
            objects.scale(ctx, d, 0)
    ctx.scaled = deps
    return Result(summary=f"{len(deps)} Deployment(s) scaled to 0", outcome="changed",
                  rows=[{"deployment": d, "replicas before": r} for d, r in deps.items()])
