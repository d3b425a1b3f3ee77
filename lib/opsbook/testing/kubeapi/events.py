"""Events: events.k8s.io/v1 served as a view of the core/v1 Events (one store, two shapes, converted
field by field as the real API server does), and the events the simulated control plane records.

Two recorders write events on a real cluster, and their events look different:

* client-go's ``tools/record`` (the kubelet, every kube-controller-manager controller) writes core/v1
  Events: ``firstTimestamp``/``lastTimestamp`` (seconds), ``count``, ``source`` {component, host},
  ``reportingComponent``/``reportingInstance`` copied from the source, and **no** ``eventTime`` (null).
  A repeat of the same event is a patch: count + 1, lastTimestamp now.
* client-go's ``tools/events`` (the scheduler) writes events.k8s.io/v1 Events: ``eventTime``
  (microseconds), ``action``, ``reportingController``/``reportingInstance``, no deprecated fields (in
  core/v1: firstTimestamp and lastTimestamp null, no count, ``source: {}``). A repeat becomes a
  ``series`` {count, lastObservedTime}.

Readers must take both (and the official Python client cannot parse an events.k8s.io/v1 Event whose
``eventTime`` is null: a real cluster's list of kubelet events)."""

from __future__ import annotations

import copy
import time
import uuid
from typing import TYPE_CHECKING, Any

from .meta import micro_iso, now_iso
from .resources import res

if TYPE_CHECKING:
    from .store import Cluster

NS_RES = res("v1", "namespaces")
EVENTS_CORE = res("v1", "events")
EVENTS_NEW = res("events.k8s.io/v1", "events")

# the recorders of the events.k8s.io API (client-go tools/events) and the action of each reason
NEW_API_RECORDERS = {"default-scheduler"}
ACTIONS = {"Scheduled": "Binding", "FailedScheduling": "Scheduling", "Preempted": "Preempting"}

# core/v1 field -> events.k8s.io/v1 field, for the fields that are strings left out when empty
_STRINGS = {"reportingComponent": "reportingController", "reportingInstance": "reportingInstance",
            "action": "action", "reason": "reason", "message": "note", "type": "type"}


def _json_omitempty(out: dict, key: str, value: Any) -> None:
    if value not in (None, "", 0, {}, []):
        out[key] = value


def as_new_event(obj: dict) -> dict:
    """A stored core/v1 Event as events.k8s.io/v1 shows it: what the Go types serialize, so
    ``eventTime`` and the deprecated timestamps are null when unset (struct fields, never left out),
    ``regarding`` and ``deprecatedSource`` ``{}``, and empty strings and a zero count left out."""
    o: dict[str, Any] = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": obj["metadata"],
                         "eventTime": obj.get("eventTime")}
    if obj.get("series"):
        o["series"] = obj["series"]
    for core, new in _STRINGS.items():
        _json_omitempty(o, new, obj.get(core))
    o["regarding"] = obj.get("involvedObject") or {}
    if obj.get("related"):
        o["related"] = obj["related"]
    o["deprecatedSource"] = obj.get("source") or {}
    o["deprecatedFirstTimestamp"] = obj.get("firstTimestamp")
    o["deprecatedLastTimestamp"] = obj.get("lastTimestamp")
    _json_omitempty(o, "deprecatedCount", obj.get("count"))
    return o


def as_core_event(body: dict) -> dict:
    """An events.k8s.io/v1 Event as it is stored and shown in core/v1 (the inverse conversion):
    ``involvedObject``, ``source``, the timestamps, ``reportingComponent`` and ``reportingInstance``
    always there; a zero count left out."""
    o: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": body.get("metadata", {}),
                         "involvedObject": body.get("regarding") or {}, "source": body.get("deprecatedSource") or {},
                         "firstTimestamp": body.get("deprecatedFirstTimestamp"),
                         "lastTimestamp": body.get("deprecatedLastTimestamp"), "eventTime": body.get("eventTime"),
                         "reportingComponent": body.get("reportingController") or "",
                         "reportingInstance": body.get("reportingInstance") or ""}
    for core, new in _STRINGS.items():
        if core not in ("reportingComponent", "reportingInstance"):
            _json_omitempty(o, core, body.get(new))
    for k in ("series", "related"):
        if body.get(k):
            o[k] = body[k]
    _json_omitempty(o, "count", body.get("deprecatedCount"))
    return o


