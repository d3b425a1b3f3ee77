"""A token that comes back after containment. Clusters that still auto-create ServiceAccount token
Secrets (before v1.24, or with ``LegacyServiceAccountTokenNoAutoGeneration=false``) re-issue one
seconds after `security-incident-response` deletes it; the test server runs that legacy token
controller when asked (``KubeApi.set_token_controller``). Containment must name the new Secret and say
how to stop it; recovery lists it next to what it restored; without the controller nothing is said and
nothing is waited for."""

from __future__ import annotations

import base64
import time

import pytest
from opsbook.clients import Clients
from opsbook.clients.kube import Kube
from opsbook.errors import NotFound
from opsbook.ops import security_incident_response as incident
from opsbook.ops.security_incident_response import tokens
from opsbook.targets import LOCAL
from opsbook.testing.kube import requires_test_server, wait_until
from opsbook.testing.runbook import make_context

pytestmark = pytest.mark.kube

RUNBOOK = "security-incident-response"


class Evidence:
    def __init__(self):
        self.saved: dict[str, bytes] = {}

    def __call__(self, name, content, *, description=""):
        import hashlib
        import json

        data = json.dumps(content, sort_keys=True).encode()
        self.saved[name] = data
        return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "description": description}


def incident_ctx(k: Kube, ns: str, **params):
    return make_context(RUNBOOK, mode="apply", target=LOCAL, clients=Clients(LOCAL, kube=k), evidence=Evidence(),
                        incident_id="INC-9", namespace=ns, selector="app=none", timeout=30.0,
                        compromised_accounts=[f"{ns}/web-sa"], **params)


@pytest.fixture
def k(kube):
    client = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "web-edit"},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
          "subjects": [{"kind": "ServiceAccount", "name": "web-sa", "namespace": kube.namespace}]}
    client.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-sa"}}, rb],
                 namespace=kube.namespace)
    try:
        yield client
    finally:
        client.close()


@requires_test_server  # set_token_controller: the test server's admin endpoint
def test_a_token_reissued_after_containment_is_named_with_how_to_stop_it(kube, k):
    ns = kube.namespace
    kube.api.set_token_controller(True, namespaces=[ns])
    first = wait_until(lambda: tokens.token_names(incident_ctx(k, ns), (ns, "web-sa")), timeout=10,
                       message="the token controller's Secret for web-sa")[0]
    assert first.startswith("web-sa-token-") and len(first) == len("web-sa-token-") + 5
    sa = k.get(kind="ServiceAccount", name="web-sa", namespace=ns)
    assert sa["secrets"] == [{"name": first}]  # referenced, as the v1.24 controller does
    data = k.get(kind="Secret", name=first, namespace=ns)["data"]
    assert set(data) == {"token", "ca.crt", "namespace"} and base64.b64decode(data["namespace"]).decode() == ns

    ctx = incident_ctx(k, ns)
    plan = incident.plan_disable_accounts(ctx)
    assert f"ServiceAccount(s) {ns}/web-sa reference their token Secret" in plan.summary

    res = incident.disable_accounts(ctx, reissue_wait=15.0, poll=0.1)
    (new,) = tokens.token_names(ctx, (ns, "web-sa"))
    assert new != first and new.startswith("web-sa-token-")
    with pytest.raises(NotFound):
        k.get(kind="Secret", name=first, namespace=ns)
    assert res.outcome == "failed" and res.details["reissued"] == [f"{ns}/{new}"]
    assert f"token Secret(s) {ns}/{new} were re-issued by the cluster's legacy token controller" in res.summary
    assert {"object": f"Secret/{ns}/{new}", "role": "",
            "action": "RE-ISSUED by the legacy token controller: a valid token"} in res.rows
    advice = res.show[0].text
    assert "LegacyServiceAccountTokenNoAutoGeneration" in advice and f"kubectl -n {ns} delete serviceaccount web-sa" in advice

    # recovery puts the deleted token back (the controller fills it) and names the one issued meanwhile
    back = incident.reenable_accounts(_recovery(k, ns, ctx))
    assert back.outcome == "changed" and back.details["other_tokens"] == [f"{ns}/{new}"]
    assert k.get(kind="Secret", name=first, namespace=ns)


def _recovery(k: Kube, ns: str, containment):
    ctx = incident_ctx(k, ns, reenable_accounts=True)
    ctx.disabled.extend(containment.disabled)  # as in one run of containment and recovery
    return ctx


def test_without_a_token_controller_nothing_is_reported_nor_waited_for(kube, k):
    ns = kube.namespace
    # a token Secret made by hand, not referenced by its ServiceAccount (v1.24+)
    k.apply([{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "web-sa-manual", "annotations": {"kubernetes.io/service-account.name": "web-sa"}}}],
            namespace=ns)
    ctx = incident_ctx(k, ns)
    assert "legacy token controller" not in incident.plan_disable_accounts(ctx).summary
    t0 = time.monotonic()
    res = incident.disable_accounts(ctx, reissue_wait=30.0, poll=0.1)
    assert time.monotonic() - t0 < 10  # no ServiceAccount referenced it: no reason to wait
    assert res.outcome == "changed" and "reissued" not in res.details and not res.show
    assert tokens.token_names(ctx, (ns, "web-sa")) == []


def test_a_referenced_token_is_watched_for_and_nothing_reported_when_none_comes_back(kube, k):
    ns = kube.namespace
    # a cluster upgraded to v1.24+: the old auto-created Secret is still referenced, nothing re-issues it
    k.apply([{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "web-sa-token-old12", "annotations": {"kubernetes.io/service-account.name": "web-sa"}}}],
            namespace=ns)
    k.patch(kind="ServiceAccount", name="web-sa", namespace=ns, patch={"secrets": [{"name": "web-sa-token-old12"}]})
    ctx = incident_ctx(k, ns)
    assert f"ServiceAccount(s) {ns}/web-sa reference their token Secret" in incident.plan_disable_accounts(ctx).summary
    t0 = time.monotonic()
    res = incident.disable_accounts(ctx, reissue_wait=1.0, poll=0.1)
    assert time.monotonic() - t0 >= 1.0  # watched for the whole wait
    assert res.outcome == "changed" and "reissued" not in res.details and not res.show
    assert tokens.token_names(ctx, (ns, "web-sa")) == []
