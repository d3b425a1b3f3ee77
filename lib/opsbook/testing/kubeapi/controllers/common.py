"""Shared pieces of the simulated control plane: resource handles, timing constants, small helpers on
objects and conditions, and the base class whose write helpers every controller uses."""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any

from ..errors import ApiError
from ..events import NEW_API_RECORDERS, record_event, record_new_event
from ..meta import ALNUM, now_iso, parse_iso
from ..resources import res
from ..store import Cluster

PODS = res("v1", "pods")
NODES = res("v1", "nodes")
NSS = res("v1", "namespaces")
SVCS = res("v1", "services")
EPS = res("v1", "endpoints")
SLICES = res("discovery.k8s.io/v1", "endpointslices")
SLICE_MANAGER = "endpointslice-controller.k8s.io"
DEPLOY = res("apps/v1", "deployments")
RSS = res("apps/v1", "replicasets")
DSS = res("apps/v1", "daemonsets")
STSS = res("apps/v1", "statefulsets")
JOBS = res("batch/v1", "jobs")
CRONJOBS = res("batch/v1", "cronjobs")
HPAS = res("autoscaling/v2", "horizontalpodautoscalers")
PVCS = res("v1", "persistentvolumeclaims")
PVS = res("v1", "persistentvolumes")
SCS = res("storage.k8s.io/v1", "storageclasses")
LEASES = res("coordination.k8s.io/v1", "leases")
LEASE_RENEW_SECONDS = 10.0
CREVS = res("apps/v1", "controllerrevisions")

TICK = 0.1
MIN_TICK = 0.02
UNREACHABLE = "node.kubernetes.io/unreachable"
DS_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
PULL_FAIL_SECONDS = 1.0
CRASH_RUN_SECONDS = 0.3
RUN_TO_COMPLETION_SECONDS = 0.5
READY_DELAY_ANNOTATION = "opsbook.test/ready-delay"
RUN_SECONDS_ANNOTATION = "opsbook.test/run-seconds"


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(tmpl: dict, collision: int = 0) -> str:
    t = copy.deepcopy(tmpl or {})
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    h = fnv32a((json.dumps(t, sort_keys=True) + str(collision)).encode())
    return "".join(ALNUM[b % len(ALNUM)] for b in str(h).encode())


