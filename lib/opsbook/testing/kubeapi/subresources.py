"""The subresources with their own semantics: scale (an autoscaling/v1 Scale over spec.replicas),
PODS/binding, PODS/eviction (refused while a PodDisruptionBudget would be violated), the access
reviews, answered rather than stored, for the user making the request (as RBAC judges them, see
``authz``), and serviceaccounts/token (TokenRequest)."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from . import authz
from .authz_rbac import Attributes
from .errors import ApiError, bad_request, conflict, invalid, not_found
from .meta import now_iso
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


def _access(spec: dict) -> Attributes | None:
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (ra is None) == (nra is None):
        return None
    if ra is not None:
        return Attributes(verb=ra.get("verb") or "", group=ra.get("group") or "", version=ra.get("version") or "",
                          resource=ra.get("resource") or "", subresource=ra.get("subresource") or "",
                          name=ra.get("name") or "", namespace=ra.get("namespace") or "")
    nra = nra or {}
    return Attributes(verb=nra.get("verb") or "", resource_request=False, path=nra.get("path") or "")


def _rules_status(resolver: Any, namespace: str) -> dict:
    """SelfSubjectRulesReview's status: the RBAC rules of the user in the namespace, as RulesFor lists them."""
    if resolver is None:  # system:masters: the privileged-group authorizer's answer
        return {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
    rules, errors = resolver.rules_for(namespace)
    res_rules, url_rules = [], []
    for r in rules:
        if r.get("nonResourceURLs"):
            url_rules.append({"verbs": list(r.get("verbs") or []), "nonResourceURLs": list(r["nonResourceURLs"])})
        if r.get("resources"):
            out = {"verbs": list(r.get("verbs") or []), "apiGroups": list(r.get("apiGroups") or []),
                   "resources": list(r["resources"])}
            if r.get("resourceNames"):
                out["resourceNames"] = list(r["resourceNames"])
            res_rules.append(out)
    status: dict[str, Any] = {"resourceRules": res_rules, "nonResourceRules": url_rules, "incomplete": bool(errors)}
    if errors:
        status["evaluationError"] = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return status


def review(r: Resource, body: dict) -> dict:
    """Reviews are answered, not stored, for the user of the request: RBAC's verdict (``system:masters``
    may do everything, as its privileged-group authorizer says), its rules, or who it is."""
    user, resolver = authz.current()
    out = copy.deepcopy(body)
    out["apiVersion"], out["kind"] = r.api_version, r.kind
    out.setdefault("metadata", {})["creationTimestamp"] = None
    spec = out.get("spec") or {}
    if r.kind == "SelfSubjectAccessReview":
        a = _access(spec)
        if a is None:
            raise ApiError(422, "Invalid", f'{r.kind}.{r.group} "" is invalid: spec.resourceAttributes: Invalid '
                                           f'value: "null": exactly one of nonResourceAttributes or '
                                           f'resourceAttributes must be specified')
        allowed, reason = authz.can(resolver, a)
        out["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
    elif r.kind == "SelfSubjectRulesReview":
        if not spec.get("namespace"):
            raise bad_request("no namespace on request")
        out["status"] = _rules_status(resolver, spec["namespace"])
    else:
        out["status"] = {"userInfo": copy.deepcopy(TEST_USER) if resolver is None else user.info()}
    return out


TOKEN_REQUEST = Resource("authentication.k8s.io", "v1", "tokenrequests", "TokenRequest", True)
SERVICE_ACCOUNTS = res("v1", "serviceaccounts")
BOUND_KINDS = {"Pod": PODS, "Secret": res("v1", "secrets")}


def token_request(c: Cluster, ns: str, name: str, body: Any, dry_run: bool = False) -> dict:
    """POST serviceaccounts/NAME/token (pkg/registry/core/serviceaccount/storage/token.go): a token for the
    ServiceAccount, optionally bound to a Pod or Secret, that authenticates as the ServiceAccount while
    both exist. 422 for an expiry under 10 minutes, 404 for a missing ServiceAccount or bound object."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request was not a JSON object")
    spec = body.get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or 3600)
    tr_name = str((body.get("metadata") or {}).get("name") or "")
    if seconds < 600:
        raise invalid(TOKEN_REQUEST, tr_name, [("spec.expirationSeconds", "FieldValueInvalid",
                                                f"Invalid value: {seconds}: may not specify a duration less "
                                                f"than 10 minutes")])
    if seconds > 1 << 32:
        raise invalid(TOKEN_REQUEST, tr_name, [("spec.expirationSeconds", "FieldValueInvalid",
                                                f"Invalid value: {seconds}: may not specify a duration larger "
                                                f"than 2^32 seconds")])
    with c.lock:
        sa = c.raw(SERVICE_ACCOUNTS, ns, name)
        if sa is None:
            raise not_found(SERVICE_ACCOUNTS, name)
        ref = spec.get("boundObjectRef") or None
        bound = None
        if ref:
            kind = ref.get("kind") or ""
            if kind not in BOUND_KINDS:
                raise bad_request(f'cannot bind token for serviceaccount "{name}" to object of type '
                                  f'{ref.get("apiVersion") or "v1"}, Kind={kind}')
            bound = c.raw(BOUND_KINDS[kind], ns, ref.get("name") or "")
            if bound is None:
                raise not_found(BOUND_KINDS[kind], ref.get("name") or "")
            if ref.get("uid") and ref["uid"] != bound["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind} "{ref.get("name")}": the '
                               f'UID in the bound object reference ({ref["uid"]}) does not match the UID in record. '
                               f'The object might have been deleted and then recreated', {"name": ref.get("name"),
                                                                                          "kind": kind})
        audiences = list(spec.get("audiences") or authz.API_AUDIENCES)
        token, expires = ("", time.time() + seconds) if dry_run else authz.issue_token(
            c, sa, audiences=audiences, seconds=seconds, bound=bound)
    out_spec: dict[str, Any] = {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": ref}
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": out_spec, "status": {"token": token, "expirationTimestamp": now_iso(expires)}}
