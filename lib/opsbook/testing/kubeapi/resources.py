"""The resource table: what the server serves, as the discovery documents describe it."""

from __future__ import annotations

from dataclasses import dataclass

STD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
NS_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STD_VERBS
    # subresources served: status, scale, log, finalize
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # kinds whose registry strategy sets metadata.generation (bumped on spec changes)
    has_spec: bool = True
    # delete returns the object (true) or a Status (false)
    return_deleted: bool = False
    # defined by a CustomResourceDefinition
    crd: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """`pods`, `deployments.apps`: the name used in Status messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


R = Resource
RESOURCES: list[Resource] = [
    # core/v1
    R("", "v1", "namespaces", "Namespace", False, ("ns",), NS_VERBS, ("status", "finalize"), has_spec=False,
      return_deleted=True),
    R("", "v1", "nodes", "Node", False, ("no",), STD_VERBS, ("status",), has_spec=False),
    R("", "v1", "pods", "Pod", True, ("po",), STD_VERBS, ("status", "log", "binding", "eviction"), ("all",),
      return_deleted=True),
    R("", "v1", "services", "Service", True, ("svc",), NS_VERBS + ("deletecollection",), ("status",), ("all",),
      has_spec=False, return_deleted=True),
    R("", "v1", "endpoints", "Endpoints", True, ("ep",), has_spec=False),
    R("", "v1", "configmaps", "ConfigMap", True, ("cm",), has_spec=False),
    R("", "v1", "secrets", "Secret", True, (), has_spec=False),
    R("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), STD_VERBS, ("token",), has_spec=False),
    R("", "v1", "events", "Event", True, ("ev",), has_spec=False),
    R("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), STD_VERBS, ("status",),
      has_spec=False),
    R("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), STD_VERBS, ("status",), has_spec=False),
    # apps/v1
    R("apps", "v1", "deployments", "Deployment", True, ("deploy",), STD_VERBS, ("status", "scale"), ("all",)),
    R("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), STD_VERBS, ("status", "scale"), ("all",)),
    R("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), STD_VERBS, ("status",), ("all",)),
    R("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), STD_VERBS, ("status", "scale"), ("all",)),
    R("apps", "v1", "controllerrevisions", "ControllerRevision", True, (), has_spec=False),
    # batch/v1
    R("batch", "v1", "jobs", "Job", True, (), STD_VERBS, ("status",), ("all",)),
    R("batch", "v1", "cronjobs", "CronJob", True, ("cj",), STD_VERBS, ("status",), ("all",)),
    # networking.k8s.io/v1
    R("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), STD_VERBS, ("status",)),
    R("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    # rbac.authorization.k8s.io/v1
    R("rbac.authorization.k8s.io", "v1", "roles", "Role", True, has_spec=False),
    R("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, has_spec=False),
    R("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, has_spec=False),
    R("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, has_spec=False),
    # coordination.k8s.io/v1
    R("coordination.k8s.io", "v1", "leases", "Lease", True, has_spec=False),
    # events.k8s.io/v1
    R("events.k8s.io", "v1", "events", "Event", True, ("ev",), has_spec=False),
    # authorization.k8s.io/v1
    R("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, (), ("create",)),
    R("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False, (), ("create",)),
    # authentication.k8s.io/v1
    R("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, (), ("create",)),
    # discovery.k8s.io/v1
    R("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, has_spec=False),
    # storage.k8s.io/v1
    R("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",), has_spec=False),
    # autoscaling/v2
    R("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ("hpa",), STD_VERBS,
      ("status",), ("all",)),
    # apiextensions.k8s.io/v1
    R("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, ("crd", "crds"),
      STD_VERBS, ("status",), ("api-extensions",)),
    # policy/v1
    R("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), STD_VERBS, ("status",)),
]

# group order as a real server lists it in /apis
GROUP_ORDER = [
    "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch",
    "networking.k8s.io",
    "rbac.authorization.k8s.io", "policy", "coordination.k8s.io", "discovery.k8s.io", "storage.k8s.io",
    "apiextensions.k8s.io",
]

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}


def register(r: Resource) -> Resource | None:
    """Serve a (custom) resource; returns the Resource it replaces for the same path, if any."""
    old = BY_PATH.get((r.group, r.version, r.plural))
    if old is not None:
        RESOURCES.remove(old)
    RESOURCES.append(r)
    BY_PATH[(r.group, r.version, r.plural)] = r
    if r.group and r.group not in GROUP_ORDER:
        GROUP_ORDER.append(r.group)
    return old


def unregister(r: Resource) -> None:
    if r in RESOURCES:
        RESOURCES.remove(r)
    BY_PATH.pop((r.group, r.version, r.plural), None)


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return BY_PATH.get((group, version, plural))


def res(api_version: str, plural: str) -> Resource:
    group, _, version = api_version.rpartition("/")
    r = BY_PATH[(group, version, plural)]
    return r


def group_versions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group:
            out.setdefault(r.group, [])
            if r.version not in out[r.group]:
                out[r.group].append(r.version)
    return out


SUBRESOURCE_KINDS = {
    "status": None,  # same kind as parent
    "finalize": None,
    "log": None,
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
}
SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "finalize": ["update"],
    "log": ["get"],
    "scale": ["get", "patch", "update"],
    "binding": ["create"],
    "eviction": ["create"],
    "token": ["create"],
}


def api_resource_list(group: str, version: str) -> dict:
    items = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": sorted(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        items.append(entry)
        for sub in r.subresources:
            s = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": SUBRESOURCE_VERBS[sub]}
            gk = SUBRESOURCE_KINDS[sub]
            if gk:
                s["group"], s["version"], s["kind"] = gk
                if not gk[0]:
                    del s["group"], s["version"]
            items.append(s)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": items}


def api_group_list() -> dict:
    gvs = group_versions()
    groups = []
    for g in GROUP_ORDER:
        if g not in gvs:
            continue
        versions = [{"groupVersion": f"{g}/{v}", "version": v} for v in gvs[g]]
        groups.append({"name": g, "versions": versions, "preferredVersion": versions[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def aggregated_discovery(legacy: bool) -> dict:
    """apidiscovery.k8s.io/v2 APIGroupDiscoveryList for /api (legacy) or /apis."""
    if legacy:
        groups = [("", ["v1"])]
    else:
        gvs = group_versions()
        groups = [(g, gvs[g]) for g in GROUP_ORDER if g in gvs]
    items = []
    for g, versions in groups:
        vers = []
        for v in versions:
            resources = []
            for r in RESOURCES:
                if r.group != g or r.version != v:
                    continue
                entry: dict = {"resource": r.plural,
                               "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                               "scope": "Namespaced" if r.namespaced else "Cluster",
                               "singularResource": r.singular, "verbs": sorted(r.verbs)}
                if r.short_names:
                    entry["shortNames"] = list(r.short_names)
                if r.categories:
                    entry["categories"] = list(r.categories)
                subs = []
                for sub in r.subresources:
                    gk = SUBRESOURCE_KINDS[sub] or (r.group, r.version, r.kind)
                    subs.append({"subresource": sub,
                                 "responseKind": {"group": gk[0], "version": gk[1], "kind": gk[2]},
                                 "verbs": SUBRESOURCE_VERBS[sub]})
                if subs:
                    entry["subresources"] = subs
                resources.append(entry)
            vers.append({"version": v, "resources": resources, "freshness": "Current"})
        meta: dict = {"creationTimestamp": None}
        if g:
            meta["name"] = g
        items.append({"metadata": meta, "versions": vers})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}