def _strip_hash(tmpl: dict) -> dict:
    t = copy.deepcopy(tmpl or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop("pod-template-hash", None)
    return t


def _owner_ref(obj: dict, kind: str, api_version: str) -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _cond(conds: list, typ: str) -> dict | None:
    return next((c for c in conds if c.get("type") == typ), None)


def _set_cond(conds: list, typ: str, status: str, reason: str | None = None, message: str | None = None,
              *, with_update_time: bool = False, with_probe_time: bool = False, touch: bool = False) -> None:
    now = now_iso()
    cur = _cond(conds, typ)
    new: dict[str, Any] = {"type": typ, "status": status}
    if with_probe_time:
        new["lastProbeTime"] = None
    if with_update_time:
        new["lastUpdateTime"] = now if (touch or not cur or cur.get("status") != status or
                                        cur.get("reason") != reason) else cur.get("lastUpdateTime", now)
    new["lastTransitionTime"] = cur["lastTransitionTime"] if cur and cur.get("status") == status and \
        cur.get("lastTransitionTime") else now
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    if cur is None:
        conds.append(new)
    else:
        conds[conds.index(cur)] = new


def _int_or_percent(v, total: int, round_up: bool) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.endswith("%"):
        frac = int(v[:-1]) * total / 100.0
        return math.ceil(frac) if round_up else math.floor(frac)
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _is_ready(pod: dict) -> bool:
    c = _cond((pod.get("status") or {}).get("conditions") or [], "Ready")
    return bool(c and c.get("status") == "True")


def _is_available(pod: dict, min_ready: int) -> bool:
    c = _cond((pod.get("status") or {}).get("conditions") or [], "Ready")
    if not c or c.get("status") != "True":
        return False
    if min_ready <= 0:
        return True
    return time.time() - parse_iso(c["lastTransitionTime"]) >= min_ready


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _active(pod: dict) -> bool:
    return not _terminal(pod) and not pod["metadata"].get("deletionTimestamp")


def _tolerates(tolerations: list, taint: dict) -> bool:
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _shell_cmd(container: dict) -> list[str]:
    return [str(x) for x in (container.get("command") or []) + (container.get("args") or [])]


def _target_node(pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for t in terms:
        for mf in t.get("matchFields") or []:
            if mf.get("key") == "metadata.name" and mf.get("operator") == "In" and mf.get("values"):
                return mf["values"][0]
    return None


class ControllerBase:
    """Write helpers shared by the controllers and the node agents (writes are internal: no admission,
    status writable)."""

    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.last_error = ""  # the message of the last internal create that failed (for FailedCreate events)

    def _create(self, r, ns, obj):
        try:
            return self.c.create(r, ns, obj, internal=True)
        except ApiError as e:
            self.last_error = e.message
            return None

    def _failed_create(self, owner: dict, component: str) -> None:
        self._event(owner, "FailedCreate", f"Error creating: {self.last_error}", "Warning", component=component)

    def _update(self, r, obj, sub=None):
        try:
            return self.c.update(r, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], obj,
                                 subresource=sub, internal=True)
        except ApiError:
            return None

    def _delete(self, r, obj):
        try:
            return self.c.delete(r, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], {},
                                 internal=True)
        except ApiError:
            return None

    def _event(self, obj, reason, message, typ="Normal", component="kubelet", container=""):
        """Record an event as the real component does: the scheduler through events.k8s.io, the
        others through core/v1; the kubelet names its node and, for a container, the container."""
        if component in NEW_API_RECORDERS:
            record_new_event(self.c, obj, reason, message, typ, component)
            return
        host, field_path = "", ""
        if component == "kubelet":
            spec = obj.get("spec") or {}
            host = spec.get("nodeName") or ""
            if container:
                init = any(c.get("name") == container for c in spec.get("initContainers") or [])
                field_path = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
        record_event(self.c, obj, reason, message, typ, component, host=host, field_path=field_path)

    # ------------------------------------------------------------ pods owned by controllers

    def _owned_pods(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for p in self.c.objects(PODS):
            uid = _controller_uid(p)
            if uid:
                out.setdefault(uid, []).append(p)
        return out

    def _pod_from_template(self, owner: dict, kind: str, api_version: str, tmpl: dict, *, name=None,
                           generate=None, extra_labels=None) -> dict:
        t = copy.deepcopy(tmpl)
        meta: dict[str, Any] = {"labels": dict((t.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [_owner_ref(owner, kind, api_version)]}
        if extra_labels:
            meta["labels"].update(extra_labels)
        ann = (t.get("metadata") or {}).get("annotations")
        if ann:
            meta["annotations"] = dict(ann)
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = generate or owner["metadata"]["name"] + "-"
        return {"metadata": meta, "spec": t.get("spec") or {}}

    # ------------------------------------------------------------ controller revisions (DaemonSet, StatefulSet)

    def _revision(self, owner: dict, kind: str, tmpl: dict, h: str) -> None:
        """Keep a ControllerRevision per template, as `kubectl rollout history|undo` reads them."""
        c = self.c
        ns, name, uid = owner["metadata"]["namespace"], owner["metadata"]["name"], owner["metadata"]["uid"]
        crs = [cr for cr in c.objects(CREVS, ns) if _controller_uid(cr) == uid]
        max_rev = max((int(cr.get("revision") or 0) for cr in crs), default=0)
        cr_name = f"{name}-{h}"
        cur = next((cr for cr in crs if cr["metadata"]["name"] == cr_name), None)
        if cur is None:
            data_tmpl = copy.deepcopy(tmpl)
            data_tmpl["$patch"] = "replace"
            labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
            labels["controller-revision-hash"] = h
            created = self._create(CREVS, ns, {"metadata": {"name": cr_name, "labels": labels,
                                                            "ownerReferences": [_owner_ref(owner, kind, "apps/v1")]},
                                               "data": {"spec": {"template": data_tmpl}}, "revision": max_rev + 1})
            if created is not None:
                crs.append(created)
        elif int(cur.get("revision") or 0) < max_rev:
            new = copy.deepcopy(cur)
            new["revision"] = max_rev + 1
            self._update(CREVS, new)
        limit = int((owner.get("spec") or {}).get("revisionHistoryLimit", 10))
        old = sorted((cr for cr in crs if cr["metadata"]["name"] != cr_name), key=lambda cr: int(cr.get("revision") or 0))
        for cr in old[: max(0, len(old) - limit)]:
            self._delete(CREVS, cr)
