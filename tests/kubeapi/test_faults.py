"""Test-server-only fault injection: API error rates, slow readiness, a node going NotReady."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException
from opsbook.testing.kube import requires_test_server

pytestmark = [pytest.mark.kube, requires_test_server]


def test_api_error_rate_produces_500_status(kube, core):
    ns = kube.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "f"}})
    codes = []
    with kube.api.faults(api_error_rate=0.5, paths=f"/namespaces/{ns}/configmaps"):
        for _ in range(40):
            try:
                core.read_namespaced_config_map("f", ns)
                codes.append(200)
            except ApiException as e:
                codes.append(e.status)
                assert '"kind":"Status"' in e.body.replace(" ", "")
    assert 500 in codes and 200 in codes
    assert 5 <= codes.count(500) <= 35
    core.read_namespaced_config_map("f", ns)  # faults cleared


def test_error_rate_one_makes_kubectl_fail(kube):
    kube.kubectl("create", "configmap", "g")
    with kube.api.faults(api_error_rate=1.0, paths=f"/namespaces/{kube.namespace}/configmaps/g"):
        out = kube.kubectl("get", "configmap", "g", "--request-timeout=5s", check=False)
    assert out.returncode != 0
    assert kube.kubectl("get", "configmap", "g").returncode == 0


def test_slow_readiness_annotation(kube, core):
    import time

    from .conftest import cond, pod, wait_until

    p = pod("slow")
    p["metadata"]["annotations"] = {"opsbook.test/ready-delay": "1.5"}
    core.create_namespaced_pod(kube.namespace, p)
    t0 = time.monotonic()
    wait_until(lambda: core.read_namespaced_pod("slow", kube.namespace).status.phase == "Running",
               message="running")
    assert cond(core.read_namespaced_pod("slow", kube.namespace), "Ready").status == "False"
    wait_until(lambda: cond(core.read_namespaced_pod("slow", kube.namespace), "Ready").status == "True",
               timeout=15, message="ready")
    assert time.monotonic() - t0 >= 1.2


def test_node_not_ready_drops_its_pods_from_endpoints(kube, core, apps):
    from .conftest import deployment, wait_until

    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("spread", replicas=4, ports=[{"containerPort": 80}]))
    core.create_namespaced_service(ns, {"metadata": {"name": "spread"}, "spec": {
        "selector": {"app": "spread"}, "ports": [{"port": 80}]}})

    def addresses():
        eps = core.read_namespaced_endpoints("spread", ns)
        return [a for s in (eps.subsets or []) for a in (s.addresses or [])]

    wait_until(lambda: len(addresses()) == 4, message="4 endpoints")
    pods = core.list_namespaced_pod(ns, label_selector="app=spread").items
    node = pods[0].spec.node_name
    on_node = {p.status.pod_ip for p in pods if p.spec.node_name == node}
    kube.api.set_node_ready(node, False)
    try:
        wait_until(lambda: {a.ip for a in addresses()}.isdisjoint(on_node) and len(addresses()) == 4 - len(on_node),
                   timeout=15, message="endpoints without the lost node's pods")
        n = core.read_node(node)
        assert [c.status for c in n.status.conditions if c.type == "Ready"] == ["Unknown"]
        assert any(t.key == "node.kubernetes.io/unreachable" for t in n.spec.taints)
    finally:
        kube.api.set_node_ready(node, True)
    wait_until(lambda: len(addresses()) == 4, timeout=15, message="endpoints back")
