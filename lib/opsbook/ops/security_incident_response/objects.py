"""The Kubernetes objects several phases read or write: the affected pods, the RBAC bindings and
token Secrets of the compromised accounts, copies fit to be saved and put back, and the few writes
(PUT, POST, merge-patch) the phases make. Evidence, containment and recovery must agree on these:
recovery restores exactly what containment saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from opsbook.errors import NotFound
from opsbook.ops import journal
from opsbook.ops.security_incident_response.context import SA_ANNOTATION, TOKEN_TYPE, Context, subject_matches

# what a saved copy leaves out, and a Secret's copy without its values: the same as an undo's
SERVER_FIELDS, clean, secret_copy = journal.SERVER_FIELDS, journal.clean, journal.secret_copy


def affected_pods(ctx: Context) -> list[dict[str, Any]]:
    """The pods ``selector`` names in ``namespace`` now, by name."""
    s = ctx.settings
    pods = ctx.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def bindings(ctx: Context) -> list[dict[str, Any]]:
    """Every RoleBinding and ClusterRoleBinding naming a compromised account: the binding, and the
    indexes of the subjects that match."""
    accounts = ctx.accounts()
    if not accounts or not ctx.has_cluster:
        return []
    found = []
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in ctx.kube.list_objects(kind=kind):
            subjects = b.get("subjects") or []
            hits = [i for i, sub in enumerate(subjects) if any(subject_matches(sub, a) for a in accounts)]
            if hits:
                b.setdefault("kind", kind)
                b.setdefault("apiVersion", "rbac.authorization.k8s.io/v1")
                found.append({"binding": b, "matching": hits})
    found.sort(key=lambda x: (x["binding"]["kind"], x["binding"]["metadata"].get("namespace", ""),
                              x["binding"]["metadata"]["name"]))
    return found


def token_secrets(ctx: Context) -> list[dict[str, Any]]:
    """The token Secrets of the compromised ServiceAccounts."""
    if not ctx.has_cluster:
        return []
    out = []
    for a in ctx.accounts():
        if a.kind != "ServiceAccount":
            continue
        for sec in ctx.kube.list_objects(kind="Secret", namespace=a.namespace):
            if sec.get("type") == TOKEN_TYPE and (sec["metadata"].get("annotations") or {}).get(SA_ANNOTATION) == a.name:
                sec.setdefault("kind", "Secret")
                sec.setdefault("apiVersion", "v1")
                out.append(sec)
    return sorted(out, key=lambda x: (x["metadata"]["namespace"], x["metadata"]["name"]))


def owning_deployments(ctx: Context) -> dict[str, int]:
    """The Deployments owning the affected pods (through their ReplicaSets) and their replicas now."""
    ns = ctx.settings.namespace
    rs_names = {o["name"] for p in affected_pods(ctx) for o in p["metadata"].get("ownerReferences") or []
                if o.get("kind") == "ReplicaSet"}
    out: dict[str, int] = {}
    for rs in rs_names:
        try:
            obj = ctx.kube.get(kind="ReplicaSet", name=rs, namespace=ns)
        except NotFound:
            continue
        for o in obj["metadata"].get("ownerReferences") or []:
            if o.get("kind") == "Deployment":
                dep = ctx.kube.get(kind="Deployment", name=o["name"], namespace=ns)
                out[o["name"]] = int((dep.get("spec") or {}).get("replicas", 1))
    return out


def item_rows(items: list[dict[str, Any]], verb: str = "") -> list[dict[str, Any]]:
    """The table of a disable (or, with ``verb`` "undo: ", of its restore)."""
    rows = []
    for it in items:
        role = (it["object"].get("roleRef") or {}).get("name", "")
        what = ("delete the binding (only compromised subjects)" if it["action"] == "delete" and it["kind"] != "Secret"
                else "delete the token Secret" if it["kind"] == "Secret"
                else "remove " + ", ".join(f"{x.get('kind')}:{x.get('name')}" for x in it["removed_subjects"]))
        rows.append({"object": ref(it), "role": role, "action": (verb + what) if verb else what})
    return rows


def ref(item: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` of a saved item (or an undo entry made of one)."""
    return f"{item['kind']}/{item['namespace'] + '/' if item['namespace'] else ''}{item['name']}"


# ------------------------------------------------------------------------------------------- writes


def put(ctx: Context, obj: dict[str, Any]) -> dict[str, Any]:
    """Replace ``obj`` (a full PUT: a binding's subjects, a Deployment's containers)."""
    info = ctx.kube.resource(kind=obj["kind"], api_version=obj.get("apiVersion"))
    ns = obj["metadata"].get("namespace") if info.namespaced else None
    return ctx.kube.request("PUT", info.path(namespace=ns, name=obj["metadata"]["name"]), body=obj)


def create(ctx: Context, obj: dict[str, Any]) -> dict[str, Any]:
    info = ctx.kube.resource(kind=obj["kind"], api_version=obj.get("apiVersion"))
    ns = obj["metadata"].get("namespace") if info.namespaced else None
    return ctx.kube.request("POST", info.path(namespace=ns), body=obj)


def read(ctx: Context, item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object a saved item names as it is now (None: absent, or being deleted)."""
    return journal.read(ctx.kube, kind=item["kind"], name=item["name"], namespace=item["namespace"] or None)


def disable_item(ctx: Context, item: Mapping[str, Any]) -> dict[str, Any] | None:
    """Take one saved item away, as disabling the accounts does: the object deleted (action
    ``delete``) or the compromised subjects removed from the binding. Returns the binding as left
    (None: deleted)."""
    ns = item["namespace"] or None
    if item["action"] == "delete":
        ctx.kube.delete(kind=item["kind"], name=item["name"], namespace=ns)
        return None
    cur = ctx.kube.get(kind=item["kind"], name=item["name"], namespace=ns)
    cur["subjects"] = [x for x in cur.get("subjects") or [] if x not in item["removed_subjects"]]
    return put(ctx, cur)


def patch_labels(ctx: Context, pod: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
    """Set (or, with None, remove) labels of a pod in the incident's namespace."""
    ns = ctx.settings.namespace
    return ctx.kube.request("PATCH", f"/api/v1/namespaces/{quote(ns, safe='')}/pods/{quote(pod, safe='')}",
                            body={"metadata": {"labels": dict(labels)}}, content_type="application/merge-patch+json")


def scale(ctx: Context, name: str, replicas: int) -> None:
    ns = ctx.settings.namespace
    ctx.kube.request("PATCH", f"/apis/apps/v1/namespaces/{quote(ns, safe='')}/deployments/{quote(name, safe='')}",
                     body={"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")
