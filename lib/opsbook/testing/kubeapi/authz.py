"""Authentication and authorization in front of every API request, as kube-apiserver does them, so
that a runbook granted too little is refused here as it would be on a real cluster.

Who: the admin token of the kubeconfig the server writes is a member of ``system:masters`` (allowed
everything, no RBAC evaluated: the admin path costs one comparison); a ServiceAccount token
(TokenRequest, or the ``data.token`` of a ``kubernetes.io/service-account-token`` Secret) is
``system:serviceaccount:NS:NAME`` while its ServiceAccount (and bound pod or Secret) still exist;
any other token is 401 Unauthorized; no token is ``system:anonymous``. ``Impersonate-User`` /
``Impersonate-Group`` headers are honoured for whoever may ``impersonate`` (``kubectl --as``).

What: RBAC (``authz_rbac``) over the request's attributes, derived from the URL exactly as
k8s.io/apiserver/pkg/endpoints/request/requestinfo.go does (verbs get/list/watch/create/update/patch/
delete/deletecollection, ``?watch=true`` and ``/watch/`` paths, ``fieldSelector=metadata.name=``
naming the object); a refusal is the real 403 Status. Writes of Roles and bindings are checked for
escalation, and a server-side apply that would create an object needs ``create`` as well as ``patch``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import resources as RS
from .authz_rbac import (
    CLUSTER_ROLES,
    FULL_AUTHORITY,
    RBAC_GROUP,
    ROLES,
    SA_PREFIX,
    Attributes,
    Resolver,
    User,
)
from .errors import ApiError

if TYPE_CHECKING:
    from .store import Cluster

ADMIN_TOKEN = "opsbook-test-token"
ADMIN_HEADER = f"Bearer {ADMIN_TOKEN}"
ADMIN = User("opsbook-test-admin", ("system:masters", "system:authenticated"))
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
MASTERS = "system:masters"
# the API server's audiences and issuer (kind's and kubeadm's defaults): a token for another audience
# does not authenticate to the API
API_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)
ISSUER = API_AUDIENCES[0]
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
RBAC_KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
SAS = RS.res("v1", "serviceaccounts")
SECRETS = RS.res("v1", "secrets")
PODS = RS.res("v1", "pods")
NODES = RS.res("v1", "nodes")
_keys: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_keys_lock = threading.Lock()
_current = threading.local()  # the request being handled by this thread: (User, Resolver) or None (admin)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


# ------------------------------------------------------------------------------------------ tokens

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(c: Cluster) -> bytes:
    with _keys_lock:
        if c not in _keys:
            _keys[c] = os.urandom(32)
        return _keys[c]


def _sign(c: Cluster, claims: dict[str, Any]) -> str:
    key = _key(c)
    head = _b64(json.dumps({"alg": "HS256", "kid": hashlib.sha256(key).hexdigest()[:16]}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _claims(c: Cluster, token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        sig = _unb64(parts[2])
        if not hmac.compare_digest(sig, hmac.new(_key(c), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()):
            return None
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def issue_token(c: Cluster, sa: dict, *, audiences: list[str] | None = None, seconds: int = 3600,
                bound: dict | None = None, node: dict | None = None) -> tuple[str, float]:
    """A TokenRequest token for ServiceAccount ``sa`` (bound to a Pod or Secret when ``bound`` is that
    object): (token, expiry). Its claims are a real bound token's; it is signed with this server's key."""
    now = int(time.time())
    m = sa["metadata"]
    k8s: dict[str, Any] = {"namespace": m["namespace"], "serviceaccount": {"name": m["name"], "uid": m["uid"]}}
    if bound is not None:
        k8s[bound["kind"].lower()] = {"name": bound["metadata"]["name"], "uid": bound["metadata"]["uid"]}
    if node is not None:
        k8s["node"] = {"name": node["metadata"]["name"], "uid": node["metadata"]["uid"]}
    claims = {"aud": list(audiences or API_AUDIENCES), "exp": now + seconds, "iat": now, "iss": ISSUER,
              "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": now, "sub": f"{SA_PREFIX}{m['namespace']}:{m['name']}"}
    return _sign(c, claims), float(now + seconds)


def legacy_token(c: Cluster, secret: dict, sa: dict) -> str:
    """The token the legacy token controller writes into a ``kubernetes.io/service-account-token`` Secret
    (the claims of kube-controller-manager's legacy tokens, which never expire)."""
    p = "kubernetes.io/serviceaccount/"
    ns = sa["metadata"]["namespace"]
    return _sign(c, {"iss": "kubernetes/serviceaccount", p + "namespace": ns,
                     p + "secret.name": secret["metadata"]["name"], p + "service-account.name": sa["metadata"]["name"],
                     p + "service-account.uid": sa["metadata"]["uid"], "sub": f"{SA_PREFIX}{ns}:{sa['metadata']['name']}"})


def _sa_user(ns: str, sa: dict, extra: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> User:
    return User(f"{SA_PREFIX}{ns}:{sa['metadata']['name']}",
                ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"),
                uid=sa["metadata"]["uid"], extra=extra)


def _bound_user(c: Cluster, claims: dict[str, Any]) -> User | None:
    """The user of a TokenRequest token, if it is still valid: not expired, for the API's audience, and
    its ServiceAccount (and the pod or Secret it is bound to) still the same objects."""
    now = time.time()
    if float(claims.get("exp") or 0) < now or not set(claims.get("aud") or []) & set(API_AUDIENCES):
        return None
    k8s = claims.get("kubernetes.io") or {}
    ns, ref = k8s.get("namespace") or "", k8s.get("serviceaccount") or {}
    sa = c.raw(SAS, ns, ref.get("name") or "")
    if sa is None or sa["metadata"]["uid"] != ref.get("uid"):
        return None
    extra = [("authentication.kubernetes.io/credential-id", (f"JTI={claims.get('jti')}",))]
    for kind, r in (("pod", PODS), ("secret", SECRETS)):
        if kind in k8s:
            obj = c.raw(r, ns, k8s[kind].get("name") or "")
            if obj is None or obj["metadata"]["uid"] != k8s[kind].get("uid"):
                return None
            if kind == "pod":
                extra += [("authentication.kubernetes.io/pod-name", (k8s[kind]["name"],)),
                          ("authentication.kubernetes.io/pod-uid", (k8s[kind]["uid"],))]
    if "node" in k8s:
        extra += [("authentication.kubernetes.io/node-name", (k8s["node"]["name"],)),
                  ("authentication.kubernetes.io/node-uid", (k8s["node"]["uid"],))]
    return _sa_user(ns, sa, tuple(sorted(extra)))


def _secret_user(c: Cluster, token: str) -> User | None:
    """The user of a token kept in a ServiceAccount token Secret, looked up now: the Secret must still hold
    it and its ServiceAccount (by name, and by uid when the Secret records one) must still exist."""
    wanted = token.encode()
    for s in c.objects(SECRETS):
        if s.get("type") != SA_TOKEN_TYPE:
            continue
        try:
            held = base64.b64decode((s.get("data") or {}).get("token") or "")
        except (ValueError, binascii.Error):
            continue
        if not held or not hmac.compare_digest(held, wanted):
            continue
        ann = s["metadata"].get("annotations") or {}
        ns = s["metadata"]["namespace"]
        sa = c.raw(SAS, ns, ann.get("kubernetes.io/service-account.name") or "")
        uid = ann.get("kubernetes.io/service-account.uid")
        if sa is not None and (not uid or uid == sa["metadata"]["uid"]):
            return _sa_user(ns, sa)
    return None


def authenticate(c: Cluster, header: str | None) -> User:
    """The user of a request's ``Authorization`` header; 401 for a bearer token that is not (or no
    longer) valid; no bearer token is the anonymous user."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return ANONYMOUS
    if token == ADMIN_TOKEN:
        return ADMIN
    with c.lock:
        claims = _claims(c, token)
        user = None
        if claims is not None and "kubernetes.io" in claims:
            user = _bound_user(c, claims)
        elif claims is None or claims.get("iss") == "kubernetes/serviceaccount":
            user = _secret_user(c, token)
    if user is None:
        raise unauthorized()
    return user


# -------------------------------------------------------------------------------------- attributes

def request_attributes(method: str, path: str, query: dict[str, str]) -> Attributes:
    """RequestInfoFactory.NewRequestInfo: what a request asks, from its method, path and query."""
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    plain = Attributes(verb=method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return plain
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(method, "")
    if rest[0] in ("watch", "proxy"):
        if len(rest) < 2:
            return Attributes(verb=rest[0], group=group, version=version, path=path)
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "false").lower() in ("true", "1", "") and "watch" in query else "list"
        sel = [t.strip() for t in (query.get("fieldSelector") or "").split(",") if t.strip()]
        for term in sel:
            key, op, value = term.replace("==", "=").partition("=")
            if op and key.strip() == "metadata.name" and not key.endswith("!"):
                name = value.strip()
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, group=group, version=version, resource=resource, subresource=sub, name=name,
                      namespace=namespace, path=path)


def forbidden(a: Attributes, user: User, reason: str = "") -> ApiError:
    """The 403 of responsewriters.Forbidden (k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/
    errors.go): ``pods is forbidden: User "u" cannot list resource "pods" in API group "" in the namespace "ns"``."""
    if not a.resource_request:
        msg = f'User "{user.name}" cannot {a.verb} path "{a.path}"'
    else:
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        msg = f'User "{user.name}" cannot {a.verb} resource "{res}" in API group "{a.group}" {where}'
    msg = msg.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + (f": {reason}" if reason else "")
    if not a.resource_request:
        return ApiError(403, "Forbidden", f"forbidden: {msg}", {})
    return _forbidden_object(a.group, a.resource, a.name, msg)


def _forbidden_object(group: str, resource: str, name: str, msg: str) -> ApiError:
    """apierrors.NewForbidden(GroupResource, name, err)."""
    qualified = f"{resource}.{group}" if group else resource
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    head = f'{qualified} "{name}" is forbidden' if name else f"{qualified} is forbidden"
    return ApiError(403, "Forbidden", f"{head}: {msg}", details)


# ------------------------------------------------------------------------------------------- guard

def current() -> tuple[User, Resolver | None]:
    """Who the request this thread handles is; the resolver is None for a ``system:masters`` member."""
    state = getattr(_current, "state", None)
    return state if state is not None else (ADMIN, None)


def can(resolver: Resolver | None, a: Attributes) -> tuple[bool, str]:
    if resolver is None or MASTERS in resolver.user.groups:
        return True, ""
    return resolver.authorize(a)


def _impersonate(c: Cluster, user: User, resolver: Resolver, headers: Any) -> User:
    """The Impersonate-User / Impersonate-Group headers (filters/impersonation.go): each needs the
    ``impersonate`` verb on users, groups or serviceaccounts."""
    name = headers.get("Impersonate-User")
    groups = list(headers.get_all("Impersonate-Group") or [])
    if not name:
        raise ApiError(500, "InternalError", "Internal error occurred: requested group impersonation without "
                       "user impersonation")
    checks = []
    if name.startswith(SA_PREFIX) and name.count(":") == 3:
        ns, sa = name[len(SA_PREFIX):].split(":")
        checks.append(Attributes(verb="impersonate", resource="serviceaccounts", namespace=ns, name=sa))
        if not groups:
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    else:
        checks.append(Attributes(verb="impersonate", resource="users", name=name))
    checks += [Attributes(verb="impersonate", resource="groups", name=g) for g in groups]
    for a in checks:
        allowed, reason = can(resolver, a)
        if not allowed:
            raise forbidden(a, user, reason)
    if name != ANONYMOUS.name and not {"system:authenticated", "system:unauthenticated"} & set(groups):
        groups.append("system:authenticated")
    return User(name, tuple(groups), uid=headers.get("Impersonate-Uid") or "")


def guard(h: Any, method: str, path: str) -> None:
    """Authenticate and authorize the request ``h`` (the server's handler) is about to serve: returns,
    or raises the 401/403 ApiError a real API server would answer."""
    headers = h.headers
    if headers.get("Authorization") == ADMIN_HEADER and "Impersonate-User" not in headers:
        _current.state = None
        return
    _current.state = None
    c = h.server.cluster
    user = authenticate(c, headers.get("Authorization"))
    resolver = Resolver(c, user)
    if "Impersonate-User" in headers or "Impersonate-Group" in headers:
        user = _impersonate(c, user, resolver, headers)
        resolver = Resolver(c, user)
    _current.state = (user, resolver)
    if MASTERS in user.groups:
        return
    a = request_attributes(method, path, h.q)
    allowed, reason = resolver.authorize(a)
    if not allowed:
        raise forbidden(a, user, reason)
    if not a.resource_request or a.subresource or a.verb not in ("create", "update", "patch"):
        return
    r = RS.lookup(a.group, a.version, a.resource)
    if r is None:
        return
    ns = a.namespace if r.namespaced else ""
    if r.group == RBAC_GROUP and r.plural in RBAC_KINDS:
        _no_escalation(h, c, resolver, r, a, ns)
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if a.verb == "patch" and ctype == "application/apply-patch+yaml":
        with c.lock:
            missing = c.raw(r, ns, a.name) is None
        if missing:  # handlers/patch.go + update.go withAuthorization: an apply that creates is also a create
            allowed, reason = resolver.authorize(Attributes(
                verb="create", group=a.group, version=a.version, resource=a.resource, name=a.name, namespace=ns))
            if not allowed:
                raise _forbidden_object(a.group, a.resource, a.name, reason)


def _new_object(h: Any, c: Cluster, r: RS.Resource, a: Attributes, ns: str) -> dict | None:
    """The object a create, update or patch would store (a patch is computed as a dry run)."""
    if a.verb != "patch":
        body = h._body_json()
        return body if isinstance(body, dict) else None
    saved = list(getattr(c.tl, "warnings", None) or [])
    try:
        ct = h.headers.get("Content-Type") or ""
        obj, _ = c.patch(r, ns, a.name, ct, h.body, dry_run=True, manager=h.q.get("fieldManager") or "authz",
                         force=True, validation="Ignore")
        return obj
    finally:
        c.tl.warnings = saved


def _only_gc_fields(old: dict, new: dict) -> bool:
    """rbacregistry.IsOnlyMutatingGCFields: nothing but ownerReferences and finalizers changes."""
    def strip(o: dict) -> dict:
        m = {k: v for k, v in (o.get("metadata") or {}).items()
             if k not in ("ownerReferences", "finalizers", "resourceVersion", "managedFields", "generation")}
        return {**{k: v for k, v in o.items() if k not in ("apiVersion", "kind")}, "metadata": m}
    return strip(old) == strip(new)


def _no_escalation(h: Any, c: Cluster, resolver: Resolver, r: RS.Resource, a: Attributes, ns: str) -> None:
    """The policy-based storage of roles and bindings (pkg/registry/rbac/*/policybased): a user may only
    grant what they hold, unless they may ``escalate`` (roles) or ``bind`` (the role a binding names)."""
    new = _new_object(h, c, r, a, ns)
    if new is None:
        return
    name = a.name or str((new.get("metadata") or {}).get("name") or "")
    with c.lock:
        old = c.raw(r, ns, name) if a.verb != "create" else None
        if old is not None and _only_gc_fields(old, new):
            return
        if r.plural in ("roles", "clusterroles"):
            if resolver.authorize(Attributes(verb="escalate", group=RBAC_GROUP, version="*", resource=r.plural,
                                             name=name, namespace=ns))[0]:
                return
            msg = resolver.confirm_no_escalation(list(new.get("rules") or []), ns)
            if msg is None and r.plural == "clusterroles" and new.get("aggregationRule") and \
                    resolver.confirm_no_escalation(FULL_AUTHORITY, "") is not None:
                msg = "must have cluster-admin privileges to use the aggregationRule"
        else:
            ref = new.get("roleRef") or {}
            target = {"Role": ROLES, "ClusterRole": CLUSTER_ROLES}.get(ref.get("kind") or "")
            if target is None:
                return  # validation refuses the roleRef
            if resolver.authorize(Attributes(verb="bind", group=ref.get("apiGroup") or "", resource=target.plural,
                                             name=ref.get("name") or "", namespace=ns))[0]:
                return
            try:
                rules = resolver._role_rules(ref, ns, registry=True)
            except KeyError as e:
                raise ApiError(404, "NotFound", str(e.args[0]),
                               {"name": ref.get("name") or "", "group": RBAC_GROUP, "kind": target.plural}) from None
            msg = resolver.confirm_no_escalation(rules, ns)
    if msg is not None:
        raise _forbidden_object(RBAC_GROUP, r.plural, name, msg)
