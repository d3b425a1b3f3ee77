"""The Endpoints and EndpointSlice controllers: the ready and not-ready addresses of the pods a
Service selects, with named target ports resolved against the pods' containers."""

from __future__ import annotations

import copy
from typing import Any

from ..selectors import match_map_selector
from .common import (
    EPS,
    PODS,
    SLICE_MANAGER,
    SLICES,
    SVCS,
    ControllerBase,
    _is_ready,
    _owner_ref,
    _terminal,
)


class EndpointsController(ControllerBase):
    def _endpoint_slice(self, svc: dict, pods: list[dict], ports: list[dict]) -> None:
        c = self.c
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        want = _slice_body(svc, pods, ports)
        cur = next((sl for sl in c.objects(SLICES, ns)
                    if (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name and
                    (sl["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
                    == SLICE_MANAGER), None)
        if cur is None:
            body = {"metadata": {"generateName": f"{name}-", "labels": want["labels"],
                                 "ownerReferences": [_owner_ref(svc, "Service", "v1")]},
                    "addressType": "IPv4"}
            if want["endpoints"]:
                body["endpoints"] = want["endpoints"]
            if want["ports"]:
                body["ports"] = want["ports"]
            self._create(SLICES, ns, body)
            return
        if cur.get("endpoints") != want["endpoints"] or cur.get("ports") != want["ports"] or \
                (cur["metadata"].get("labels") or {}) != want["labels"]:
            new = copy.deepcopy(cur)
            new["metadata"]["labels"] = want["labels"]
            for k in ("endpoints", "ports"):
                if want[k]:
                    new[k] = want[k]
                else:
                    new.pop(k, None)
            self._update(SLICES, new)

    def sync(self) -> None:
        c = self.c
        pods_by_ns: dict[str, list[dict]] = {}
        for p in c.objects(PODS):
            pods_by_ns.setdefault(p["metadata"]["namespace"], []).append(p)
        seen = set()
        for svc in list(c.objects(SVCS)):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            sel = (svc.get("spec") or {}).get("selector")
            if not sel:
                continue
            seen.add((ns, name))
            ready: list[dict] = []
            not_ready: list[dict] = []
            chosen: list[dict] = []
            for p in pods_by_ns.get(ns, []):
                if not match_map_selector(sel, p["metadata"].get("labels")) or _terminal(p):
                    continue
                ip = (p.get("status") or {}).get("podIP")
                if not ip or p["metadata"].get("deletionTimestamp"):
                    continue
                addr = {"ip": ip, "nodeName": p["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                      "uid": p["metadata"]["uid"]}}
                (ready if _is_ready(p) else not_ready).append(addr)
                chosen.append(p)
            ports = []
            for sp in (svc.get("spec") or {}).get("ports") or []:
                tp = sp.get("targetPort", sp.get("port"))
                if isinstance(tp, str) and not tp.isdigit():
                    num = None
                    for p in chosen:
                        for ctr in p["spec"].get("containers") or []:
                            for cp in ctr.get("ports") or []:
                                if cp.get("name") == tp:
                                    num = cp.get("containerPort")
                    if num is None:
                        continue
                    tp = num
                e = {"port": int(tp), "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    e["name"] = sp["name"]
                ports.append(e)
            subset: dict[str, Any] = {}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
            if subset and ports:
                subset["ports"] = ports
            self._endpoint_slice(svc, chosen, ports)
            labels = dict(svc["metadata"].get("labels") or {})
            labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller"
            cur = c.raw(EPS, ns, name)
            body: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "labels": labels}}
            if subset and ports:
                body["subsets"] = [subset]
            if cur is None:
                self._create(EPS, ns, body)
            else:
                if cur.get("subsets") != body.get("subsets") or (cur["metadata"].get("labels") or {}) != labels:
                    new = copy.deepcopy(cur)
                    new["metadata"]["labels"] = labels
                    if "subsets" in body:
                        new["subsets"] = body["subsets"]
                    else:
                        new.pop("subsets", None)
                    self._update(EPS, new)
        for sl in list(c.objects(SLICES)):
            lb = sl["metadata"].get("labels") or {}
            if lb.get("endpointslice.kubernetes.io/managed-by") == SLICE_MANAGER and \
                    (sl["metadata"]["namespace"], lb.get("kubernetes.io/service-name")) not in seen:
                self._delete(SLICES, sl)
        for ep in list(c.objects(EPS)):
            key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if key not in seen and (ep["metadata"].get("labels") or {}).get(
                    "endpoints.kubernetes.io/managed-by") == "endpoint-controller":
                self._delete(EPS, ep)


def _slice_body(svc: dict, pods: list[dict], ports: list[dict]) -> dict:
    eps = []
    for p in sorted(pods, key=lambda p: (p.get("status") or {}).get("podIP") or ""):
        ready = _is_ready(p)
        terminating = bool(p["metadata"].get("deletionTimestamp"))
        eps.append({"addresses": [p["status"]["podIP"]],
                    "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
                    "nodeName": p["spec"].get("nodeName"),
                    "targetRef": {"kind": "Pod", "namespace": p["metadata"]["namespace"],
                                  "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
    labels = dict(svc["metadata"].get("labels") or {})
    labels.update({"kubernetes.io/service-name": svc["metadata"]["name"],
                   "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER})
    # a real EndpointSlice always names its ports (kubectl describe dereferences the name)
    sports = [{"name": p.get("name", ""), "port": p["port"], "protocol": p.get("protocol", "TCP")} for p in ports]
    return {"addressType": "IPv4", "endpoints": eps or None, "ports": sports or None, "labels": labels}
