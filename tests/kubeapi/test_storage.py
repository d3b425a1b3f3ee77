"""Persistent volume claims: dynamic provisioning through the default StorageClass, binding, pods
waiting for their claims, StatefulSet volumeClaimTemplates, claim protection."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from .conftest import PAUSE, pod, wait_until

pytestmark = pytest.mark.kube


def _claim(name: str, size: str = "1Gi") -> dict:
    return {"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                 "resources": {"requests": {"storage": size}}}}


def _pod_with_claim(name: str, claim: str) -> dict:
    p = pod(name)
    p["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return p


@pytest.mark.needs_storage_provisioner
def test_default_storage_class_exists(kube_api):
    from kubernetes import client

    classes = client.StorageV1Api(kube_api.api_client()).list_storage_class().items
    defaults = [c for c in classes if (c.metadata.annotations or {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    assert defaults, "no default StorageClass"


@pytest.mark.needs_storage_provisioner
@pytest.mark.needs_ready_pods
def test_claim_is_provisioned_and_bound_for_a_pod(kube, core):
    ns = kube.namespace
    core.create_namespaced_persistent_volume_claim(ns, _claim("data", "2Gi"))
    pvc = core.read_namespaced_persistent_volume_claim("data", ns)
    assert pvc.spec.storage_class_name, "the default StorageClass was not filled in"
    core.create_namespaced_pod(ns, _pod_with_claim("user", "data"))
    wait_until(lambda: core.read_namespaced_pod("user", ns).status.phase == "Running", timeout=90,
               message="pod with claim running")
    pvc = wait_until(lambda: (lambda c: c if c.status.phase == "Bound" else None)(
        core.read_namespaced_persistent_volume_claim("data", ns)), timeout=60, message="claim bound")
    assert pvc.spec.volume_name
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.claim_ref.name == "data" and pv.spec.claim_ref.namespace == ns


@pytest.mark.needs_storage_provisioner
@pytest.mark.needs_ready_pods
def test_pod_waits_for_a_missing_claim(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, _pod_with_claim("waiter", "later"))

    def unschedulable():
        p = core.read_namespaced_pod("waiter", ns)
        c = [c for c in (p.status.conditions or []) if c.type == "PodScheduled"]
        return c and c[0].status == "False"

    wait_until(unschedulable, timeout=30, message="pod unschedulable")
    assert core.read_namespaced_pod("waiter", ns).spec.node_name is None
    core.create_namespaced_persistent_volume_claim(ns, _claim("later"))
    wait_until(lambda: core.read_namespaced_pod("waiter", ns).status.phase == "Running", timeout=90,
               message="pod running once the claim exists")


@pytest.mark.needs_storage_provisioner
@pytest.mark.needs_ready_pods
def test_claim_in_use_is_protected(kube, core):
    ns = kube.namespace
    core.create_namespaced_persistent_volume_claim(ns, _claim("kept"))
    core.create_namespaced_pod(ns, _pod_with_claim("holder", "kept"))
    wait_until(lambda: core.read_namespaced_pod("holder", ns).status.phase == "Running", timeout=90,
               message="holder running")
    core.delete_namespaced_persistent_volume_claim("kept", ns)
    pvc = core.read_namespaced_persistent_volume_claim("kept", ns)
    assert pvc.metadata.deletion_timestamp is not None
    assert "kubernetes.io/pvc-protection" in pvc.metadata.finalizers
    core.delete_namespaced_pod("holder", ns, grace_period_seconds=0)

    def gone():
        try:
            core.read_namespaced_persistent_volume_claim("kept", ns)
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, timeout=60, message="claim removed after its pod")


@pytest.mark.needs_storage_provisioner
@pytest.mark.needs_ready_pods
def test_statefulset_volume_claim_templates(kube, apps, core):
    ns = kube.namespace
    ss = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
          "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                   "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                       {"name": "db", "image": PAUSE, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                   "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                       "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    apps.create_namespaced_stateful_set(ns, ss)
    kube.kubectl("rollout", "status", "statefulset/db", "--timeout=60s", timeout=75)
    claims = {c.metadata.name: c for c in core.list_namespaced_persistent_volume_claim(ns).items}
    assert {"data-db-0", "data-db-1"} <= set(claims)
    assert all(claims[n].status.phase == "Bound" for n in ("data-db-0", "data-db-1"))
    p0 = core.read_namespaced_pod("db-0", ns)
    assert any(v.persistent_volume_claim and v.persistent_volume_claim.claim_name == "data-db-0"
               for v in p0.spec.volumes)
