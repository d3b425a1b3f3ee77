"""What a new cluster starts with: the system namespaces, the nodes (the first a tainted control
plane when there are several), the default StorageClass, the ``kubernetes`` Service with the
API server's own endpoints, and the bootstrap RBAC policy (``authz_policy``)."""

from __future__ import annotations

import uuid
from typing import Any

from ..authz_policy import cluster_role_bindings, cluster_roles
from ..authz_rbac import CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES
from ..meta import now_iso
from ..store import Cluster
from .common import (
    EPS,
    NODES,
    NSS,
    SCS,
    SLICES,
    SVCS,
)


def bootstrap(c: Cluster) -> None:
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        c.create(NSS, "", {"metadata": {"name": ns}}, internal=True)
    n = c.node_count
    for i in range(n):
        name = "opsbook-control-plane" if (i == 0 and n > 1) else (
            "opsbook-worker" + ("" if i <= 1 else str(i)) if n > 1 else "opsbook-node")
        cp = i == 0 and n > 1
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
        if cp or n == 1:  # a single node is an untainted control plane, as in minikube
            labels["node-role.kubernetes.io/control-plane"] = ""
        else:
            labels["node-role.kubernetes.io/worker"] = ""
        spec: dict[str, Any] = {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]}
        if cp:
            spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        now = now_iso()
        conds = []
        for typ, reason, msg in (("MemoryPressure", "KubeletHasSufficientMemory",
                                  "kubelet has sufficient memory available"),
                                 ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                 ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available")):
            conds.append({"type": typ, "status": "False", "lastHeartbeatTime": now,
                          "lastTransitionTime": now, "reason": reason, "message": msg})
        conds.append({"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
                      "reason": "KubeletReady", "message": "kubelet is posting ready status"})
        cap = {"cpu": "4", "memory": "16331000Ki", "pods": "110", "ephemeral-storage": "102626232Ki",
               "hugepages-2Mi": "0"}
        node = {"metadata": {"name": name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": spec,
                "status": {"conditions": conds, "capacity": cap, "allocatable": dict(cap),
                           "addresses": [{"type": "InternalIP", "address": f"172.18.0.{i + 2}"},
                                         {"type": "Hostname", "address": name}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                           "nodeInfo": {"machineID": uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
                                        "bootID": str(uuid.uuid4()), "kernelVersion": "6.1.0-opsbook",
                                        "osImage": "Debian GNU/Linux 12 (bookworm)",
                                        "containerRuntimeVersion": "containerd://2.1.0",
                                        "kubeletVersion": "v1.37.0", "kubeProxyVersion": "",
                                        "operatingSystem": "linux", "architecture": "amd64"}}}
        c.create(NODES, "", node, internal=True)
    c.create(SCS, "", {"metadata": {"name": "standard", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "opsbook.test/simulated", "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate"}, internal=True)
    c.create(SVCS, "default", {"metadata": {"name": "kubernetes", "labels": {
        "component": "apiserver", "provider": "kubernetes"}}, "spec": {
        "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}},
        internal=True)
    # the API server's own endpoints (the apiserver writes them; there is no selector)
    c.create(EPS, "default", {"metadata": {"name": "kubernetes", "labels": {
        "endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": "172.18.0.2"}],
                     "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}, internal=True)
    c.create(SLICES, "default", {"metadata": {"name": "kubernetes", "labels": {
        "kubernetes.io/service-name": "kubernetes"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["172.18.0.2"], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}, internal=True)
    for role in cluster_roles():
        if c.raw(CLUSTER_ROLES, "", role["metadata"]["name"]) is None:
            c.create(CLUSTER_ROLES, "", role, internal=True)
    for binding in cluster_role_bindings():
        if c.raw(CLUSTER_ROLE_BINDINGS, "", binding["metadata"]["name"]) is None:
            c.create(CLUSTER_ROLE_BINDINGS, "", binding, internal=True)
