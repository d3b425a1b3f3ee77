"""Label and field selectors on list (client and kubectl)."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from .conftest import pod, wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def labelled(kube, core):
    ns = kube.namespace
    for name, labels in [("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "web", "env": "dev"}),
                         ("c", {"tier": "db", "env": "prod"}), ("d", {"tier": "cache"})]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    return ns


def _names(core, ns, **kw):
    return {c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items
            if c.metadata.name != "kube-root-ca.crt"}


@pytest.mark.parametrize("selector,expected", [
    ("tier=web", {"a", "b"}),
    ("tier==web", {"a", "b"}),
    ("tier!=web", {"c", "d"}),
    ("tier=web,env=prod", {"a"}),
    ("env in (prod,dev)", {"a", "b", "c"}),
    ("env notin (prod)", {"b", "d"}),
    ("env", {"a", "b", "c"}),
    ("!env", {"d"}),
])
def test_label_selectors(core, labelled, selector, expected):
    assert _names(core, labelled, label_selector=selector) == expected


def test_field_selectors(core, labelled):
    assert _names(core, labelled, field_selector="metadata.name=b") == {"b"}
    assert _names(core, labelled, field_selector="metadata.name!=b") == {"a", "c", "d"}
    assert _names(core, labelled, field_selector=f"metadata.namespace={labelled}") == {"a", "b", "c", "d"}


def test_unsupported_field_selector_is_400(core, labelled):
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map(labelled, field_selector="data.x=1")
    assert ei.value.status == 400


@pytest.mark.needs_ready_pods
def test_pod_field_selectors_node_name_and_phase(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("p1"))
    p = wait_until(lambda: (lambda x: x if x.spec.node_name and x.status.phase == "Running" else None)(
        core.read_namespaced_pod("p1", ns)), message="pod p1 running")
    node = p.spec.node_name
    assert {x.metadata.name for x in core.list_namespaced_pod(ns, field_selector=f"spec.nodeName={node}").items} == {"p1"}
    assert core.list_namespaced_pod(ns, field_selector="spec.nodeName=no-such-node").items == []
    assert [x.metadata.name for x in core.list_namespaced_pod(ns, field_selector="status.phase=Running").items] == ["p1"]
    assert core.list_namespaced_pod(ns, field_selector="status.phase=Pending").items == []


def test_kubectl_selectors(kube, labelled):
    out = kube.kubectl("get", "configmaps", "-l", "tier in (web,db),env=prod", "-o", "name").stdout.split()
    assert out == ["configmap/a", "configmap/c"]
