"""Namespace deletion empties the namespace; finalizers hold objects until they are removed."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from .conftest import deployment, wait_until

pytestmark = pytest.mark.kube


def _gone(fn, *args):
    try:
        fn(*args)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def test_namespace_deletion_removes_its_objects(kube_api):
    from kubernetes import client

    api = kube_api.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name = "t-nsdel-" + __import__("secrets").token_hex(3)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "c"}})
    apps.create_namespaced_deployment(name, deployment("d"))
    core.delete_namespace(name, _preload_content=False)
    ns = None
    try:
        ns = core.read_namespace(name)
    except ApiException as e:
        assert e.status == 404
    if ns is not None:
        assert ns.status.phase == "Terminating"
        with pytest.raises(ApiException) as ei:
            core.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
        assert ei.value.status in (403, 404)
    wait_until(lambda: _gone(core.read_namespace, name), timeout=120, message="namespace removed")
    assert not [c for c in core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={name}").items]


def test_finalizer_keeps_object_until_removed(kube, core):
    ns = kube.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["opsbook.test/hold"]}})
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["opsbook.test/hold"]
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    wait_until(lambda: _gone(core.read_namespaced_config_map, "held", ns), timeout=10, message="object removed")


def test_kubectl_delete_namespace_waits_until_gone(kube_api):
    name = "t-kdel-" + __import__("secrets").token_hex(3)
    kube_api.kubectl("create", "namespace", name)
    kube_api.kubectl("create", "configmap", "x", "-n", name)
    kube_api.kubectl("delete", "namespace", name, "--timeout=60s", timeout=90)
    out = kube_api.kubectl("get", "namespace", name, check=False)
    assert out.returncode != 0 and "NotFound" in out.stderr
