"""Phase 1, identification: what is firing, which pods (and which image digests) are affected, what
happened and changed lately, how severe it is, and who responds. Nothing is changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsbook.clients.kube_events import event_summary, format_instant, sort_key
from opsbook.errors import ClientError
from opsbook.ops.base import Result, step
from opsbook.ops.security_incident_response import objects
from opsbook.ops.security_incident_response.context import QUARANTINE_LABEL, Context
from opsbook.text import shorten

#: The severity matrix, first matching row wins (shown in the notebook and recorded).
SEVERITY_MATRIX: list[tuple[str, str]] = [
    ("sev1", "a compromised account is bound cluster-wide (ClusterRoleBinding), or a critical alert fires "
             "on a production target"),
    ("sev2", "compromised accounts are named, or a critical alert fires"),
    ("sev3", "a warning alert fires, or affected pods are running"),
    ("sev4", "nothing observed yet (no alert, no affected pod, no account)"),
]


def _no_prometheus(ctx: Context) -> str | None:
    return None if ctx.prometheus_url else \
        "no Prometheus URL (parameter prometheus_url or the target's): alerts not read"


@step("alerts", "Firing alerts", phase="identification", skip_if=_no_prometheus)
def alerts(ctx: Context) -> Result:
    """Firing and pending alerts from Prometheus's alerts API (saved as evidence too)."""
    rows = ctx.prometheus.alerts()
    ctx.alerts = rows
    ctx.save("identification/alerts.json", rows, "Prometheus /api/v1/alerts at identification")
    firing = [r for r in rows if r["state"] == "firing"]
    table = [{"alert": r["alertname"], "state": r["state"], "severity": r["severity"], "since": r["active_at"],
              "summary": shorten(r["annotations"].get("summary") or r["annotations"].get("description") or "", 120)}
             for r in rows]
    return Result(summary=f"{len(firing)} firing, {len(rows) - len(firing)} pending", rows=table,
                  details={"firing": [r["alertname"] for r in firing]})


