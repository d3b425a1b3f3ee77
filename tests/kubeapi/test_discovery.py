"""Discovery: /version, /api, /apis and the resource lists, as kubectl and the client read them."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.kube


def test_kubectl_version_reports_a_server_version(kube_api):
    out = json.loads(kube_api.kubectl("version", "-o", "json").stdout)
    server = out["serverVersion"]
    assert server["major"] == "1"
    assert server["gitVersion"].startswith("v1.")


def test_kubectl_api_resources_lists_short_names_and_scope(kube_api):
    out = kube_api.kubectl("api-resources", "-o", "wide").stdout
    rows = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        rows.setdefault(cols[0], []).append(cols)
    for name, short in [("pods", "po"), ("deployments", "deploy"), ("services", "svc"), ("namespaces", "ns"),
                        ("configmaps", "cm"), ("daemonsets", "ds"), ("replicasets", "rs"),
                        ("statefulsets", "sts"), ("ingresses", "ing"), ("networkpolicies", "netpol"),
                        ("serviceaccounts", "sa"), ("endpoints", "ep")]:
        assert name in rows, f"{name} missing from api-resources"
        assert any(short in cols for cols in rows[name]), f"{name} has no short name {short}"
    for name in ("jobs", "roles", "rolebindings", "clusterroles", "clusterrolebindings", "leases", "secrets",
                 "nodes", "events", "selfsubjectaccessreviews"):
        assert name in rows, f"{name} missing from api-resources"
    ns_col = {cols[0]: cols for cols in (r[0] for r in rows.values())}
    assert "false" in ns_col["nodes"] and "true" in ns_col["pods"]


def test_client_discovery_has_subresources(kube_api):
    from kubernetes import client

    api = kube_api.api_client()
    core = client.CoreV1Api(api).get_api_resources()
    names = {r.name: r for r in core.resources}
    assert {"pods", "pods/log", "pods/status", "namespaces"} <= set(names)
    assert names["pods"].namespaced and not names["namespaces"].namespaced
    assert "po" in names["pods"].short_names
    apps = client.AppsV1Api(api).get_api_resources()
    anames = {r.name: r for r in apps.resources}
    assert {"deployments", "deployments/status", "deployments/scale"} <= set(anames)
    assert anames["deployments/scale"].kind == "Scale"
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "coordination.k8s.io",
            "events.k8s.io", "authorization.k8s.io"} <= groups


def test_self_subject_access_review_is_answered(kube_api):
    from kubernetes import client

    api = client.AuthorizationV1Api(kube_api.api_client())
    review = api.create_self_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}}})
    assert review.status.allowed is True


def test_kubectl_auth_can_i(kube_api):
    assert kube_api.kubectl("auth", "can-i", "create", "deployments").stdout.strip() == "yes"


@pytest.mark.needs_ready_pods
def test_nodes_are_listed_ready(kube_api):
    out = kube_api.kubectl("get", "nodes", "-o", "json").stdout
    nodes = json.loads(out)["items"]
    assert nodes
    for n in nodes:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


@pytest.mark.parametrize("api,calls", [
    ("CoreV1Api", ["list_namespace", "list_node", "list_pod_for_all_namespaces", "list_service_for_all_namespaces",
                   "list_endpoints_for_all_namespaces", "list_config_map_for_all_namespaces",
                   "list_secret_for_all_namespaces", "list_service_account_for_all_namespaces",
                   "list_event_for_all_namespaces", "list_persistent_volume_claim_for_all_namespaces"]),
    ("AppsV1Api", ["list_deployment_for_all_namespaces", "list_replica_set_for_all_namespaces",
                   "list_daemon_set_for_all_namespaces", "list_stateful_set_for_all_namespaces",
                   "list_controller_revision_for_all_namespaces"]),
    ("BatchV1Api", ["list_job_for_all_namespaces", "list_cron_job_for_all_namespaces"]),
    ("NetworkingV1Api", ["list_ingress_for_all_namespaces", "list_network_policy_for_all_namespaces"]),
    ("RbacAuthorizationV1Api", ["list_role_for_all_namespaces", "list_role_binding_for_all_namespaces",
                                "list_cluster_role", "list_cluster_role_binding"]),
    ("CoordinationV1Api", ["list_lease_for_all_namespaces"]),
    ("EventsV1Api", ["list_event_for_all_namespaces"]),
    ("PolicyV1Api", ["list_pod_disruption_budget_for_all_namespaces"]),
    ("DiscoveryV1Api", ["list_endpoint_slice_for_all_namespaces"]),
])
def test_every_kind_lists_through_the_typed_client(kube_api, api, calls):
    """The typed client parses every list into its models (a reply it cannot model would raise), except
    events.k8s.io/v1: the client requires ``eventTime``, which the kubelet's and the controllers' events
    leave null on every real cluster (``test_events.py``); that list is read as JSON."""
    from kubernetes import client

    typed = getattr(client, api)(kube_api.api_client())
    for call in calls:
        if api == "EventsV1Api":
            data = json.loads(getattr(typed, call)(limit=50, _preload_content=False).data)
            assert data["metadata"]["resourceVersion"] and all("eventTime" in e for e in data["items"]), call
            continue
        result = getattr(typed, call)(limit=50)
        assert result.metadata.resource_version, call


@pytest.mark.needs_ready_pods
def test_kubectl_get_prints_server_side_columns(kube, apps):
    from .conftest import deployment, wait_until

    apps.create_namespaced_deployment(kube.namespace, deployment("cols"))
    wait_until(lambda: (apps.read_namespaced_deployment("cols", kube.namespace).status.ready_replicas or 0) == 1,
               message="deployment ready")
    header = kube.kubectl("get", "deployments").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    pods = kube.kubectl("get", "pods").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "1/1" in pods[1] and "Running" in pods[1]
    nodes = kube.kubectl("get", "nodes").stdout.splitlines()[0].split()
    assert nodes == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
