"""The deployment to the target's cluster: the namespace and Secrets the pod needs (preflight), the
server-side dry run (plan), and the server-side apply followed by the rollout (apply). A re-run is
idempotent: server-side apply updates what is there.

Undo (``opsbook undo RUN_ID``): the apply goes through ``ctx.journal``, object by object, so the record
keeps each manifest's object before and after: the undo deletes the Deployment, Service and Ingress
the apply created and puts back (as they were) those it changed. They are journalled before the
rollout wait, so a rollout that fails (a bad image, a pod that never gets ready) still leaves them in
the failed step's record. The Secrets the pod reads are the operator's: never touched, nor undone.
"""

from __future__ import annotations

from opsbook.errors import ClientError, NotFound
from opsbook.ops.base import Check, Result, change
from opsbook.ops.journal import JOURNAL
from opsbook.ops.mlflow_tracking_server.context import APP, Context
from opsbook.ops.mlflow_tracking_server.manifests import render_manifests, required_secrets


def fail_reason(exc: Exception) -> str:
    """A client error's first line: what a failed prerequisite shows."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def cluster_preflight(ctx: Context) -> list[Check]:
    """The namespace exists and holds every Secret, with every key, that the Deployment reads."""
    s = ctx.settings
    kube = ctx.kube
    try:
        if not kube.namespace_exists(name=s.namespace):
            return [Check("namespace exists", False, f"namespace {s.namespace} does not exist (the Secrets the "
                          "Deployment reads must be created there first)")]
    except ClientError as exc:
        return [Check("namespace exists", False, fail_reason(exc))]
    out = [Check("namespace exists", True, s.namespace)]
    for name, keys in required_secrets(s).items():
        try:
            secret = kube.get(kind="Secret", name=name, namespace=s.namespace)
        except NotFound:
            out.append(Check(f"Secret {name}", False, f"Secret {s.namespace}/{name} does not exist "
                             f"(needs keys {', '.join(keys)})"))
            continue
        except ClientError as exc:
            out.append(Check(f"Secret {name}", False, fail_reason(exc)))
            continue
        have = set((secret.get("data") or {}) | (secret.get("stringData") or {}))
        missing = [k for k in keys if k not in have]
        out.append(Check(f"Secret {name}", not missing, f"has key(s) {', '.join(keys)}" if not missing else
                         f"Secret {s.namespace}/{name} lacks key(s) {', '.join(missing)}"))
    return out


def plan_deploy(ctx: Context) -> Result:
    """Plan mode: what the deploy would change (server-side dry run where there is a cluster)."""
    s = ctx.settings
    ms = render_manifests(ctx)
    if ctx.server_mode != "cluster":
        return Result(summary=f"target {ctx.target_name} has no cluster: the {len(ms)} manifests are shown above "
                      "and not applied" + ("; the embedded server stands in" if ctx.embedded else ""),
                      outcome="planned", details={"manifests": ms})
    kube = ctx.kube
    rows = []
    if not kube.namespace_exists(name=s.namespace):
        rows.append({"kind": "Namespace", "name": s.namespace, "action": "create"})
    dry = kube.apply(ms, namespace=s.namespace, dry_run=True) if not rows else []
    for m in ms:
        try:
            kube.get(kind=m["kind"], name=m["metadata"]["name"], namespace=s.namespace, api_version=m["apiVersion"])
            action = "update (server-side apply)"
        except NotFound:
            action = "create"
        rows.append({"kind": m["kind"], "name": m["metadata"]["name"], "action": action,
                     "dry run": "accepted by the server" if dry else "namespace missing: not dry-run"})
    return Result(summary=f"{len(ms)} objects in {s.namespace}" + (" (server-side dry run passed)" if dry else ""),
                  outcome="planned", rows=rows, details={"manifests": ms, "dry_run": dry})


def no_cluster_to_deploy(ctx: Context) -> str | None:
    """Why an apply deploys nothing: the target has no cluster. (A plan still shows the manifests.)"""
    if not ctx.applying or ctx.server_mode == "cluster":
        return None
    return f"target {ctx.target_name} has no cluster: nothing deployed" + (
        "; the embedded server stands in" if ctx.embedded else f"; verifying {ctx.configured_uri} as it is")


@change("deploy", "Deploy to the cluster", plan=plan_deploy, skip_if=no_cluster_to_deploy, undo=JOURNAL)
def deploy(ctx: Context) -> Result:
    """Apply the manifests (server-side apply) and wait until the Deployment has rolled out. Each
    object is journalled (the undo deletes what this created, puts back what it changed)."""
    s = ctx.settings
    kube = ctx.kube
    ms = render_manifests(ctx)
    # the preflight requires the namespace (it holds the Secrets): this only creates it if it went
    # missing since, and then the undo deletes it again (last, and only if it holds nothing else)
    created_ns = ctx.journal.namespace(kube, s.namespace)
    applied = ctx.journal.apply(kube, ms, namespace=s.namespace)
    rollout = kube.wait_rollout(namespace=s.namespace, name=APP, timeout=s.timeout)
    rows = [{"kind": o.get("kind"), "name": (o.get("metadata") or {}).get("name"),
             "resourceVersion": (o.get("metadata") or {}).get("resourceVersion")} for o in applied]
    pods = kube.pods(namespace=s.namespace, selector="app.kubernetes.io/name=mlflow")
    return Result(summary=f"applied {len(applied)} objects to {s.namespace}" + (" (namespace created)" if created_ns
                  else "") + f"; rolled out {rollout.replicas} replica(s) in {rollout.seconds:.1f} s",
                  outcome="changed", rows=rows + pods, details={"rollout": rollout.status})
