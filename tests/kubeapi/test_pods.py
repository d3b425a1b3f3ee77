"""Pod lifecycle through the API: scheduling and binding, graceful deletion, eviction and disruption
budgets, events."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException

from .conftest import PAUSE, cond, deployment, pod, wait_until

pytestmark = pytest.mark.kube


def _running(core, ns, name):
    return wait_until(lambda: (lambda p: p if p.status.phase == "Running" else None)(
        core.read_namespaced_pod(name, ns)), message=f"pod {name} running")


@pytest.mark.needs_ready_pods
def test_pod_status_is_filled_in(kube, core):
    core.create_namespaced_pod(kube.namespace, pod("full"))
    wait_until(lambda: cond(core.read_namespaced_pod("full", kube.namespace), "Ready") and
               cond(core.read_namespaced_pod("full", kube.namespace), "Ready").status == "True",
               message="pod ready")
    p = core.read_namespaced_pod("full", kube.namespace)
    assert p.status.pod_ip and p.status.host_ip and p.status.start_time
    assert p.status.qos_class == "BestEffort"
    cs = p.status.container_statuses[0]
    assert cs.name == "app" and cs.ready and cs.started and cs.state.running.started_at
    assert cs.restart_count == 0
    for typ in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert cond(p, typ).status == "True"
    assert p.spec.restart_policy == "Always" and p.spec.service_account_name == "default"


@pytest.mark.needs_ready_pods
def test_binding_assigns_a_pod_of_another_scheduler(kube, core):
    ns = kube.namespace
    p = pod("manual")
    p["spec"]["schedulerName"] = "opsbook-no-such-scheduler"
    core.create_namespaced_pod(ns, p)
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    node = next(n["metadata"]["name"] for n in nodes if not n["spec"].get("taints"))
    assert core.read_namespaced_pod("manual", ns).spec.node_name is None
    resp = core.create_namespaced_pod_binding("manual", ns, {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "manual"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}}, _preload_content=False)
    assert resp.status == 201
    assert _running(core, ns, "manual").spec.node_name == node


@pytest.mark.needs_ready_pods
def test_graceful_pod_deletion(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("bye"))
    _running(core, ns, "bye")
    deleted = core.delete_namespaced_pod("bye", ns, grace_period_seconds=1)
    assert deleted.metadata.name == "bye" and deleted.metadata.deletion_timestamp is not None

    def gone():
        try:
            core.read_namespaced_pod("bye", ns)
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, timeout=30, message="pod gone")


@pytest.mark.needs_ready_pods
def test_eviction_respects_disruption_budget(kube, apps, core):
    from kubernetes import client

    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("guarded", replicas=1))
    policy = client.PolicyV1Api(kube.api_client())
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "guard"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}})
    p = wait_until(lambda: (lambda ps: ps[0] if ps and cond(ps[0], "Ready") and cond(ps[0], "Ready").status == "True"
                            else None)(core.list_namespaced_pod(ns, label_selector="app=guarded").items),
                   message="guarded pod ready")
    name = p.metadata.name
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod_eviction(name, ns, eviction)
    assert ei.value.status == 429
    policy.patch_namespaced_pod_disruption_budget("guard", ns, {"spec": {"minAvailable": 0}})

    def evicted():
        try:
            core.create_namespaced_pod_eviction(name, ns, eviction, _preload_content=False)
            return True
        except ApiException as e:
            if e.status == 429:  # a real disruption controller needs a moment to see the new budget
                return False
            raise

    wait_until(evicted, timeout=30, message="eviction allowed")
    wait_until(lambda: name not in {x.metadata.name for x in core.list_namespaced_pod(ns).items
                                    if x.metadata.deletion_timestamp is None},
               timeout=30, message="evicted pod leaves")


@pytest.mark.needs_ready_pods
def test_events_are_recorded_for_pods(kube, core):
    from kubernetes import client

    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("noisy", image=PAUSE))
    _running(core, ns, "noisy")

    def scheduled():
        evs = core.list_namespaced_event(ns, field_selector="involvedObject.name=noisy").items
        return [e for e in evs if e.reason == "Scheduled"]

    ev = wait_until(scheduled, timeout=30, message="Scheduled event")[0]
    assert ev.involved_object.kind == "Pod" and ev.type == "Normal"
    # read as JSON: the official client cannot model the kubelet's events in events.k8s.io/v1 (eventTime null)
    new = json.loads(client.EventsV1Api(kube.api_client()).list_namespaced_event(ns, _preload_content=False).data)
    assert any(e["regarding"]["name"] == "noisy" and e["reason"] == "Scheduled" for e in new["items"])
    out = kube.kubectl("events", "--for", "pod/noisy").stdout
    assert "Scheduled" in out


@pytest.mark.needs_ready_pods
def test_describe_service_lists_endpoints(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("described", replicas=1, ports=[{"containerPort": 9376}]))
    core.create_namespaced_service(ns, {"metadata": {"name": "described"}, "spec": {
        "selector": {"app": "described"}, "ports": [{"port": 80, "targetPort": 9376}]}})

    def has_endpoint():
        out = kube.kubectl("describe", "service", "described").stdout
        line = next((x for x in out.splitlines() if x.startswith("Endpoints:")), "")
        return ":9376" in line

    wait_until(has_endpoint, timeout=60, message="endpoint in describe")
    from kubernetes import client

    slices = client.DiscoveryV1Api(kube.api_client()).list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=described").items
    assert slices and slices[0].endpoints and slices[0].endpoints[0].conditions.ready
