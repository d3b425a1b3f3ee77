"""The subresources with their own semantics: scale (an autoscaling/v1 Scale over spec.replicas),
PODS/binding, PODS/eviction (refused while a PodDisruptionBudget would be violated), and the access
reviews, which are answered rather than stored (the test user may do everything)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from .errors import ApiError, conflict, invalid, not_found
from .resources import Resource, res
from .selectors import match_selector_object

if TYPE_CHECKING:
    from .store import Cluster

PODS = res("v1", "pods")
PDBS = res("policy/v1", "poddisruptionbudgets")
SAR = res("authorization.k8s.io/v1", "selfsubjectaccessreviews")
REVIEWS = {SAR, res("authorization.k8s.io/v1", "selfsubjectrulesreviews"),
           res("authentication.k8s.io/v1", "selfsubjectreviews")}
TEST_USER = {"username": "opsbook-test-admin", "groups": ["system:masters", "system:authenticated"]}


def scale_of(r: Resource, obj: dict) -> dict:
    m = obj["metadata"]
    sel = (obj.get("spec") or {}).get("selector") or {}
    sel_str = ",".join(f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items()))
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m["uid"],
                         "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
            "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)), "selector": sel_str}}


def write_scale(c: Cluster, r: Resource, ns: str, name: str, body: dict, *, dry_run: bool = False,
                manager: str | None = None) -> dict:
    with c.lock:
        obj = c.raw(r, ns, name)
        if obj is None:
            raise not_found(r, name)
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid '
                                           f'value: {replicas}: must be greater than or equal to 0')
        brv = (body.get("metadata") or {}).get("resourceVersion")
        if brv and brv != obj["metadata"]["resourceVersion"]:
            raise conflict(r, name)
        new = copy.deepcopy(obj)
        new["spec"]["replicas"] = replicas
        out = c.update(r, ns, name, new, dry_run=dry_run, manager=manager)
        return scale_of(r, out)


def bind(c: Cluster, ns: str, name: str, body: dict, dry_run: bool = False) -> dict:
    with c.lock:
        pod = c.raw(PODS, ns, name)
        if pod is None:
            raise not_found(PODS, name)
        target = (body or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid(PODS, name, [("target.name", "FieldValueRequired", "Required value")])
        if (pod.get("spec") or {}).get("nodeName"):
            raise conflict(PODS, name, f"pod {name} is already assigned to node "
                                       f"\"{pod['spec']['nodeName']}\"")
        if not dry_run:
            new = copy.deepcopy(pod)
            new["spec"]["nodeName"] = node
            c.update(PODS, ns, name, new, internal=True)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def evict(c: Cluster, ns: str, name: str, body: dict, dry_run: bool = False) -> dict:
    with c.lock:
        pod = c.raw(PODS, ns, name)
        if pod is None:
            raise not_found(PODS, name)
        labels = pod["metadata"].get("labels") or {}
        for pdb in c.objects(PDBS, ns):
            spec = pdb.get("spec") or {}
            if not match_selector_object(spec.get("selector") or {}, labels):
                continue
            matching = [p for p in c.objects(PODS, ns)
                        if match_selector_object(spec.get("selector") or {}, p["metadata"].get("labels"))
                        and not p["metadata"].get("deletionTimestamp")]
            healthy = sum(1 for p in matching if any(
                cond.get("type") == "Ready" and cond.get("status") == "True"
                for cond in (p.get("status") or {}).get("conditions") or []))
            total = len(matching)

            def _n(v, tot):
                if isinstance(v, str) and v.endswith("%"):
                    return -(-int(v[:-1]) * tot // 100)
                return int(v)
            if "minAvailable" in spec:
                allowed = healthy - _n(spec["minAvailable"], total)
            elif "maxUnavailable" in spec:
                allowed = _n(spec["maxUnavailable"], total) - (total - healthy)
            else:
                allowed = 1
            if allowed <= 0:
                raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                                       "disruption budget.",
                               {"causes": [{"reason": "DisruptionBudget", "message": f"The disruption "
                                            f"budget {pdb['metadata']['name']} needs "
                                            f"{healthy - max(allowed, 0)} healthy pods and has {healthy} "
                                            f"currently"}]})
        opts = (body or {}).get("deleteOptions") or {}
        c.delete(PODS, ns, name, opts, dry_run=dry_run)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def review(r: Resource, body: dict) -> dict:
    """Reviews are answered, not stored: everyone is the admin user and everything is allowed."""
    out = copy.deepcopy(body)
    out["apiVersion"], out["kind"] = r.api_version, r.kind
    out.setdefault("metadata", {})["creationTimestamp"] = None
    if r.kind == "SelfSubjectAccessReview":
        out["status"] = {"allowed": True, "reason": "opsbook test server allows everything"}
    elif r.kind == "SelfSubjectRulesReview":
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
    else:
        out["status"] = {"userInfo": copy.deepcopy(TEST_USER)}
    return out