def _reference(involved: dict, field_path: str = "") -> dict:
    """The ObjectReference a recorder builds (``ref.GetReference``): no namespace for a cluster-scoped object."""
    m = involved["metadata"]
    ref = {"kind": involved.get("kind"), "namespace": m.get("namespace"), "name": m["name"], "uid": m.get("uid"),
           "apiVersion": involved.get("apiVersion"), "resourceVersion": m.get("resourceVersion")}
    if field_path:
        ref["fieldPath"] = field_path
    return {k: v for k, v in ref.items() if v}


def _writable_namespace(c: Cluster, ns: str) -> bool:
    nso = c.data[NS_RES].get(("", ns))
    return nso is not None and not nso["metadata"].get("deletionTimestamp")


def _same(ev: dict, ref: dict, reason: str, message: str, reporter: str) -> bool:
    io = ev.get("involvedObject") or {}
    return (io.get("uid") == ref.get("uid") and io.get("fieldPath", "") == ref.get("fieldPath", "")
            and ev.get("reason") == reason and ev.get("message") == message
            and ev.get("reportingComponent") == reporter)


def _new_metadata(ref: dict, ns: str, now: str) -> dict:
    # the recorders' name: the object's name and the time in nanoseconds, in hex
    return {"name": f"{ref['name']}.{time.time_ns():x}"[:253], "namespace": ns, "uid": str(uuid.uuid4()),
            "creationTimestamp": now}


def record_event(c: Cluster, involved: dict, reason: str, message: str, typ: str = "Normal",
                 component: str = "kubelet", *, host: str = "", field_path: str = "") -> None:
    """What client-go's ``tools/record`` recorder writes (the kubelet with ``host``, a controller of
    kube-controller-manager without): a core/v1 Event, eventTime null; a repeat counts up."""
    with c.lock:
        ref = _reference(involved, field_path)
        ns = ref.get("namespace") or "default"
        if not _writable_namespace(c, ns):
            return
        now = now_iso()
        for ev in c.data[EVENTS_CORE].values():
            if _same(ev, ref, reason, message, component) and ev.get("type") == typ and not ev.get("series"):
                new = copy.deepcopy(ev)
                new["count"] = int(new.get("count") or 1) + 1
                new["lastTimestamp"] = now
                c.store(EVENTS_CORE, new, "MODIFIED")
                return
        source = {"component": component, **({"host": host} if host else {})}
        ev = {"apiVersion": "v1", "kind": "Event", "metadata": _new_metadata(ref, ns, now),
              "involvedObject": ref, "reason": reason, "message": message, "type": typ, "count": 1,
              "source": source, "firstTimestamp": now, "lastTimestamp": now, "eventTime": None,
              "reportingComponent": component, "reportingInstance": host}
        c.store(EVENTS_CORE, ev, "ADDED")


def record_new_event(c: Cluster, involved: dict, reason: str, message: str, typ: str = "Normal",
                     controller: str = "default-scheduler", *, instance: str = "", action: str = "") -> None:
    """What client-go's ``tools/events`` recorder writes (the scheduler): eventTime set, no deprecated
    fields; an isomorphic repeat turns the event into a series."""
    with c.lock:
        ref = _reference(involved)
        ns = ref.get("namespace") or "default"
        if not _writable_namespace(c, ns):
            return
        action = action or ACTIONS.get(reason, reason)
        for ev in c.data[EVENTS_CORE].values():
            if _same(ev, ref, reason, message, controller) and ev.get("action") == action and ev.get("eventTime"):
                new = copy.deepcopy(ev)
                count = int((new.get("series") or {}).get("count") or 1) + 1
                new["series"] = {"count": count, "lastObservedTime": micro_iso()}
                c.store(EVENTS_CORE, new, "MODIFIED")
                return
        ev = {"apiVersion": "v1", "kind": "Event", "metadata": _new_metadata(ref, ns, now_iso()),
              "involvedObject": ref, "reason": reason, "message": message, "type": typ, "source": {},
              "firstTimestamp": None, "lastTimestamp": None, "eventTime": micro_iso(), "action": action,
              "reportingComponent": controller, "reportingInstance": instance or f"{controller}-opsbook-control-plane"}
        c.store(EVENTS_CORE, ev, "ADDED")
