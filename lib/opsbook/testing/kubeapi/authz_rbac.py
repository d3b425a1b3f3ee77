"""RBAC as kube-apiserver evaluates it, so that a test learns what a real cluster would refuse: which
bindings apply to a user, which rules they bring, whether a rule allows a request, and whether a user
may grant the rules a Role or a binding would carry (escalation prevention).

Ported from Kubernetes, with the same matching and the same texts:
plugin/pkg/auth/authorizer/rbac/rbac.go (RuleAllows, the "RBAC: allowed by ..." reason),
pkg/apis/rbac/v1/evaluation_helpers.go (VerbMatches, ResourceMatches with ``*/subresource``,
NonResourceURLMatches), pkg/registry/rbac/validation/rule.go (VisitRulesFor, appliesToUser,
ConfirmNoEscalation and its "is attempting to grant RBAC permissions not currently held" message),
k8s.io/component-helpers/auth/rbac/validation/policy_comparator.go (Covers, BreakdownRule) and
pkg/registry/rbac/validation/policy_compact.go (CompactRules)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .resources import res
from .selectors import match_selector_object

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = res(f"{RBAC_GROUP}/v1", "roles")
ROLE_BINDINGS = res(f"{RBAC_GROUP}/v1", "rolebindings")
CLUSTER_ROLES = res(f"{RBAC_GROUP}/v1", "clusterroles")
CLUSTER_ROLE_BINDINGS = res(f"{RBAC_GROUP}/v1", "clusterrolebindings")
SA_PREFIX = "system:serviceaccount:"
FULL_AUTHORITY = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]


@dataclass(frozen=True)
class User:
    """Who a request is (user.Info): name, groups, uid and extra as authentication found them."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def info(self) -> dict[str, Any]:
        """As a SelfSubjectReview's ``status.userInfo`` shows it."""
        out: dict[str, Any] = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


@dataclass(frozen=True)
class Attributes:
    """What a request asks (authorizer.Attributes): a verb on a resource, or on a non-resource path."""

    verb: str
    resource_request: bool = True
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""


# ----------------------------------------------------------------------------------------- matching

def verb_matches(rule: dict, verb: str) -> bool:
    return any(v in ("*", verb) for v in rule.get("verbs") or [])


