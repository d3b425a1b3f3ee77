"""Phase 2, evidence: what the cluster shows *before anything changes*, each piece a file of the
record (its sha256 in the manifest), so that containment cannot destroy what forensics needs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from opsbook.errors import ClientError, Invalid, NotFound
from opsbook.ops.base import Result, step
from opsbook.ops.security_incident_response import objects
from opsbook.ops.security_incident_response.context import Context


def _log_text(ctx: Context, pod: str, container: str, previous: bool) -> str | None:
    s = ctx.settings
    try:
        return ctx.kube.request(
            "GET", f"/api/v1/namespaces/{quote(s.namespace, safe='')}/pods/{quote(pod, safe='')}/log",
            query={"container": container, "tailLines": s.log_lines or None,
                   "previous": "true" if previous else None}, raw=True)
    except (NotFound, Invalid, ClientError):
        return None  # no previous instance, or a container that never started: nothing to save


@step("capture-evidence", "Capture evidence", phase="evidence", needs_cluster=True)
def capture_evidence(ctx: Context) -> Result:
    """Save, before anything changes: each affected pod's spec and status, its containers' logs (current
    and previous), the namespace's events, the RBAC bindings and token Secrets (metadata and digests
    only) of the compromised accounts, their ServiceAccounts, and the NetworkPolicies in force."""
    s = ctx.settings
    saved: list[dict[str, Any]] = []
    if ctx.pods is None:
        ctx.pods = ctx.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
    for p in ctx.pods:
        name = p["metadata"]["name"]
        saved.append(ctx.save(f"pods/{name}.json", {"apiVersion": "v1", "kind": "Pod", **p},
                              f"Pod {s.namespace}/{name} as the API returned it"))
        for c in (p.get("spec") or {}).get("containers") or []:
            for previous in (False, True):
                text = _log_text(ctx, name, c["name"], previous)
                if text is None:
                    continue
                which = "previous" if previous else "current"
                saved.append(ctx.save(f"logs/{name}/{c['name']}{'.previous' if previous else ''}.log", text,
                                      f"log of container {c['name']} in pod {name} ({which} instance)"))
    events = ctx.kube.list_objects(kind="Event", namespace=s.namespace)
    saved.append(ctx.save("events.json", events, f"every Event of namespace {s.namespace}"))
    if ctx.bindings is None:
        ctx.bindings = objects.bindings(ctx)
    if s.compromised_accounts:
        saved.append(ctx.save("rbac/bindings.json", [b["binding"] for b in ctx.bindings],
                              "RoleBindings and ClusterRoleBindings naming a compromised account"))
        sas = []
        for a in ctx.accounts():
            if a.kind == "ServiceAccount":
                try:
                    sas.append(ctx.kube.get(kind="ServiceAccount", name=a.name, namespace=a.namespace))
                except NotFound:
                    sas.append({"kind": "ServiceAccount", "metadata": {"name": a.name, "namespace": a.namespace},
                                "missing": True})
        saved.append(ctx.save("rbac/serviceaccounts.json", sas, "the compromised ServiceAccounts"))
        saved.append(ctx.save("rbac/token-secrets.json", [objects.secret_copy(x) for x in objects.token_secrets(ctx)],
                              "token Secrets of the compromised ServiceAccounts (metadata, sha256 of each key)"))
    policies = ctx.kube.list_objects(kind="NetworkPolicy", namespace=s.namespace)
    saved.append(ctx.save("networkpolicies.json", policies, f"NetworkPolicies in force in {s.namespace}"))
    rows = [{"file": e["name"], "bytes": e["bytes"], "sha256": (e["sha256"] or "")[:16], "what": e["description"]}
            for e in saved]
    return Result(summary=f"{len(saved)} evidence file(s) saved before any change", rows=rows,
                  details={"files": [e["name"] for e in saved]})
