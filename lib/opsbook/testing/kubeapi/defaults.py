"""Defaulting: the fields the API server and its admission plugins fill in on create and update, so
that what a client reads back looks like what a real cluster returns (kubectl, helm and the runbooks
compare against those values)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

from .resources import Resource, res

if TYPE_CHECKING:
    from .store import Cluster

STORAGE_CLASSES = res("storage.k8s.io/v1", "storageclasses")


def set_defaults(c: Cluster, r: Resource, obj: dict, old: dict | None) -> None:
    """Fill in ``obj`` (being created when ``old`` is None, else replacing ``old``) in place."""
    fill = _BY_KIND.get(r.kind)
    if fill is not None:
        fill(c, obj, old)


def pod_spec_defaults(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if "serviceAccountName" in spec or "serviceAccount" not in spec:
        spec.setdefault("serviceAccountName", "default")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        if "imagePullPolicy" not in c:
            c["imagePullPolicy"] = "Always" if (":" not in tag or tag.endswith(":latest")) and "@" not in tag \
                else "IfNotPresent"
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def qos_class(spec: dict) -> str:
    res_ = [c.get("resources") or {} for c in spec.get("containers") or [] if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in res_):
        return "BestEffort"
    if all((r.get("limits") or {}).get("cpu") and (r.get("limits") or {}).get("memory") and
           (not r.get("requests") or r.get("requests") == r.get("limits")) for r in res_):
        return "Guaranteed"
    return "Burstable"


# ---------------------------------------------------------------- per kind

def _namespace(c: Cluster, obj: dict, old: dict | None) -> None:
    meta = obj["metadata"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    st = obj.setdefault("status", {})
    st.setdefault("phase", "Active")
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]


def _pod(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        pod_spec_defaults(spec)
        if old is None:
            spec.setdefault("tolerations", [])
            keys = {t.get("key") for t in spec["tolerations"]}
            for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if k not in keys:
                    spec["tolerations"].append({"key": k, "operator": "Exists", "effect": "NoExecute",
                                                "tolerationSeconds": 300})
    if old is None:
        obj["status"] = obj.get("status") or {"phase": "Pending", "qosClass": qos_class(spec or {})}


def _workload_spec(obj: dict) -> dict | None:
    """The spec of a workload, its pod template defaulted; None when there is no spec to default."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    tmpl = spec.get("template")
    if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
        pod_spec_defaults(tmpl["spec"])
    return spec


def _deployment(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = _workload_spec(obj)
    if spec is None:
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    st = spec.setdefault("strategy", {})
    st.setdefault("type", "RollingUpdate")
    if st["type"] == "RollingUpdate":
        ru = st.setdefault("rollingUpdate", {})
        ru.setdefault("maxSurge", "25%")
        ru.setdefault("maxUnavailable", "25%")


def _replicaset(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = _workload_spec(obj)
    if spec is not None:
        spec.setdefault("replicas", 1)


def _statefulset(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = _workload_spec(obj)
    if spec is None:
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if us.get("type") == "RollingUpdate":
        us.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})


def _daemonset(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = _workload_spec(obj)
    if spec is None:
        return
    spec.setdefault("revisionHistoryLimit", 10)
    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if us.get("type") == "RollingUpdate":
        ru = us.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)


def _job(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = _workload_spec(obj)
    if spec is None:
        return
    meta = obj["metadata"]
    tmpl = spec.get("template")
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    if old is None and not spec.get("manualSelector"):
        uid = meta["uid"]
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        if isinstance(tmpl, dict):
            lb = tmpl.setdefault("metadata", {}).setdefault("labels", {})
            lb.update({"batch.kubernetes.io/controller-uid": uid,
                       "batch.kubernetes.io/job-name": meta["name"],
                       "controller-uid": uid, "job-name": meta["name"]})


def _service(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if old is not None and (old.get("spec") or {}).get("clusterIP") and not spec.get("clusterIP"):
                spec["clusterIP"] = old["spec"]["clusterIP"]
            if not spec.get("clusterIP"):
                c.svc_ip_counter += 1
                n = c.svc_ip_counter
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for i, p in enumerate(spec.get("ports") or []):
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
                if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in p:
                    oldp = ((old or {}).get("spec") or {}).get("ports") or []
                    if i < len(oldp) and oldp[i].get("nodePort"):
                        p["nodePort"] = oldp[i]["nodePort"]
                    else:
                        c.node_port_counter += 1
                        p["nodePort"] = c.node_port_counter
    obj.setdefault("status", {"loadBalancer": {}})


def _secret(c: Cluster, obj: dict, old: dict | None) -> None:
    obj.setdefault("type", "Opaque")
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _claim(c: Cluster, obj: dict, old: dict | None) -> None:
    if old is not None:
        return
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    if "storageClassName" not in spec:  # the DefaultStorageClass admission plugin
        for sc in c.data[STORAGE_CLASSES].values():
            if (sc["metadata"].get("annotations") or {}).get(
                    "storageclass.kubernetes.io/is-default-class") == "true":
                spec["storageClassName"] = sc["metadata"]["name"]
    spec.setdefault("volumeMode", "Filesystem")
    fins = meta.setdefault("finalizers", [])
    if "kubernetes.io/pvc-protection" not in fins:
        fins.append("kubernetes.io/pvc-protection")
    obj["status"] = {"phase": "Pending"}


def _volume(c: Cluster, obj: dict, old: dict | None) -> None:
    if old is not None:
        return
    fins = obj["metadata"].setdefault("finalizers", [])
    if "kubernetes.io/pv-protection" not in fins:
        fins.append("kubernetes.io/pv-protection")
    obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
    obj["spec"].setdefault("volumeMode", "Filesystem")
    obj["status"] = obj.get("status") or {"phase": "Pending"}


def _autoscaler(c: Cluster, obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]


def _storage_class(c: Cluster, obj: dict, old: dict | None) -> None:
    if old is None:
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")


def _ingress(c: Cluster, obj: dict, old: dict | None) -> None:
    obj.setdefault("status", {"loadBalancer": {}})


def _event(c: Cluster, obj: dict, old: dict | None) -> None:
    obj.setdefault("involvedObject", {})
    if obj.get("apiVersion", "v1") == "v1":
        # Go's zero values, as a real server returns a core/v1 Event: the time fields (metav1.Time and
        # MicroTime marshal their zero as null, omitempty cannot drop a struct) and an empty source
        for name in ("eventTime", "firstTimestamp", "lastTimestamp"):
            obj.setdefault(name, None)
        obj.setdefault("source", {})
    if not obj.get("reportingComponent"):
        obj["reportingComponent"] = (obj.get("source") or {}).get("component", "")
    obj.setdefault("reportingInstance", "")


_BY_KIND: dict[str, Callable[[Cluster, dict, dict | None], None]] = {
    "Namespace": _namespace, "Pod": _pod, "Deployment": _deployment, "ReplicaSet": _replicaset,
    "StatefulSet": _statefulset, "DaemonSet": _daemonset, "Job": _job, "Service": _service, "Secret": _secret,
    "PersistentVolumeClaim": _claim, "PersistentVolume": _volume, "HorizontalPodAutoscaler": _autoscaler,
    "StorageClass": _storage_class, "Ingress": _ingress, "Event": _event,
}
