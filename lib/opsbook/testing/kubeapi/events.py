"""Events: events.k8s.io/v1 served as a view of the core/v1 Events (one store, two shapes, as on a
real server), and the events the simulated control plane records, counted up when they repeat."""

from __future__ import annotations

import copy
import time
import uuid
from typing import TYPE_CHECKING

from .meta import micro_iso, now_iso
from .resources import res

if TYPE_CHECKING:
    from .store import Cluster

NS_RES = res("v1", "namespaces")
EVENTS_CORE = res("v1", "events")
EVENTS_NEW = res("events.k8s.io/v1", "events")

# core/v1 Event field -> events.k8s.io/v1 Event field (as_core_event uses the inverse)
_EVENT_FIELDS = {"eventTime": "eventTime", "series": "series", "reportingComponent": "reportingController",
                 "reportingInstance": "reportingInstance", "action": "action", "reason": "reason",
                 "involvedObject": "regarding", "related": "related", "message": "note", "type": "type",
                 "source": "deprecatedSource", "firstTimestamp": "deprecatedFirstTimestamp",
                 "lastTimestamp": "deprecatedLastTimestamp", "count": "deprecatedCount"}


def as_new_event(obj: dict) -> dict:
    """A stored core/v1 Event as events.k8s.io/v1 shows it."""
    o = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": obj["metadata"]}
    for a, b in _EVENT_FIELDS.items():
        if obj.get(a) not in (None, "", {}):
            o[b] = obj[a]
    if "eventTime" not in o:
        o["eventTime"] = None
    return o


def as_core_event(body: dict) -> dict:
    """An events.k8s.io/v1 Event as it is stored (core/v1)."""
    o = {"apiVersion": "v1", "kind": "Event", "metadata": body.get("metadata", {})}
    for b, a in _EVENT_FIELDS.items():
        if body.get(a) is not None:
            o[b] = body[a]
    o.setdefault("involvedObject", {})
    return o


def record_event(c: Cluster, involved: dict, reason: str, message: str, typ: str = "Normal",
                 component: str = "kubelet") -> None:
    with c.lock:
        m = involved["metadata"]
        ns = m.get("namespace") or "default"
        if ("", ns) not in c.data[NS_RES]:
            return
        nso = c.data[NS_RES][("", ns)]
        if nso["metadata"].get("deletionTimestamp"):
            return
        now = now_iso()
        for ev in c.data[EVENTS_CORE].values():
            io = ev.get("involvedObject") or {}
            if io.get("uid") == m.get("uid") and ev.get("reason") == reason and ev.get("message") == message:
                new = copy.deepcopy(ev)
                new["count"] = int(new.get("count", 1)) + 1
                new["lastTimestamp"] = now
                c.store(EVENTS_CORE, new, "MODIFIED")
                return
        name = f"{m['name']}.{int(time.time() * 1e9):x}"[:253]
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now},
              "involvedObject": {"kind": involved.get("kind"), "namespace": m.get("namespace"),
                                 "name": m["name"], "uid": m.get("uid"),
                                 "apiVersion": involved.get("apiVersion"),
                                 "resourceVersion": m.get("resourceVersion")},
              "reason": reason, "message": message, "type": typ, "count": 1,
              "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
              "eventTime": micro_iso(), "reportingComponent": component,
              "reportingInstance": f"{component}-opsbook", "action": reason}
        if not ev["involvedObject"]["namespace"]:
            ev["involvedObject"].pop("namespace")
        c.store(EVENTS_CORE, ev, "ADDED")
