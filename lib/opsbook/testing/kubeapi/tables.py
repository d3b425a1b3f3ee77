"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for."""

from __future__ import annotations

import time

from .meta import parse_iso
from .resources import Resource


def human_duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _age(o: dict) -> str:
    ts = o.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    return human_duration(time.time() - parse_iso(ts))


def _pod_row(o: dict) -> list:
    st = o.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    reason = st.get("reason") or st.get("phase") or "Pending"
    for c in cs:
        w = (c.get("state") or {}).get("waiting")
        t = (c.get("state") or {}).get("terminated")
        if w and w.get("reason"):
            reason = w["reason"]
        elif t and t.get("reason") and (reason in ("Running", "Pending") or st.get("phase") in ("Succeeded", "Failed")):
            reason = t["reason"]
    if st.get("phase") == "Pending" and not cs and (o.get("spec") or {}).get("nodeName"):
        reason = "ContainerCreating"
    inits = st.get("initContainerStatuses") or []
    n_init = len((o.get("spec") or {}).get("initContainers") or [])
    done = sum(1 for c in inits if ((c.get("state") or {}).get("terminated") or {}).get("exitCode") == 0)
    if n_init and done < n_init:
        reason = f"Init:{done}/{n_init}"
        for c in inits:
            w = (c.get("state") or {}).get("waiting") or {}
            t = (c.get("state") or {}).get("terminated") or {}
            if w.get("reason") and w["reason"] != "PodInitializing":
                reason = "Init:" + w["reason"]
            elif t.get("exitCode"):
                reason = "Init:" + (t.get("reason") or f"ExitCode:{t['exitCode']}")
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return [f"{ready}/{total}", reason, restarts, _age(o), st.get("podIP") or "<none>",
            (o.get("spec") or {}).get("nodeName") or "<none>"]


def _node_row(o: dict) -> list:
    conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if (o.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    info = (o.get("status") or {}).get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in (o.get("status") or {}).get("addresses") or []}
    return [status, ",".join(roles) or "<none>", _age(o), info.get("kubeletVersion", ""),
            addrs.get("InternalIP", "<none>"), addrs.get("ExternalIP", "<none>"), info.get("osImage", ""),
            info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _deploy_row(o: dict) -> list:
    st = o.get("status") or {}
    want = (o.get("spec") or {}).get("replicas", 1)
    return [f"{st.get('readyReplicas', 0)}/{want}", st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            _age(o)] + _images(o)


def _rs_row(o: dict) -> list:
    st = o.get("status") or {}
    return [(o.get("spec") or {}).get("replicas", 1), st.get("replicas", 0), st.get("readyReplicas", 0),
            _age(o)] + _images(o)


def _ds_row(o: dict) -> list:
    st = o.get("status") or {}
    return [st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0), st.get("numberReady", 0),
            st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0), _age(o)] + _images(o)


def _sts_row(o: dict) -> list:
    st = o.get("status") or {}
    return [f"{st.get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}", _age(o)] + _images(o)[:2]


def _job_row(o: dict) -> list:
    st = o.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = "Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True" \
        else "Running"
    duration = ""
    if st.get("startTime"):
        end = parse_iso(st["completionTime"]) if st.get("completionTime") else time.time()
        duration = human_duration(end - parse_iso(st["startTime"]))
    return [status, f"{st.get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}", duration, _age(o)]


def _cronjob_row(o: dict) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    last = st.get("lastScheduleTime")
    return [sp.get("schedule", ""), sp.get("timeZone") or "<none>", bool(sp.get("suspend", False)),
            len(st.get("active") or []), human_duration(time.time() - parse_iso(last)) if last else "<none>",
            _age(o)]


