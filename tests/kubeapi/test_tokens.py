"""The test server's legacy ServiceAccount token controller (kube-controller-manager before v1.24): off
by default, as on a current cluster; switched on for a namespace, it issues a referenced
``<sa>-token-xxxxx`` Secret per ServiceAccount, re-issues it when deleted, fills in token Secrets made
by hand and deletes those of a ServiceAccount that is gone."""

from __future__ import annotations

import base64

import pytest
from opsbook.testing.kube import requires_test_server

from .conftest import wait_until

pytestmark = [pytest.mark.kube, requires_test_server]

TOKEN = "kubernetes.io/service-account-token"


def _tokens(core, ns: str, sa: str) -> list:
    return sorted((s for s in core.list_namespaced_secret(ns, field_selector=f"type={TOKEN}").items
                   if (s.metadata.annotations or {}).get("kubernetes.io/service-account.name") == sa),
                  key=lambda s: s.metadata.name)


def test_off_by_default_then_issues_and_reissues_referenced_tokens(kube, core):
    ns = kube.namespace
    core.create_namespaced_service_account(ns, {"metadata": {"name": "robot"}})
    assert kube.api.server_state()["tokenController"] == {"enabled": False, "everywhere": False, "namespaces": []}
    assert not _tokens(core, ns, "robot") and not core.read_namespaced_service_account("robot", ns).secrets

    assert kube.api.set_token_controller(True, namespaces=[ns])["namespaces"] == [ns]
    (first,) = wait_until(lambda: _tokens(core, ns, "robot"), timeout=10, message="a token for robot")
    sa = core.read_namespaced_service_account("robot", ns)
    assert [r.name for r in sa.secrets] == [first.metadata.name] and first.metadata.name.startswith("robot-token-")
    assert first.metadata.annotations["kubernetes.io/service-account.uid"] == sa.metadata.uid
    assert set(first.data) == {"token", "ca.crt", "namespace"} and base64.b64decode(first.data["namespace"]) == ns.encode()
    assert _tokens(core, ns, "default")  # every ServiceAccount of the namespace

    core.delete_namespaced_secret(first.metadata.name, ns)
    (second,) = wait_until(lambda: [s for s in _tokens(core, ns, "robot") if s.metadata.name != first.metadata.name],
                           timeout=10, message="a re-issued token")
    assert [r.name for r in core.read_namespaced_service_account("robot", ns).secrets] == [second.metadata.name]
    assert second.data["token"] != first.data["token"]

    # a token Secret made by hand is filled in; the tokens of a deleted ServiceAccount go
    core.create_namespaced_secret(ns, {"metadata": {"name": "robot-manual", "annotations": {
        "kubernetes.io/service-account.name": "robot"}}, "type": TOKEN})
    manual = wait_until(lambda: (lambda s: s if s.data and s.data.get("token") else None)(
        core.read_namespaced_secret("robot-manual", ns)), timeout=10, message="the manual token filled in")
    assert set(manual.data) == {"token", "ca.crt", "namespace"}
    core.delete_namespaced_service_account("robot", ns)
    wait_until(lambda: not _tokens(core, ns, "robot"), timeout=10, message="robot's tokens deleted")

    kube.api.set_token_controller(False, namespaces=[ns])
    (default,) = _tokens(core, ns, "default")
    core.delete_namespaced_secret(default.metadata.name, ns)
    import time

    time.sleep(0.5)  # several controller ticks
    assert not _tokens(core, ns, "default")


def test_a_bad_switch_is_refused(kube):
    with pytest.raises(AssertionError, match="400"):
        kube.api._admin("POST", "/_opsbook/token-controller", b'{"enabled": "yes"}')
