"""The DaemonSet controller: one pod per eligible node (node selector, taints), rolling update
within maxUnavailable, ControllerRevisions for kubectl rollout history."""

from __future__ import annotations

import copy

from .common import (
    DS_TOLERATIONS,
    DSS,
    NODES,
    PODS,
    ControllerBase,
    _active,
    _int_or_percent,
    _is_available,
    _is_ready,
    _target_node,
    _terminal,
    _tolerates,
    template_hash,
)


class DaemonSetController(ControllerBase):
    def sync(self) -> None:
        c = self.c
        owned = self._owned_pods()
        nodes = c.objects(NODES)
        for ds in list(c.objects(DSS)):
            if ds["metadata"].get("deletionTimestamp"):
                continue
            ns = ds["metadata"]["namespace"]
            tmpl = ds["spec"]["template"]
            tspec = tmpl.get("spec") or {}
            h = template_hash(tmpl)[:10]
            self._revision(ds, "DaemonSet", tmpl, h)
            tols = list(tspec.get("tolerations") or []) + DS_TOLERATIONS
            eligible = []  # nodes that should run a daemon pod
            keep = set()  # nodes whose daemon pod may continue running (only NoExecute taints matter)
            for n in nodes:
                if not all((n["metadata"].get("labels") or {}).get(k) == v
                           for k, v in (tspec.get("nodeSelector") or {}).items()):
                    continue
                taints = (n.get("spec") or {}).get("taints") or []
                if all(_tolerates(tols, t) for t in taints if t.get("effect") == "NoExecute"):
                    keep.add(n["metadata"]["name"])
                if all(_tolerates(tols, t) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")):
                    eligible.append(n["metadata"]["name"])
            pods = [p for p in owned.get(ds["metadata"]["uid"], []) if _active(p)]
            occupied = {_target_node(p) for p in owned.get(ds["metadata"]["uid"], []) if not _terminal(p)}
            by_node: dict[str, list[dict]] = {}
            for p in pods:
                by_node.setdefault(_target_node(p) or "", []).append(p)
            for node in eligible:
                if node not in occupied:
                    pod = self._pod_from_template(ds, "DaemonSet", "apps/v1", tmpl, extra_labels={
                        "controller-revision-hash": h,
                        "pod-template-generation": str(ds["metadata"].get("generation", 1))})
                    ps = pod["spec"]
                    ps["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                                "values": [node]}]}]}}}
                    ps.setdefault("tolerations", []).extend(copy.deepcopy(DS_TOLERATIONS))
                    p = self._create(PODS, ns, pod)
                    if p:
                        by_node[node] = [p]
                        self._event(ds, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                    component="daemonset-controller")
                    else:
                        self._failed_create(ds, "daemonset-controller")
                        break
            for node, ps in list(by_node.items()):
                if node not in keep:
                    for p in ps:
                        self._delete(PODS, p)
                    by_node.pop(node)
                elif len(ps) > 1:
                    for p in ps[1:]:
                        self._delete(PODS, p)
                    by_node[node] = ps[:1]
            # rolling update
            if (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
                max_unavail = _int_or_percent(((ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {})
                                              .get("maxUnavailable", 1), len(eligible), True) or 1
                cur = [ps[0] for ps in by_node.values()]
                unavailable = sum(1 for p in cur if not _is_ready(p))
                budget = max_unavail - unavailable
                for p in cur:
                    if budget <= 0:
                        break
                    if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != h:
                        self._delete(PODS, p)
                        budget -= 1
            live = {n: ps[0] for n, ps in by_node.items() if c.raw(PODS, ns, ps[0]["metadata"]["name"])}
            cur = [p for n, p in live.items() if n in eligible]
            misscheduled = sum(1 for n in live if n not in eligible)
            min_ready = int(ds["spec"].get("minReadySeconds") or 0)
            ready = sum(1 for p in cur if _is_ready(p))
            avail = sum(1 for p in cur if _is_available(p, min_ready))
            st = {"currentNumberScheduled": len(cur), "desiredNumberScheduled": len(eligible),
                  "numberMisscheduled": misscheduled, "numberReady": ready,
                  "observedGeneration": ds["metadata"].get("generation", 1),
                  "updatedNumberScheduled": sum(1 for p in cur if (p["metadata"].get("labels") or {}).get(
                      "controller-revision-hash") == h),
                  "numberAvailable": avail, "numberUnavailable": max(len(eligible) - avail, 0)}
            st = {k: v for k, v in st.items() if v or k in ("currentNumberScheduled", "desiredNumberScheduled",
                                                             "numberMisscheduled", "numberReady")}
            if st != ds.get("status"):
                upd = copy.deepcopy(c.raw(DSS, ns, ds["metadata"]["name"]) or ds)
                upd["status"] = st
                self._update(DSS, upd, "status")
