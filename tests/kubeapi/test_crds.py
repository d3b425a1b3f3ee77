"""CustomResourceDefinitions: establishing, serving custom resources (CRUD, watch, merge and
server-side apply patches, several versions), namespace cleanup and removal with the CRD."""

from __future__ import annotations

import secrets

import pytest
import yaml
from kubernetes.client import ApiException

from .conftest import wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def crd(kube_api):
    """A CRD with a random group, so that tests never collide (cluster-scoped), removed afterwards."""
    from kubernetes import client

    group = f"t{secrets.token_hex(3)}.opsbook.test"
    body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [
                         {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}},
                         {"name": "v1beta1", "served": True, "storage": False,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ext = client.ApiextensionsV1Api(kube_api.api_client())
    ext.create_custom_resource_definition(body)
    kube_api.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s", timeout=45)
    yield group
    try:
        ext.delete_custom_resource_definition(f"widgets.{group}")
    except ApiException:
        pass


def _widgets(kube):
    from kubernetes import client

    return client.CustomObjectsApi(kube.api_client())


def test_custom_resources_crud_and_versions(kube, crd):
    co = _widgets(kube)
    ns = kube.namespace
    w = co.create_namespaced_custom_object(crd, "v1", ns, "widgets", {
        "apiVersion": f"{crd}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})
    assert w["metadata"]["uid"] and w["metadata"]["generation"] == 1
    got = co.get_namespaced_custom_object(crd, "v1beta1", ns, "widgets", "w1")
    assert got["apiVersion"] == f"{crd}/v1beta1" and got["spec"] == {"size": 3}
    co.patch_namespaced_custom_object(crd, "v1", ns, "widgets", "w1", {"spec": {"size": 4}})
    got = co.get_namespaced_custom_object(crd, "v1", ns, "widgets", "w1")
    assert got["spec"]["size"] == 4 and got["metadata"]["generation"] == 2
    co.patch_namespaced_custom_object_status(crd, "v1", ns, "widgets", "w1", {"status": {"ready": True}})
    got = co.get_namespaced_custom_object(crd, "v1", ns, "widgets", "w1")
    assert got["status"] == {"ready": True} and got["metadata"]["generation"] == 2
    listed = co.list_namespaced_custom_object(crd, "v1", ns, "widgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    co.delete_namespaced_custom_object(crd, "v1", ns, "widgets", "w1")
    with pytest.raises(ApiException) as ei:
        co.get_namespaced_custom_object(crd, "v1", ns, "widgets", "w1")
    assert ei.value.status == 404


def test_kubectl_apply_server_side_and_strategic_patch_refused(kube, crd, tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": f"{crd}/v1", "kind": "Widget", "metadata": {"name": "w2"},
                                 "spec": {"size": 1, "color": "blue"}}))
    kube.kubectl("apply", "-f", str(f))
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    assert "widget" in kube.kubectl("get", f"widgets.{crd}", "-o", "name").stdout
    out = kube.kubectl("patch", f"widgets.{crd}", "w2", "--type=strategic", "-p", '{"spec":{"size":2}}',
                       check=False)
    assert out.returncode != 0
    kube.kubectl("patch", f"widgets.{crd}", "w2", "--type=merge", "-p", '{"spec":{"size":2}}')


def test_deleting_the_crd_removes_its_objects(kube_api, kube, crd):
    from kubernetes import client

    co = _widgets(kube)
    co.create_namespaced_custom_object(crd, "v1", kube.namespace, "widgets", {
        "apiVersion": f"{crd}/v1", "kind": "Widget", "metadata": {"name": "doomed"}})
    client.ApiextensionsV1Api(kube_api.api_client()).delete_custom_resource_definition(f"widgets.{crd}")

    def gone():
        try:
            co.list_namespaced_custom_object(crd, "v1", kube.namespace, "widgets")
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, timeout=60, message="custom resource API gone")
