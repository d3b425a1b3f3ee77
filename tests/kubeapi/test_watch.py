"""Watch: ADDED / MODIFIED / DELETED events from a resourceVersion, with timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import watch

pytestmark = pytest.mark.kube


def test_watch_sees_added_modified_deleted(kube, core):
    ns = kube.namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def writer():
        time.sleep(0.3)
        core.create_namespaced_config_map(ns, {"metadata": {"name": "w", "labels": {"watch": "me"}}})
        core.patch_namespaced_config_map("w", ns, {"data": {"k": "v"}})
        core.delete_namespaced_config_map("w", ns)

    t = threading.Thread(target=writer)
    t.start()
    events = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, label_selector="watch=me",
                       timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    t.join()
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_without_resource_version_starts_with_current_objects(kube, core):
    ns = kube.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "pre", "labels": {"w": "1"}}})
    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_config_map, ns, label_selector="w=1", timeout_seconds=2):
        seen.append((ev["type"], ev["object"].metadata.name))
        w.stop()
    assert seen == [("ADDED", "pre")]


def test_watch_times_out_when_nothing_happens(kube, core):
    ns = kube.namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    t0 = time.monotonic()
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                       label_selector="nothing=here", timeout_seconds=1))
    assert events == []
    assert time.monotonic() - t0 < 8


def test_kubectl_get_watch(kube, core):
    core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "kw"}})
    out = kube.kubectl("get", "configmap", "kw", "--watch", "--request-timeout=1s", "-o", "name", check=False)
    assert "configmap/kw" in out.stdout
