"""Putting the collector on the cluster: the prerequisites, the server-side dry run plan mode shows,
the apply that waits until every node runs a Ready collector, and the check that says which node does
not."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import ClientError, NotFound, OpsbookError
from opsbook.ops import base
from opsbook.ops.base import Check, Result, change, check
from opsbook.ops.centralized_logging.config import SELECTOR, credentials_ref, render_manifests, rows_of
from opsbook.ops.centralized_logging.context import APP, Context, reason
from opsbook.ops.journal import JOURNAL


@base.preflight("preflight", "Preflight")
def preflight(ctx: Context) -> list[Check]:
    """The prerequisites: a valid configuration, the log store answering, and on a cluster the API,
    the rights to install the collector and the credentials Secret."""
    s = ctx.settings
    out: list[Check] = []
    try:
        render_manifests(ctx)
        out.append(Check("configuration renders", True, f"{ctx.kind} output to {ctx.sink_url}"))
    except ClientError as exc:
        out.append(Check("configuration renders", False, reason(exc)))
    if ":" not in s.collector_image.rsplit("/", 1)[-1] or s.collector_image.endswith(":latest"):
        out.append(Check("collector image pinned", False, f"{s.collector_image}: give an explicit version tag"))
    else:
        out.append(Check("collector image pinned", True, s.collector_image))
    if not ctx.backend_url:
        out.append(Check("log store answers", True, f"skipped: target {ctx.target_name} has no log_store_url and "
                         "backend_url is empty (the store is not checked)"))
    else:
        try:
            h = ctx.store().health()
            ok = h.status != "red"
            out.append(Check("log store answers", ok, f"{h.version or h.kind} at {h.url}, status {h.status}",
                             evidence={"status": h.status, "version": h.version, **h.details}))
        except (ClientError, OpsbookError) as exc:
            out.append(Check("log store answers", False, reason(exc)))
    if not ctx.has_cluster:
        out.append(Check("cluster", True, f"skipped: target {ctx.target_name} has no cluster (plan only)"))
        return out
    kube = ctx.kube
    try:
        v = kube.version()
        out.append(Check("Kubernetes API", True, f"{kube.host}, {v.get('gitVersion', '?')}"))
    except ClientError as exc:
        out.append(Check("Kubernetes API", False, reason(exc)))
        return out
    for verb, resource, group, ns in (("create", "daemonsets", "apps", s.namespace),
                                      ("create", "clusterroles", "rbac.authorization.k8s.io", None),
                                      ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None)):
        try:
            ok = kube.can_i(verb=verb, resource=resource, group=group, namespace=ns)
            out.append(Check(f"may {verb} {resource}", ok, "allowed" if ok else
                             f"RBAC denies {verb} {resource}" + (f" in {ns}" if ns else "")))
        except ClientError as exc:
            out.append(Check(f"may {verb} {resource}", False, reason(exc)))
    if s.backend_user:
        name, key = credentials_ref(ctx)
        try:
            secret = kube.get(kind="Secret", name=name, namespace=s.namespace)
            have = set((secret.get("data") or {}) | (secret.get("stringData") or {}))
            out.append(Check(f"Secret {name}", key in have, f"has key {key}" if key in have else
                             f"Secret {s.namespace}/{name} lacks key {key}"))
        except NotFound:
            out.append(Check(f"Secret {name}", False, f"Secret {s.namespace}/{name} (key {key}) does not exist: "
                             "the collectors read the store's password from it"))
        except ClientError as exc:
            out.append(Check(f"Secret {name}", False, reason(exc)))
    return out


def plan_deploy(ctx: Context) -> Result:
    """Plan mode: the server-side dry run of every manifest where there is a cluster; without one, the
    rendered manifests (plan mode still shows what an apply would send)."""
    s = ctx.settings
    ms = render_manifests(ctx)
    if not ctx.has_cluster:
        return Result(summary=f"target {ctx.target_name} has no cluster: the {len(ms)} manifests above are not "
                      "applied", outcome="planned", rows=[{**r, "action": "create or update (not dry-run: no cluster)"}
                                                         for r in rows_of(ms)], details={"manifests": ms})
    kube = ctx.kube
    rows = []
    ns_missing = not kube.namespace_exists(name=s.namespace)
    if ns_missing:
        rows.append({"kind": "Namespace", "name": s.namespace, "namespace": "(cluster)", "action": "create"})

    def exists(m: Mapping[str, Any]) -> bool:
        try:
            kube.get(kind=m["kind"], name=m["metadata"]["name"], namespace=m["metadata"].get("namespace"),
                     api_version=m["apiVersion"])
            return True
        except NotFound:
            return False

    present = [exists(m) for m in ms]
    new_roles = {(m["kind"], m["metadata"]["name"]) for m, there in zip(ms, present, strict=True)
                 if not there and m["kind"] in ("Role", "ClusterRole")}

    def not_dry_run(m: Mapping[str, Any]) -> str | None:
        """Why the server cannot dry-run ``m`` before the apply, or None."""
        if ns_missing and "namespace" in m["metadata"]:
            return "namespace missing: not dry-run"
        ref = m.get("roleRef") or {}
        if m["kind"] in ("RoleBinding", "ClusterRoleBinding") and (ref.get("kind"), ref.get("name")) in new_roles:
            # RBAC's escalation check reads the role a binding grants: one this apply creates is not
            # there yet, so only an account allowed to `bind` any role could dry-run it (the runbook's
            # least-privilege account is not); the apply creates the role first
            return f"not dry-run: its {ref['kind']} is created by this apply"
        return None

    why_not = [not_dry_run(m) for m in ms]
    dry = kube.apply([m for m, why in zip(ms, why_not, strict=True) if why is None], namespace=s.namespace,
                     dry_run=True)
    for m, there, why in zip(ms, present, why_not, strict=True):
        rows.append({"kind": m["kind"], "name": m["metadata"]["name"],
                     "namespace": m["metadata"].get("namespace", "(cluster)"),
                     "action": "update (server-side apply)" if there else "create",
                     "dry run": why or "accepted by the server"})
    return Result(summary=f"{len(ms)} objects; server-side dry run accepted {len(dry)}", outcome="planned",
                  rows=rows, details={"manifests": ms, "dry_run": dry})


def _daemonset_state(ds: Mapping[str, Any]) -> tuple[bool, str]:
    st, gen = ds.get("status") or {}, int((ds.get("metadata") or {}).get("generation") or 0)
    want = int(st.get("desiredNumberScheduled") or 0)
    ready, updated = int(st.get("numberReady") or 0), int(st.get("updatedNumberScheduled") or 0)
    observed = int(st.get("observedGeneration") or 0)
    done = observed >= gen and want > 0 and ready == want and updated == want
    return done, f"desired {want}, ready {ready}, updated {updated}, observedGeneration {observed}/{gen}"


def wait_daemonset(kube: Any, *, namespace: str, name: str = APP, timeout: float = 300.0,
                   poll: float = 0.5) -> dict[str, Any]:
    """Wait until every scheduled collector is updated and Ready; the DaemonSet, or TimedOut."""

    def ready() -> Any:
        ds = kube.get(kind="DaemonSet", name=name, namespace=namespace)
        done, state = _daemonset_state(ds)
        return ds if done else Pending(state)

    return wait_until(ready, timeout=timeout, interval=poll, what=f"DaemonSet {namespace}/{name} not ready")


# plan mode renders (and, on a cluster, dry-runs) without a cluster too: only an apply needs one
@change("deploy-collectors", "Deploy the collectors", plan=plan_deploy, needs_cluster="apply", undo=JOURNAL)
def deploy(ctx: Context) -> Result:
    """Apply the manifests (server-side apply: idempotent, and what the plan's dry run showed) and wait
    until a collector is Ready on every node.

    Undo (``opsbook undo RUN_ID``): the namespace and every object go through ``ctx.journal``, one by
    one, so the record keeps each as it was before and after, also when the apply or the wait for the
    collectors fails halfway. The undo deletes what the apply created (the DaemonSet, the ConfigMap, the
    ServiceAccount, and the cluster-scoped ClusterRole and ClusterRoleBinding, which do not go with the
    namespace) and puts back what it changed (an earlier ConfigMap, DaemonSet, role...); a namespace it
    created is deleted last, only if it holds nothing else."""
    s = ctx.settings
    kube = ctx.kube
    t0 = time.monotonic()
    created = ctx.journal.namespace(kube, s.namespace)
    applied = ctx.journal.apply(kube, render_manifests(ctx), namespace=s.namespace)
    ds = wait_daemonset(kube, namespace=s.namespace, timeout=s.timeout)
    _, state = _daemonset_state(ds)
    rows = [{"kind": o.get("kind"), "name": (o.get("metadata") or {}).get("name"),
             "resourceVersion": (o.get("metadata") or {}).get("resourceVersion")} for o in applied]
    return Result(summary=f"applied {len(applied)} objects" + (f" (namespace {s.namespace} created)" if created else "")
                  + f"; DaemonSet ready in {time.monotonic() - t0:.1f} s: {state}", outcome="changed", rows=rows,
                  details={"status": ds.get("status") or {}})


def _ready(pod: Mapping[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@check("collector-on-every-node", "A collector on every node", needs_cluster=True)
def collectors_on_every_node(ctx: Context) -> Result:
    """One Ready collector per schedulable node; the nodes without one are named. In plan mode nothing
    was deployed by this run, so the table shows how things stand and nothing is judged."""
    s = ctx.settings
    kube = ctx.kube
    nodes = kube.list_objects(kind="Node")
    pods = kube.list_objects(kind="Pod", namespace=s.namespace,
                             selector=",".join(f"{k}={v}" for k, v in SELECTOR.items()))
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for p in pods:
        if (p.get("metadata") or {}).get("deletionTimestamp"):
            continue
        by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
    rows, missing = [], []
    for n in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = n["metadata"]["name"]
        if (n.get("spec") or {}).get("unschedulable"):
            rows.append({"node": name, "collector": "", "ready": "", "status": "cordoned: not expected"})
            continue
        here = by_node.get(name, [])
        ready = [p for p in here if _ready(p)]
        status = "ok" if len(ready) == 1 else ("NO READY COLLECTOR" if not ready else f"{len(ready)} collectors")
        if len(ready) != 1:
            missing.append(name)
        rows.append({"node": name, "collector": ", ".join(p["metadata"]["name"] for p in here) or "(none)",
                     "ready": f"{len(ready)}/{len(here)}", "status": status})
    expected = len([r for r in rows if r["status"] != "cordoned: not expected"])
    ok = not missing and expected > 0
    summary = (f"{expected} schedulable node(s), one Ready collector on each" if ok else
               f"{len(missing)} of {expected} node(s) without exactly one Ready collector: {', '.join(missing)}"
               if missing else "no schedulable node")
    if not ctx.applying:
        return Result(summary=f"plan mode, not judged (now: {summary})", outcome="skipped", rows=rows,
                      details={"nodes": expected, "missing": missing})
    return Result(summary=summary, outcome="ok" if ok else "failed", rows=rows,
                  details={"nodes": expected, "missing": missing})
