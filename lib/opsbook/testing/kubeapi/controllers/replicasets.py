"""The ReplicaSet controller: create or delete pods until the count matches (unscheduled, then
unready, then the newest pods go first), and count ready and available ones."""

from __future__ import annotations

import copy

from .common import (
    PODS,
    RSS,
    ControllerBase,
    _active,
    _is_available,
    _is_ready,
)


class ReplicaSetController(ControllerBase):
    def sync(self) -> None:
        c = self.c
        owned = self._owned_pods()
        for rs in list(c.objects(RSS)):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            ns = rs["metadata"]["namespace"]
            pods = [p for p in owned.get(rs["metadata"]["uid"], []) if _active(p)]
            want = int(rs["spec"].get("replicas", 1))
            if len(pods) < want:
                for _ in range(min(want - len(pods), 50)):
                    p = self._create(PODS, ns, self._pod_from_template(rs, "ReplicaSet", "apps/v1",
                                                                        rs["spec"]["template"]))
                    if p:
                        pods.append(p)
                        self._event(rs, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                    component="replicaset-controller")
                    else:
                        self._failed_create(rs, "replicaset-controller")
                        break
            elif len(pods) > want:
                ranked = sorted(pods, key=lambda p: (0 if not p["spec"].get("nodeName") else
                                                     1 if not _is_ready(p) else 2,
                                                     [-ord(ch) for ch in p["metadata"]["creationTimestamp"]]))
                for p in ranked[: len(pods) - want]:
                    self._delete(PODS, p)
                    self._event(rs, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                                component="replicaset-controller")
                pods = [p for p in pods if c.raw(PODS, ns, p["metadata"]["name"]) is not None]
            min_ready = int(rs["spec"].get("minReadySeconds") or 0)
            st = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                  "readyReplicas": sum(1 for p in pods if _is_ready(p)),
                  "availableReplicas": sum(1 for p in pods if _is_available(p, min_ready)),
                  "observedGeneration": rs["metadata"].get("generation", 1)}
            st = {k: v for k, v in st.items() if v or k == "replicas"}
            if st != rs.get("status"):
                upd = copy.deepcopy(c.raw(RSS, ns, rs["metadata"]["name"]) or rs)
                upd["status"] = st
                self._update(RSS, upd, "status")