def _pod_rows(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for p in pods:
        meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
        digests = {c.get("name"): c.get("imageID") or "" for c in status.get("containerStatuses") or []}
        for c in spec.get("containers") or []:
            rows.append({"pod": meta.get("name", ""), "container": c.get("name", ""), "image": c.get("image", ""),
                         "digest": digests.get(c.get("name"), "") or "(not reported)",
                         "phase": status.get("phase", ""), "node": spec.get("nodeName") or "",
                         "service account": spec.get("serviceAccountName") or "default",
                         "quarantined": (meta.get("labels") or {}).get(QUARANTINE_LABEL, "")})
    return rows


def _identification_or_evidence(ctx: Context) -> str | None:
    """The affected pods are listed for identification and for the evidence phase that saves them."""
    if ctx.wants("identification") or ctx.wants("evidence"):
        return None
    return "phases identification and evidence not selected"


@step("affected-pods", "Affected pods, images and digests", needs_cluster=True,
      skip_if=_identification_or_evidence)
def affected_pods(ctx: Context) -> Result:
    """The pods the selector names, one row per container: image and the digest the kubelet reports."""
    s = ctx.settings
    pods = objects.affected_pods(ctx)
    ctx.pods = pods
    return Result(summary=f"{len(pods)} pod(s) in {s.namespace} match {s.selector or '(every pod)'}",
                  rows=_pod_rows(pods), details={"pods": [p["metadata"]["name"] for p in pods]})


@step("recent-events", "Recent events", phase="identification", needs_cluster=True)
def recent_events(ctx: Context) -> Result:
    """Events of the namespace last seen in the last ``events_since_minutes`` minutes, oldest first, with
    how many times each was seen: the controllers' events (eventTime null) and the scheduler's
    (eventTime set, a series once repeated) alike."""
    s = ctx.settings
    since = datetime.now(UTC) - timedelta(minutes=s.events_since_minutes)
    seen = [event_summary(e) for e in ctx.kube.list_objects(kind="Event", namespace=s.namespace)]
    seen = sorted((e for e in seen if e["last_seen"] is None or e["last_seen"] >= since), key=sort_key)
    rows = [{"time": format_instant(e["last_seen"]), "type": e["type"], "reason": e["reason"], "object": e["object"],
             "count": e["count"], "message": shorten(e["message"], 200)} for e in seen]
    warnings = sum(1 for r in rows if r["type"] == "Warning")
    return Result(summary=f"{len(rows)} event(s) in the last {s.events_since_minutes} min, {warnings} warning(s)",
                  rows=rows)


@step("recent-changes", "Recent changes", phase="identification", needs_cluster=True)
def recent_changes(ctx: Context) -> Result:
    """What changed lately: the helm release's history and the ReplicaSet revisions of the namespace."""
    s = ctx.settings
    rows: list[dict[str, Any]] = []
    if s.release:
        for h in ctx.helm.history(s.release, namespace=s.namespace):
            rows.append({"what": f"helm {s.release}", "revision": h.get("revision"), "when": h.get("updated", ""),
                         "status": h.get("status", ""), "detail": f"{h.get('chart', '')} {h.get('description', '')}"})
    for rs in ctx.kube.list_objects(kind="ReplicaSet", namespace=s.namespace, selector=s.selector or None):
        meta = rs.get("metadata") or {}
        owner = next((o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Deployment"), "")
        images = ", ".join(c.get("image", "") for c in (((rs.get("spec") or {}).get("template") or {}).get("spec")
                                                        or {}).get("containers") or [])
        rows.append({"what": f"deployment {owner or '?'} / {meta.get('name')}",
                     "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", ""),
                     "when": meta.get("creationTimestamp", ""),
                     "status": f"{(rs.get('spec') or {}).get('replicas', 0)} replica(s)", "detail": images})
    return Result(summary=f"{len(rows)} change(s) found", rows=rows)


@step("severity", "Severity assessment")
def assess_severity(ctx: Context) -> Result:
    """The severity from :data:`SEVERITY_MATRIX` on what identification found; a given severity wins.
    Assessed in every run, whatever its phases: each record states the incident's severity."""
    s = ctx.settings
    firing = [a for a in ctx.alerts if a.get("state") == "firing"]
    critical = [a for a in firing if str(a.get("severity", "")).lower() in ("critical", "page", "sev1")]
    try:
        found = objects.bindings(ctx)
    except ClientError as exc:
        found = []
        ctx.bindings_error = str(exc)
    ctx.bindings = found
    cluster_wide = [b for b in found if b["binding"]["kind"] == "ClusterRoleBinding"]
    facts = {"firing alerts": len(firing), "critical alerts": len(critical), "accounts": len(s.compromised_accounts),
             "cluster-wide bindings": len(cluster_wide), "affected pods": len(ctx.pods or []),
             "production target": ctx.production}
    if cluster_wide or (critical and ctx.production):
        assessed = "sev1"
    elif s.compromised_accounts or critical:
        assessed = "sev2"
    elif firing or ctx.pods:
        assessed = "sev3"
    else:
        assessed = "sev4"
    chosen = assessed if s.severity == "auto" else s.severity
    ctx.severity = chosen
    rows = [{"severity": sev, "when": when, "matches": "<= assessed" if sev == assessed else ""}
            for sev, when in SEVERITY_MATRIX]
    why = "" if s.severity == "auto" else f" (given {s.severity}; the matrix says {assessed})"
    details: dict[str, Any] = {"severity": chosen, "assessed": assessed, "given": s.severity, "facts": facts}
    if ctx.bindings_error:
        details["bindings_error"] = ctx.bindings_error
    return Result(summary=f"severity {chosen}{why}", rows=rows, details=details)


@step("responders", "Responders")
def record_responders(ctx: Context) -> Result:
    """The responders, recorded in this run (the post-mortem reads them from its records)."""
    s = ctx.settings
    rows = [{"responder": r, "incident": s.incident_id} for r in s.responders]
    if not rows:
        return Result(summary="no responders named (parameter responders): record them before applying", rows=[],
                      details={"responders": []})
    return Result(summary=f"{len(rows)} responder(s) on {s.incident_id}", rows=rows,
                  details={"responders": list(s.responders), "severity": ctx.severity or s.severity})