def _svc_row(o: dict) -> list:
    sp = o.get("spec") or {}
    ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                     f"{p.get('protocol', 'TCP')}" for p in sp.get("ports") or [])
    sel = ",".join(f"{k}={v}" for k, v in sorted((sp.get("selector") or {}).items())) or "<none>"
    external = sp.get("externalName") or ",".join(sp.get("externalIPs") or []) or "<none>"
    return [sp.get("type", "ClusterIP"), sp.get("clusterIP", "") or "<none>", external, ports or "<none>", _age(o),
            sel]


def _ns_row(o: dict) -> list:
    return [(o.get("status") or {}).get("phase", "Active"), _age(o)]


def _cm_row(o: dict) -> list:
    return [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)]


def _secret_row(o: dict) -> list:
    return [o.get("type", "Opaque"), len(o.get("data") or {}), _age(o)]


def _event_row(o: dict) -> list:
    io = o.get("involvedObject") or o.get("regarding") or {}
    series = o.get("series") or {}
    seen = (series.get("lastObservedTime") or o.get("lastTimestamp") or o.get("deprecatedLastTimestamp")
            or o.get("firstTimestamp") or o.get("eventTime") or "")  # kubectl's order for "Last Seen"
    return [seen, o.get("type", ""), o.get("reason", ""),
            f"{(io.get('kind') or '').lower()}/{io.get('name', '')}", o.get("message") or o.get("note") or ""]


def _images(o: dict) -> list:
    cs = (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    sel = (o.get("spec") or {}).get("selector") or {}
    sel_s = ",".join(f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())) or "<none>"
    return [",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs), sel_s]


WIDE_WORKLOAD = ["Containers", "Images", "Selector"]


def _modes(modes) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _pvc_row(o: dict) -> list:
    st, sp = o.get("status") or {}, o.get("spec") or {}
    return [st.get("phase", "Pending"), sp.get("volumeName", ""), (st.get("capacity") or {}).get("storage", ""),
            _modes(st.get("accessModes")), sp.get("storageClassName", "<unset>"), "<unset>", _age(o)]


def _pv_row(o: dict) -> list:
    st, sp = o.get("status") or {}, o.get("spec") or {}
    ref = sp.get("claimRef") or {}
    return [(sp.get("capacity") or {}).get("storage", ""), _modes(sp.get("accessModes")),
            sp.get("persistentVolumeReclaimPolicy", ""), st.get("phase", ""),
            f"{ref['namespace']}/{ref['name']}" if ref else "", sp.get("storageClassName", ""), "<unset>", "",
            _age(o)]


def _sc_row(o: dict) -> list:
    return [o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"), o.get("volumeBindingMode", "Immediate"),
            bool(o.get("allowVolumeExpansion", False)), _age(o)]


def _endpoints_row(o: dict) -> list:
    eps = [f"{a.get('ip')}:{p.get('port')}" for sub in o.get("subsets") or [] for p in sub.get("ports") or []
           for a in sub.get("addresses") or []]
    text = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [text or "<none>", _age(o)]


def _slice_row(o: dict) -> list:
    ports = ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o.get("addressType", ""), ports, text or "<unset>", _age(o)]


def _hpa_row(o: dict) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    ref = sp.get("scaleTargetRef") or {}
    targets = []
    for m in sp.get("metrics") or []:
        r = m.get("resource") or {}
        t = r.get("target") or {}
        want = f"{t['averageUtilization']}%" if "averageUtilization" in t else t.get("averageValue") or t.get("value")
        targets.append(f"{r.get('name', m.get('type', '').lower())}: <unknown>/{want}")
    return [f"{ref.get('kind')}/{ref.get('name')}", ", ".join(targets) or "<none>", sp.get("minReplicas", 1),
            sp.get("maxReplicas", 0), st.get("currentReplicas", 0), _age(o)]


def _col(name, typ="string", fmt="", prio=0, desc=""):
    return {"name": name, "type": typ, "format": fmt, "description": desc or name, "priority": prio}