def rule_allows(a: Attributes, rule: dict) -> bool:
    if not verb_matches(rule, a.verb):
        return False
    if not a.resource_request:
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u.rstrip("*")))
                   for u in rule.get("nonResourceURLs") or [])
    if not any(g in ("*", a.group) for g in rule.get("apiGroups") or []):
        return False
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    if not any(r in ("*", combined) or (a.subresource and r == f"*/{a.subresource}")
               for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def _applies(user: User, subject: dict, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace
        return bool(ns) and user.name == f"{SA_PREFIX}{ns}:{name}"
    return False


def _describe(subject: dict, namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _aggregate(errors: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message as it is, several deduplicated in brackets."""
    seen = list(dict.fromkeys(errors))
    return seen[0] if len(errors) == 1 or len(seen) == 1 else "[" + ", ".join(seen) + "]"


# ------------------------------------------------------------------------------------------ resolver

@dataclass
class Resolver:
    """One request's view of RBAC for one user: the rules that apply in a namespace are gathered once
    (cluster-wide ones shared by every namespace) and reused by every check the request makes."""

    cluster: Any
    user: User
    _scoped: dict[str, tuple[list[tuple[str, dict]], list[str]]] = field(default_factory=dict)

    def _role_rules(self, ref: dict, namespace: str, registry: bool) -> list[dict]:
        """The rules of a binding's roleRef; KeyError(message) when the role does not exist (the
        authorizer's informers say ``role.rbac...``, the registry that escalation checks use ``roles.rbac...``)."""
        c, kind, name = self.cluster, ref.get("kind"), ref.get("name") or ""
        if kind == "Role":
            obj = c.raw(ROLES, namespace, name)
        elif kind == "ClusterRole":
            obj = c.raw(CLUSTER_ROLES, "", name)
        else:
            raise KeyError(f'unsupported role reference kind: "{kind}"')
        if obj is None:
            noun = (kind or "").lower() + ("s" if registry else "")
            raise KeyError(f'{noun}.{RBAC_GROUP} "{name}" not found')
        if kind == "ClusterRole" and obj.get("aggregationRule"):
            return aggregated_rules(c, obj)
        return list(obj.get("rules") or [])

    def visit(self, namespace: str, registry: bool = False) -> tuple[list[tuple[str, dict]], list[str]]:
        """(source, rule) pairs in the order kube-apiserver visits them, and the resolution errors."""
        key = f"{int(registry)}/{namespace}"
        if key in self._scoped:
            return self._scoped[key]
        c = self.cluster
        out: list[tuple[str, dict]] = []
        errors: list[str] = []
        with c.lock:
            if namespace:
                base = self.visit("", registry)
                out, errors = list(base[0]), list(base[1])
                bindings = [(b, namespace) for b in c.objects(ROLE_BINDINGS, namespace)]
            else:
                bindings = [(b, "") for b in c.objects(CLUSTER_ROLE_BINDINGS)]
            for b, ns in bindings:
                subject = next((s for s in b.get("subjects") or [] if _applies(self.user, s, ns)), None)
                if subject is None:
                    continue
                ref = b.get("roleRef") or {}
                try:
                    rules = self._role_rules(ref, ns, registry)
                except KeyError as e:
                    errors.append(str(e.args[0]))
                    continue
                m = b["metadata"]
                source = (f'RoleBinding "{m["name"]}/{ns}"' if ns else f'ClusterRoleBinding "{m["name"]}"') + \
                    f' of {ref.get("kind")} "{ref.get("name")}" to {_describe(subject, ns)}'
                out += [(source, r) for r in rules]
        self._scoped[key] = (out, errors)
        return out, errors

    def rules_for(self, namespace: str, registry: bool = False) -> tuple[list[dict], list[str]]:
        pairs, errors = self.visit(namespace, registry)
        return [r for _, r in pairs], errors

    def authorize(self, a: Attributes) -> tuple[bool, str]:
        """RBACAuthorizer.Authorize: (allowed, reason)."""
        pairs, errors = self.visit(a.namespace)
        for source, rule in pairs:
            if rule_allows(a, rule):
                return True, f"RBAC: allowed by {source}"
        return False, f"RBAC: {_aggregate(errors)}" if errors else ""

    def confirm_no_escalation(self, rules: list[dict], namespace: str) -> str | None:
        """None if the user holds every permission of ``rules`` in ``namespace``, else the refusal."""
        owner, errors = self.rules_for(namespace, registry=True)
        missing = [sub for rule in rules for sub in breakdown(rule) if not any(covers(o, sub) for o in owner)]
        if not missing:
            return None
        lines = sorted({compact_string(r) for r in compact(missing)})
        msg = (f'user "{self.user.name}" (groups={_go_list(self.user.groups)}) is attempting to grant RBAC '
               f"permissions not currently held:\n" + "\n".join(lines))
        if errors:
            msg += f"; resolution errors: [{_aggregate(errors)}]"
        return msg


def aggregated_rules(c: Any, role: dict, seen: frozenset[str] = frozenset()) -> list[dict]:
    """The rules the clusterrole-aggregation controller gathers into an aggregated ClusterRole: those of
    every ClusterRole its selectors match (themselves gathered when aggregated), without duplicates."""
    name = role["metadata"]["name"]
    out: list[dict] = []
    for sel in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
        for other in sorted(c.objects(CLUSTER_ROLES), key=lambda o: o["metadata"]["name"]):
            oname = other["metadata"]["name"]
            if oname == name or oname in seen or not match_selector_object(sel, other["metadata"].get("labels")):
                continue
            rules = aggregated_rules(c, other, seen | {name}) if other.get("aggregationRule") else \
                other.get("rules") or []
            out += [r for r in rules if r not in out]
    return out


# ---------------------------------------------------------------------------------------- coverage

def breakdown(rule: dict) -> list[dict]:
    """A rule as atomic rules: one group, resource, verb (and name) each; URLs with one verb each."""
    out = []
    names = rule.get("resourceNames") or []
    for g in rule.get("apiGroups") or []:
        for r in rule.get("resources") or []:
            for v in rule.get("verbs") or []:
                if names:
                    out += [{"apiGroups": [g], "resources": [r], "verbs": [v], "resourceNames": [n]} for n in names]
                else:
                    out.append({"apiGroups": [g], "resources": [r], "verbs": [v]})
    for u in rule.get("nonResourceURLs") or []:
        out += [{"nonResourceURLs": [u], "verbs": [v]} for v in rule.get("verbs") or []]
    return out


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if "*" in owner or all(w in owner for w in wanted):
        return True
    return all(w in owner or ("/" in w and "*/" + w.split("/", 1)[1] in owner) for w in wanted)


def covers(owner: dict, sub: dict) -> bool:
    """ruleCovers: whether ``owner`` (any rule) grants everything ``sub`` (an atomic rule) does."""
    def has_all(have: list[str], want: list[str]) -> bool:
        return all(w in have for w in want)

    ov, og = owner.get("verbs") or [], owner.get("apiGroups") or []
    if not ("*" in ov or has_all(ov, sub.get("verbs") or [])):
        return False
    if not ("*" in og or has_all(og, sub.get("apiGroups") or [])):
        return False
    if not _resources_cover(owner.get("resources") or [], sub.get("resources") or []):
        return False
    ourls = owner.get("nonResourceURLs") or []
    for u in sub.get("nonResourceURLs") or []:
        if not any(o == u or (o.endswith("*") and u.startswith(o.rstrip("*"))) for o in ourls):
            return False
    onames, snames = owner.get("resourceNames") or [], sub.get("resourceNames") or []
    return not onames if not snames else (not onames or has_all(onames, snames))


def compact(rules: list[dict]) -> list[dict]:
    """CompactRules: rules over one group and one resource (and at most one name) merged, verbs joined."""
    out: list[dict] = []
    simple: dict[tuple, dict] = {}
    for r in rules:
        names = r.get("resourceNames") or []
        if (len(names) > 1 or r.get("nonResourceURLs") or len(r.get("apiGroups") or []) != 1
                or len(r.get("resources") or []) != 1):
            out.append(r)
            continue
        key = (r["apiGroups"][0], r["resources"][0], tuple(names))
        if key in simple:
            simple[key]["verbs"] += [v for v in r.get("verbs") or [] if v not in simple[key]["verbs"]]
        else:
            simple[key] = {**r, "verbs": list(r.get("verbs") or [])}
    return out + list(simple.values())


def _go_list(items: Any) -> str:
    """Go's ``%q`` of a []string: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(x) for x in items) + "]"


def compact_string(r: dict) -> str:
    """rbacv1helpers.CompactString: ``{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}``."""
    parts = []
    for key, label in (("apiGroups", "APIGroups"), ("resources", "Resources"), ("nonResourceURLs", "NonResourceURLs"),
                       ("resourceNames", "ResourceNames"), ("verbs", "Verbs")):
        if r.get(key):
            parts.append(f"{label}:{_go_list(r[key])}")
    return "{" + ", ".join(parts) + "}"
