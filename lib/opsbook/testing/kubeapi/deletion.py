"""Deletion: preconditions, finalizers, graceful pod termination, propagation (Foreground,
Background), namespaces that terminate before they go, and deletecollection."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

from .errors import ApiError, bad_request, conflict, forbidden, not_found
from .meta import now_iso
from .resources import RESOURCES, Resource, res

if TYPE_CHECKING:
    from .store import Cluster

NS_RES = res("v1", "namespaces")
POD_TERMINATION_SECONDS = 0.3  # how long a gracefully deleted pod stays Terminating (at most its grace period)


def delete(c: Cluster, r: Resource, ns: str, name: str, options: dict | None = None, *,
           dry_run: bool = False, internal: bool = False) -> tuple[dict, int]:
    options = options or {}
    with c.lock:
        sr = c.storage(r)
        ns = ns if r.namespaced else ""
        obj = c.data[sr].get((ns, name))
        if obj is None:
            raise not_found(r, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise conflict(r, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                                    f"meta: {obj['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise conflict(r, name, f"Precondition failed: ResourceVersion in precondition: "
                                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                    f"{obj['metadata']['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy == "Orphan" or (policy is None and options.get("orphanDependents") is True):
            # nothing the runbooks or their tests do orphans dependents: refused rather than ignored
            raise bad_request("propagationPolicy Orphan is not supported by the opsbook Kubernetes API test "
                              "server (see its README, Known gaps)")
        if sr is NS_RES:
            if name in ("default", "kube-system", "kube-public") and not internal:
                raise forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted', r, name)
            new = copy.deepcopy(obj)
            if dry_run:
                return new, 200
            if not new["metadata"].get("deletionTimestamp"):
                new["metadata"]["deletionTimestamp"] = now_iso()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new.setdefault("status", {})["phase"] = "Terminating"
                c.store(sr, new, "MODIFIED")
            return copy.deepcopy(new), 200
        if sr.kind == "Pod" and not sr.group and not obj["metadata"].get("deletionTimestamp"):
            grace = options.get("gracePeriodSeconds")
            if grace in (None, ""):
                grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace = int(grace)
            phase = (obj.get("status") or {}).get("phase")
            if grace > 0 and (obj.get("spec") or {}).get("nodeName") and phase not in ("Succeeded", "Failed"):
                # graceful deletion: the kubelet stops the containers, then the pod goes away
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = now_iso(time.time() + grace)
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                if dry_run:
                    return c.view(r, new), 200
                c.sim.setdefault(obj["metadata"]["uid"], {})["terminate_at"] = \
                    time.time() + min(grace, POD_TERMINATION_SECONDS)
                c.store(sr, new, "MODIFIED")
                return c.view(r, new), 200
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if policy == "Foreground" and has_dependents(c, obj):
            if "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
        if finalizers:
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = finalizers
            if not new["metadata"].get("deletionTimestamp"):
                new["metadata"]["deletionTimestamp"] = now_iso()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
            if dry_run:
                return c.view(r, new), 200
            if new != obj:
                c.store(sr, new, "MODIFIED")
            return c.view(r, new), 200
        if dry_run:
            gone = obj
        else:
            gone = c.drop(sr, obj)
        if r.return_deleted:
            return c.view(r, gone), 200
        details = {"name": name}
        if r.group:
            details["group"] = r.group
        details["kind"] = r.plural
        details["uid"] = obj["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}, 200


def has_dependents(c: Cluster, owner: dict) -> bool:
    uid = owner["metadata"]["uid"]
    ns = owner["metadata"].get("namespace")
    for rr in RESOURCES:
        if not rr.namespaced and ns:
            continue
        for o in c.data[rr].values():
            if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or []):
                return True
    return False


def delete_collection(c: Cluster, r: Resource, ns: str | None, label_match, field_match, options: dict,
                      dry_run: bool = False) -> list[dict]:
    with c.lock:
        items, _ = c.list(r, ns, label_match, field_match)
        out = []
        for it in items:
            try:
                obj, _code = delete(c, r, it["metadata"].get("namespace", ""), it["metadata"]["name"],
                                    options, dry_run=dry_run)
            except ApiError:
                continue
            out.append(it if obj.get("kind") == "Status" else obj)
        return out
