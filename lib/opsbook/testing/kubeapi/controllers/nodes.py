"""Node lifecycle: leases renewed by the kubelets of Ready nodes, and the admin overrides: a node
whose kubelet "stops posting status" goes Ready=Unknown and gets the unreachable taints the node
lifecycle controller adds; back to Ready, the taints go away."""

from __future__ import annotations

import copy
import time

from ..meta import micro_iso, now_iso
from ..store import Cluster
from .common import (
    LEASE_RENEW_SECONDS,
    LEASES,
    NODES,
    UNREACHABLE,
    ControllerBase,
    _cond,
)


class NodeLifecycle(ControllerBase):
    def __init__(self, cluster: Cluster):
        super().__init__(cluster)
        self.lease_renewed: dict[str, float] = {}  # node name -> when its lease was last renewed

    def sync(self) -> None:
        now_t = time.time()
        for n in self.c.objects(NODES):
            name = n["metadata"]["name"]
            if not self.c.node_overrides.get(name, {}).get("ready", True):
                continue
            lease = self.c.raw(LEASES, "kube-node-lease", name)
            if lease is None:
                self._create(LEASES, "kube-node-lease", {
                    "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                                    "uid": n["metadata"]["uid"]}]},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_iso()}})
            elif now_t - self.lease_renewed.get(name, 0) >= LEASE_RENEW_SECONDS:
                new = copy.deepcopy(lease)
                new["spec"]["renewTime"] = micro_iso()
                self._update(LEASES, new)
            else:
                continue
            self.lease_renewed[name] = now_t
        overrides = self.c.node_overrides
        for name, ov in list(overrides.items()):
            node = self.c.raw(NODES, "", name)
            if node is None:
                continue
            new = copy.deepcopy(node)
            conds = new["status"]["conditions"]
            ready = ov.get("ready", True)
            cur = _cond(conds, "Ready")
            if cur is not None and (cur["status"] == "True") != bool(ready):
                now = now_iso()
                cur.update({"status": "True" if ready else "Unknown", "lastTransitionTime": now,
                            "lastHeartbeatTime": now,
                            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                            "message": "kubelet is posting ready status" if ready else
                            "Kubelet stopped posting node status."})
                self._update(NODES, new, "status")
                new = copy.deepcopy(self.c.raw(NODES, "", name) or new)
                taints = [t for t in new["spec"].get("taints") or [] if t.get("key") != UNREACHABLE]
                if not ready:
                    taints += [{"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": now},
                               {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}]
                if taints:
                    new["spec"]["taints"] = taints
                else:
                    new["spec"].pop("taints", None)
                self._update(NODES, new)
