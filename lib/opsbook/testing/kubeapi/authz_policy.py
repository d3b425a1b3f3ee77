"""The ClusterRoles and ClusterRoleBindings kube-apiserver creates at start (its bootstrap policy),
the ones a test or a runbook can rely on: ``cluster-admin`` (bound to ``system:masters``), the
user-facing ``admin`` / ``edit`` / ``view`` (aggregated from the ``system:aggregate-to-*`` roles), and
what every authenticated user gets (``system:discovery``, ``system:basic-user``,
``system:public-info-viewer``).

Transcribed from Kubernetes' own record of that policy,
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/cluster-roles.yaml (kubernetes/kubernetes),
keeping only the rules over what this server serves or a chart commonly names; the bindings are those of
bootstrappolicy/policy.go ClusterRoleBindings() (discovery and basic-user: authenticated users only,
since v1.14; public-info-viewer: everyone)."""

from __future__ import annotations

from typing import Any

RBAC_GROUP = "rbac.authorization.k8s.io"
CRUD = ["create", "delete", "deletecollection", "patch", "update"]
READ = ["get", "list", "watch"]
ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _urls(urls: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"nonResourceURLs": urls, "verbs": verbs}


AGGREGATE_TO_ADMIN = [
    _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    _rule([RBAC_GROUP], ["rolebindings", "roles"], ALL),
]
AGGREGATE_TO_EDIT = [
    _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], READ),
    _rule([""], ["serviceaccounts"], ["impersonate"]),
    _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], CRUD),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                 "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], CRUD),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule(["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                     "replicasets/scale", "statefulsets", "statefulsets/scale"], CRUD),
    _rule(["autoscaling"], ["horizontalpodautoscalers"], CRUD),
    _rule(["batch"], ["cronjobs", "jobs"], CRUD),
    _rule(["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses",
                           "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale"],
          CRUD),
    _rule(["policy"], ["poddisruptionbudgets"], CRUD),
    _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], CRUD),
    _rule(["coordination.k8s.io"], ["leases"], ALL),
]
AGGREGATE_TO_VIEW = [
    _rule([""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                 "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                 "services/status"], READ),
    _rule([""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                 "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], READ),
    _rule([""], ["namespaces"], READ),
    _rule(["discovery.k8s.io"], ["endpointslices"], READ),
    _rule(["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                     "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
                     "statefulsets/scale", "statefulsets/status"], READ),
    _rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
    _rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
    _rule(["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                           "deployments/status", "ingresses", "ingresses/status", "networkpolicies", "replicasets",
                           "replicasets/scale", "replicasets/status", "replicationcontrollers/scale"], READ),
    _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
    _rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], READ),
]

# name -> (extra labels, rules or None when aggregated, the aggregate-to label it gathers)
CLUSTER_ROLES: dict[str, tuple[dict[str, str], list[dict[str, Any]] | None, str | None]] = {
    "cluster-admin": ({}, [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])], None),
    "admin": ({}, None, "admin"),
    "edit": ({f"{RBAC_GROUP}/aggregate-to-admin": "true"}, None, "edit"),
    "view": ({f"{RBAC_GROUP}/aggregate-to-edit": "true"}, None, "view"),
    "system:aggregate-to-admin": ({f"{RBAC_GROUP}/aggregate-to-admin": "true"}, AGGREGATE_TO_ADMIN, None),
    "system:aggregate-to-edit": ({f"{RBAC_GROUP}/aggregate-to-edit": "true"}, AGGREGATE_TO_EDIT, None),
    "system:aggregate-to-view": ({f"{RBAC_GROUP}/aggregate-to-view": "true"}, AGGREGATE_TO_VIEW, None),
    "system:basic-user": ({}, [_rule(["authorization.k8s.io"], ["selfsubjectaccessreviews",
                                                                 "selfsubjectrulesreviews"], ["create"]),
                               _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"])], None),
    "system:discovery": ({}, [_urls(["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                     "/openapi/*", "/readyz", "/version", "/version/"], ["get"])], None),
    "system:public-info-viewer": ({}, [_urls(["/healthz", "/livez", "/readyz", "/version", "/version/"],
                                             ["get"])], None),
}
CLUSTER_ROLE_BINDINGS: dict[str, list[str]] = {  # binding (named after its ClusterRole) -> groups bound
    "cluster-admin": ["system:masters"],
    "system:basic-user": ["system:authenticated"],
    "system:discovery": ["system:authenticated"],
    "system:public-info-viewer": ["system:authenticated", "system:unauthenticated"],
}
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def cluster_roles() -> list[dict[str, Any]]:
    """The bootstrap ClusterRoles as objects, aggregated ones carrying their rules already gathered (as
    the clusterrole-aggregation controller leaves them)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (labels, rules, gathers) in CLUSTER_ROLES.items():
        obj: dict[str, Any] = {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                               "metadata": {"name": name, "labels": {**BOOTSTRAP_LABELS, **labels},
                                            "annotations": dict(AUTOUPDATE)},
                               "rules": rules or []}
        if gathers:
            obj["aggregationRule"] = {"clusterRoleSelectors": [
                {"matchLabels": {f"{RBAC_GROUP}/aggregate-to-{gathers}": "true"}}]}
        out[name] = obj
    for name in ("view", "edit", "admin"):  # each gathers the one before it
        gathered: list[dict[str, Any]] = []
        want = out[name]["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
        for other in sorted(out):
            labels = out[other]["metadata"]["labels"]
            if other != name and all(labels.get(k) == v for k, v in want.items()):
                gathered += [r for r in out[other]["rules"] if r not in gathered]
        out[name]["rules"] = gathered
    return list(out.values())


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [{"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABELS), "annotations": dict(AUTOUPDATE)},
             "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
             "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups]}
            for name, groups in CLUSTER_ROLE_BINDINGS.items()]