PRINTERS = {
    "Pod": ([_col("Ready"), _col("Status"), _col("Restarts", "string"), _col("Age"), _col("IP", prio=1),
             _col("Node", prio=1)], _pod_row),
    "Node": ([_col("Status"), _col("Roles"), _col("Age"), _col("Version"), _col("Internal-IP", prio=1),
              _col("External-IP", prio=1), _col("OS-Image", prio=1), _col("Kernel-Version", prio=1),
              _col("Container-Runtime", prio=1)], _node_row),
    "Deployment": ([_col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _col("Age")]
                   + [_col(n, prio=1) for n in WIDE_WORKLOAD], _deploy_row),
    "ReplicaSet": ([_col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _col("Age")]
                   + [_col(n, prio=1) for n in WIDE_WORKLOAD], _rs_row),
    "DaemonSet": ([_col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"),
                   _col("Up-to-date", "integer"), _col("Available", "integer"), _col("Age")]
                  + [_col(n, prio=1) for n in WIDE_WORKLOAD], _ds_row),
    "StatefulSet": ([_col("Ready"), _col("Age")] + [_col(n, prio=1) for n in WIDE_WORKLOAD[:2]], _sts_row),
    "Job": ([_col("Status"), _col("Completions"), _col("Duration"), _col("Age")], _job_row),
    "Endpoints": ([_col("Endpoints"), _col("Age")], _endpoints_row),
    "EndpointSlice": ([_col("AddressType"), _col("Ports"), _col("Endpoints"), _col("Age")], _slice_row),
    "HorizontalPodAutoscaler": ([_col("Reference"), _col("Targets"), _col("MinPods", "integer"),
                                 _col("MaxPods", "integer"), _col("Replicas", "integer"), _col("Age")], _hpa_row),
    "CronJob": ([_col("Schedule"), _col("Timezone"), _col("Suspend", "boolean"), _col("Active", "integer"),
                 _col("Last Schedule"), _col("Age")], _cronjob_row),
    "Service": ([_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), _col("Age"),
                 _col("Selector", prio=1)], _svc_row),
    "Namespace": ([_col("Status"), _col("Age")], _ns_row),
    "PersistentVolumeClaim": ([_col("Status"), _col("Volume"), _col("Capacity"), _col("Access Modes"),
                               _col("StorageClass"), _col("VolumeAttributesClass"), _col("Age")], _pvc_row),
    "PersistentVolume": ([_col("Capacity"), _col("Access Modes"), _col("Reclaim Policy"), _col("Status"),
                          _col("Claim"), _col("StorageClass"), _col("VolumeAttributesClass"), _col("Reason"),
                          _col("Age")], _pv_row),
    "StorageClass": ([_col("Provisioner"), _col("ReclaimPolicy"), _col("VolumeBindingMode"),
                      _col("AllowVolumeExpansion", "boolean"), _col("Age")], _sc_row),
    "ConfigMap": ([_col("Data", "integer"), _col("Age")], _cm_row),
    "Secret": ([_col("Type"), _col("Data", "integer"), _col("Age")], _secret_row),
    "Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
}


def to_table(r: Resource, items: list[dict], rv: str | None, include_object: str = "Metadata") -> dict:
    cols, fn = PRINTERS.get(r.kind, ([_col("Age")], lambda o: [_age(o)]))
    columns = [_col("Name", fmt="name", desc="Name must be unique within a namespace.")] + cols
    rows = []
    for o in items:
        if include_object == "Object":
            obj = dict(o)
            obj.setdefault("kind", r.kind)
            obj.setdefault("apiVersion", r.api_version)
        elif include_object == "None":
            obj = None
        else:
            obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
        name = o["metadata"]["name"]
        if r.kind == "StorageClass" and (o["metadata"].get("annotations") or {}).get(
                "storageclass.kubernetes.io/is-default-class") == "true":
            name += " (default)"
        row = {"cells": [name] + fn(o)}
        if obj is not None:
            row["object"] = obj
        rows.append(row)
    meta = {"resourceVersion": rv} if rv else {}
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns,
            "rows": rows}
