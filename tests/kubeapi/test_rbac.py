"""Authentication and RBAC as a real API server enforces them: ServiceAccount tokens (TokenRequest),
Roles and ClusterRoles through RoleBindings and ClusterRoleBindings, the 403 Status texts, access and
rules reviews answered for the caller, escalation prevention, and an apply that creates needing
``create``. Every test talks to the API through a kubeconfig holding a ServiceAccount's token, so the
suite runs unchanged against a real cluster (``OPSBOOK_TEST_KUBECONFIG``)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException
from opsbook.testing.kube import KubeApi, kubectl_binary, requires_test_server, wait_until

from .conftest import PAUSE, deployment, pod

pytestmark = pytest.mark.kube

RBAC = "rbac.authorization.k8s.io"


def status(e: ApiException) -> dict:
    return json.loads(e.body)


def denied(call, *args, **kwargs) -> dict:
    """The Status of a call that must fail."""
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    return status(info.value)


def raw(api: client.ApiClient, method: str, path: str, body=None, content_type: str = "application/json"):
    """(status, parsed body) of one request, whatever its status."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    m, url, headers, body, _ = api.param_serialize(method, path, header_params=headers, body=body,
                                                   auth_settings=["BearerToken"])
    resp = api.call_api(m, url, header_params=headers, body=body)
    data = resp.read()
    return resp.status, json.loads(data) if data else None


@dataclass
class Account:
    """A ServiceAccount of the test's namespace, with a token, and clients that use only that token."""

    name: str
    namespace: str
    user: str
    token: str
    kubeconfig: Path
    api: client.ApiClient
    core: client.CoreV1Api = field(init=False)

    def __post_init__(self):
        self.core = client.CoreV1Api(self.api)

    def review(self, verb: str, resource: str, group: str = "", namespace: str | None = None,
               **more) -> client.V1SubjectAccessReviewStatus:
        attrs = {"verb": verb, "resource": resource, "group": group, "namespace": namespace or self.namespace, **more}
        return client.AuthorizationV1Api(self.api).create_self_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}).status


@pytest.fixture
def accounts(kube, tmp_path):
    """``make(name, rules=..., cluster_rules=..., bind_cluster_role=...)``: a ServiceAccount granted
    ``rules`` by a Role in the test's namespace, ``cluster_rules`` by a ClusterRole (deleted afterwards),
    and an existing ClusterRole through a RoleBinding; returns its :class:`Account`."""
    admin = kube.api_client()
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    ns = kube.namespace
    cluster_objects: list[str] = []
    made: list[client.ApiClient] = []

    def make(name: str = "sa", rules: list | None = None, cluster_rules: list | None = None,
             bind_cluster_role: str | None = None) -> Account:
        core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
        subject = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
        if rules:
            rbac.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": rules})
            rbac.create_namespaced_role_binding(ns, {"metadata": {"name": name}, "subjects": subject,
                                                     "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name}})
        if bind_cluster_role:
            rbac.create_namespaced_role_binding(ns, {"metadata": {"name": f"{name}-{bind_cluster_role}"},
                                                     "subjects": subject, "roleRef": {
                                                         "apiGroup": RBAC, "kind": "ClusterRole",
                                                         "name": bind_cluster_role}})
        if cluster_rules:
            cname = f"{ns}-{name}"
            cluster_objects.append(cname)
            rbac.create_cluster_role({"metadata": {"name": cname}, "rules": cluster_rules})
            rbac.create_cluster_role_binding({"metadata": {"name": cname}, "subjects": subject,
                                              "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": cname}})
        token = core.create_namespaced_service_account_token(name, ns, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).status.token
        path = kube.api.kubeconfig_with_token(token, tmp_path / f"{name}.kubeconfig", ns)
        api = config.new_client_from_config(config_file=str(path))
        made.append(api)
        acct = Account(name, ns, f"system:serviceaccount:{ns}:{name}", token, path, api)
        plain = [r for r in (rules or []) + (cluster_rules or []) if not r.get("resourceNames")
                 and "*" not in r["resources"][0] + r["verbs"][0] + r["apiGroups"][0]]
        if plain:  # a real cluster's authorizer sees new bindings a moment later
            res, _, sub = plain[0]["resources"][0].partition("/")
            wait_until(lambda: acct.review(plain[0]["verbs"][0], res, plain[0]["apiGroups"][0],
                                           **({"subresource": sub} if sub else {})).allowed, timeout=15,
                       message=f"the RBAC of {name} in effect")
        return acct

    yield make
    for api in made:
        api.close()
    for cname in cluster_objects:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(cname)
            except ApiException:
                pass


# ------------------------------------------------------------------------------------- authentication


def test_a_token_request_token_authenticates_as_its_service_account(accounts, kube):
    acct = accounts("reader")
    info = client.AuthenticationV1Api(acct.api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).status.user_info
    assert info.username == acct.user
    assert info.groups == ["system:serviceaccounts", f"system:serviceaccounts:{acct.namespace}",
                           "system:authenticated"]
    sa = client.CoreV1Api(kube.api_client()).read_namespaced_service_account(acct.name, acct.namespace)
    assert info.uid == sa.metadata.uid
    who = subprocess.run([kubectl_binary(), "--kubeconfig", str(acct.kubeconfig), "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == acct.user, who.stderr
    st = denied(acct.core.list_namespaced_pod, acct.namespace)  # no binding: authenticated, not authorized
    assert st["code"] == 403


def test_kubectl_create_token_gives_a_token_of_that_account(accounts, kube):
    """`kubectl create token` finds serviceaccounts/token in discovery and posts a TokenRequest."""
    acct = accounts("issuer")
    r = kube.kubectl("create", "token", acct.name, "--duration", "10m", check=False)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    path = kube.api.kubeconfig_with_token(token, acct.kubeconfig.with_name("minted"),
                                 acct.namespace)
    who = subprocess.run([kubectl_binary(), "--kubeconfig", str(path), "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == acct.user, who.stderr
    found = json.loads(kube.kubectl("get", "--raw", "/api/v1").stdout)
    token_sub = [x for x in found["resources"] if x["name"] == "serviceaccounts/token"]
    assert token_sub == [{"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                          "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                          "verbs": ["create"]}]


def test_unknown_tokens_and_tokens_of_deleted_accounts_are_unauthorized(accounts, kube, tmp_path):
    acct = accounts("short-lived", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    assert acct.core.list_namespaced_config_map(acct.namespace).items is not None
    bogus = kube.api.kubeconfig_with_token("not-a-token-this-server-issued",
                                  tmp_path / "bogus.kubeconfig")
    with config.new_client_from_config(config_file=str(bogus)) as api:
        st = denied(client.CoreV1Api(api).list_namespaced_config_map, acct.namespace)
    assert (st["code"], st["reason"], st["message"]) == (401, "Unauthorized", "Unauthorized")
    client.CoreV1Api(kube.api_client()).delete_namespaced_service_account(acct.name, acct.namespace)

    def refused() -> bool:
        try:
            acct.core.list_namespaced_config_map(acct.namespace)
        except ApiException as e:
            return e.status == 401
        return False
    wait_until(refused, timeout=30, message="the deleted ServiceAccount's token refused")


def test_token_request_validation_and_audiences(accounts, kube):
    acct = accounts("aud", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    core = client.CoreV1Api(kube.api_client())
    st = denied(core.create_namespaced_service_account_token, acct.name, acct.namespace, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}})
    assert st["code"] == 422
    assert st["message"].endswith("spec.expirationSeconds: Invalid value: 60: may not specify a duration less "
                                  "than 10 minutes")
    tr = core.create_namespaced_service_account_token(acct.name, acct.namespace, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["vault.example"], "expirationSeconds": 600}})
    assert tr.spec.audiences == ["vault.example"] and tr.status.token and tr.status.expiration_timestamp
    other = kube.api.kubeconfig_with_token(tr.status.token, acct.kubeconfig.with_name("v.kc"))
    with config.new_client_from_config(config_file=str(other)) as api:  # not a token for the API server
        assert denied(client.CoreV1Api(api).list_namespaced_config_map, acct.namespace)["code"] == 401
    default = core.create_namespaced_service_account_token(acct.name, acct.namespace, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    assert default.spec.expiration_seconds == 3600 and default.spec.audiences


def test_a_pod_bound_token_ends_with_its_pod(accounts, kube):
    acct = accounts("bound", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    core = client.CoreV1Api(kube.api_client())
    p = pod("holder", PAUSE)
    p["spec"]["serviceAccountName"] = acct.name
    p["spec"]["terminationGracePeriodSeconds"] = 0
    created = core.create_namespaced_pod(acct.namespace, p)
    tr = core.create_namespaced_service_account_token(acct.name, acct.namespace, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": "holder", "uid": created.metadata.uid}}})
    path = kube.api.kubeconfig_with_token(tr.status.token, acct.kubeconfig.with_name("b.kc"))
    with config.new_client_from_config(config_file=str(path)) as api:
        bound = client.CoreV1Api(api)
        bound.list_namespaced_config_map(acct.namespace)
        core.delete_namespaced_pod("holder", acct.namespace, grace_period_seconds=0)

        def refused() -> bool:
            try:
                bound.list_namespaced_config_map(acct.namespace)
            except ApiException as e:
                return e.status == 401
            return False
        wait_until(refused, timeout=60, message="the token bound to a deleted pod refused")
    st = denied(core.create_namespaced_service_account_token, acct.name, acct.namespace, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "no-such-pod"}}})
    assert (st["code"], st["message"]) == (404, 'pods "no-such-pod" not found')


def test_anonymous_requests_see_only_the_public_info(kube, tmp_path):
    path = kube.api.kubeconfig_with_token(None, tmp_path / "anon.kubeconfig")
    with config.new_client_from_config(config_file=str(path)) as api:
        assert client.VersionApi(api).get_code().git_version  # system:public-info-viewer
        st = denied(client.CoreV1Api(api).list_namespace)
    if st["code"] == 403:  # anonymous authentication on (kubeadm, kind, this server); else 401
        assert st["message"] == ('namespaces is forbidden: User "system:anonymous" cannot list resource '
                                 '"namespaces" in API group "" at the cluster scope')
    else:
        assert st["code"] == 401


# ------------------------------------------------------------------------------------- authorization


def test_what_the_role_does_not_grant_is_forbidden_with_the_real_status(accounts):
    acct = accounts(rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    ns = acct.namespace
    assert acct.core.list_namespaced_pod(ns).items == []
    st = denied(acct.core.list_namespaced_secret, ns)
    assert st["code"] == 403 and st["reason"] == "Forbidden"
    assert st["message"] == (f'secrets is forbidden: User "{acct.user}" cannot list resource "secrets" in API '
                             f'group "" in the namespace "{ns}"')
    assert st["details"] == {"kind": "secrets"}
    st = denied(acct.core.read_namespaced_secret, "db", ns)
    assert st["message"] == (f'secrets "db" is forbidden: User "{acct.user}" cannot get resource "secrets" in '
                             f'API group "" in the namespace "{ns}"')
    assert st["details"] == {"name": "db", "kind": "secrets"}
    st = denied(client.AppsV1Api(acct.api).create_namespaced_deployment, ns, deployment("d"))
    assert st["message"] == (f'deployments.apps is forbidden: User "{acct.user}" cannot create resource '
                             f'"deployments" in API group "apps" in the namespace "{ns}"')
    assert st["details"] == {"group": "apps", "kind": "deployments"}
    st = denied(acct.core.list_node)
    assert st["message"] == (f'nodes is forbidden: User "{acct.user}" cannot list resource "nodes" in API group '
                             f'"" at the cluster scope')
    st = denied(acct.core.list_namespaced_pod, "default")  # the Role is in the test's namespace only
    assert st["message"].endswith('cannot list resource "pods" in API group "" in the namespace "default"')
    st = denied(acct.core.delete_collection_namespaced_pod, ns)
    assert 'cannot deletecollection resource "pods"' in st["message"]


def test_watch_needs_the_watch_verb(accounts):
    acct = accounts(rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    acct.core.list_namespaced_config_map(acct.namespace)
    st = denied(acct.core.list_namespaced_config_map, acct.namespace, watch=True, timeout_seconds=1)
    assert f'User "{acct.user}" cannot watch resource "configmaps"' in st["message"]


def test_resource_names_subresources_and_wildcards(accounts, kube):
    acct = accounts(rules=[
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"], "resourceNames": ["mine"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["*"], "verbs": ["*"]},
    ])
    ns = acct.namespace
    admin = client.CoreV1Api(kube.api_client())
    for name in ("mine", "theirs"):
        admin.create_namespaced_config_map(ns, {"metadata": {"name": name}})
    assert acct.core.read_namespaced_config_map("mine", ns).metadata.name == "mine"
    st = denied(acct.core.read_namespaced_config_map, "theirs", ns)
    assert st["message"].startswith('configmaps "theirs" is forbidden: ')
    assert 'cannot list resource "configmaps"' in denied(acct.core.list_namespaced_config_map, ns)["message"]
    named = acct.core.list_namespaced_config_map(ns, field_selector="metadata.name=mine")  # names the object
    assert [c.metadata.name for c in named.items] == ["mine"]
    assert acct.review("get", "pods", subresource="log").allowed
    assert not acct.review("get", "pods").allowed
    assert acct.review("get", "deployments", "apps", subresource="scale").allowed
    assert not acct.review("get", "deployments", "apps").allowed
    assert not acct.review("update", "deployments", "apps", subresource="scale").allowed
    assert acct.review("deletecollection", "cronjobs", "batch").allowed
    client.BatchV1Api(acct.api).list_namespaced_job(ns)


def test_bindings_to_cluster_roles_groups_and_users(accounts, kube):
    viewer = accounts("viewer", bind_cluster_role="view")
    ns = viewer.namespace
    assert client.AppsV1Api(viewer.api).list_namespaced_deployment(ns).items == []
    viewer.core.list_namespaced_pod(ns)
    assert "in the namespace \"default\"" in denied(viewer.core.list_namespaced_pod, "default")["message"]
    assert 'cannot list resource "secrets"' in denied(viewer.core.list_namespaced_secret, ns)["message"]  # view

    other, third = accounts("other"), accounts("third")
    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(ns, {"metadata": {"name": "cm-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "by-group"}, "roleRef": {
        "apiGroup": RBAC, "kind": "Role", "name": "cm-reader"}, "subjects": [
        {"apiGroup": RBAC, "kind": "Group", "name": f"system:serviceaccounts:{ns}"}]})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "ep-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "by-user"}, "roleRef": {
        "apiGroup": RBAC, "kind": "Role", "name": "ep-reader"}, "subjects": [
        {"apiGroup": RBAC, "kind": "User", "name": other.user}]})
    wait_until(lambda: other.review("list", "endpoints").allowed, timeout=15, message="the bindings in effect")
    for acct in (other, third):  # the group binding covers every ServiceAccount of the namespace
        acct.core.list_namespaced_config_map(ns)
    other.core.list_namespaced_endpoints(ns)  # the User binding names the ServiceAccount's user name
    assert 'cannot list resource "endpoints"' in denied(third.core.list_namespaced_endpoints, ns)["message"]


def test_discovery_and_self_reviews_need_no_binding(accounts):
    acct = accounts("nobody")
    assert client.VersionApi(acct.api).get_code().git_version
    assert "v1" in client.CoreApi(acct.api).get_api_versions().versions
    assert any(g.name == "apps" for g in client.ApisApi(acct.api).get_api_versions().groups)
    assert any(r.name == "deployments" for r in client.AppsV1Api(acct.api).get_api_resources().resources)
    review = acct.review("list", "pods")
    assert review.allowed is False
    status_code, body = raw(acct.api, "GET", "/no/such/path")
    assert status_code == 403 and body["message"] == f'forbidden: User "{acct.user}" cannot get path "/no/such/path"'
    assert body["details"] == {}


def test_access_and_rules_reviews_answer_for_the_caller(accounts):
    acct = accounts("rev", rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    ns = acct.namespace
    yes = acct.review("list", "pods")
    assert yes.allowed is True
    assert yes.reason == f'RBAC: allowed by RoleBinding "rev/{ns}" of Role "rev" to ServiceAccount "rev/{ns}"'
    no = acct.review("delete", "pods")
    assert no.allowed is False and not no.denied
    assert acct.review("list", "pods", namespace="default").allowed is False
    rules = client.AuthorizationV1Api(acct.api).create_self_subject_rules_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": ns}}).status
    found = [(r.verbs, r.api_groups, r.resources) for r in rules.resource_rules]
    assert (["get", "list"], [""], ["pods"]) in found
    assert any(r.resources == ["selfsubjectaccessreviews", "selfsubjectrulesreviews"] for r in rules.resource_rules)
    assert any("/apis/*" in r.non_resource_urls for r in rules.non_resource_rules)
    assert not any("*" in (r.resources or []) for r in rules.resource_rules)  # nothing like cluster-admin


def test_impersonation_needs_the_impersonate_verb(accounts, kube):
    acct = accounts("imp", rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    ns = acct.namespace
    can = kube.kubectl("auth", "can-i", "list", "pods", f"--as={acct.user}", check=False)
    assert can.stdout.strip() == "yes", can.stdout + can.stderr
    cannot = kube.kubectl("auth", "can-i", "delete", "pods", f"--as={acct.user}", check=False)
    assert cannot.stdout.strip() == "no" and cannot.returncode == 1
    with client.ApiClient(acct.api.configuration, header_name="Impersonate-User", header_value="bob") as as_sa:
        st = denied(client.CoreV1Api(as_sa).list_namespaced_pod, ns)
    assert st["message"] == (f'users "bob" is forbidden: User "{acct.user}" cannot impersonate resource "users" '
                             f'in API group "" at the cluster scope')


# ------------------------------------------------------------------------------------- writes


def test_granting_more_than_you_hold_is_refused_unless_you_may_escalate_or_bind(accounts, kube):
    acct = accounts("granter", rules=[
        {"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        cluster_rules=[{"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["create"]}])
    ns, user = acct.namespace, acct.user
    groups = f'["system:serviceaccounts" "system:serviceaccounts:{ns}" "system:authenticated"]'
    rbac = client.RbacAuthorizationV1Api(acct.api)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "held"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    st = denied(rbac.create_namespaced_role, ns, {"metadata": {"name": "more"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete", "deletecollection"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}]})
    assert st["code"] == 403 and st["details"] == {"name": "more", "group": RBAC, "kind": "roles"}
    assert st["message"] == (
        f'roles.{RBAC} "more" is forbidden: user "{user}" (groups={groups}) is attempting to grant RBAC permissions '
        f'not currently held:\n{{APIGroups:[""], Resources:["pods"], Verbs:["delete" "deletecollection"]}}\n'
        f'{{APIGroups:["apps"], Resources:["deployments"], Verbs:["list"]}}')
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "held"}, "roleRef": {
        "apiGroup": RBAC, "kind": "Role", "name": "held"}, "subjects": [{"kind": "User", "name": "alice"}]})
    st = denied(rbac.create_namespaced_role_binding, ns, {"metadata": {"name": "edit"}, "roleRef": {
        "apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}]})
    assert st["message"].startswith(f'rolebindings.{RBAC} "edit" is forbidden: user "{user}" (groups={groups}) is '
                                    f'attempting to grant RBAC permissions not currently held:\n')
    st = denied(rbac.create_cluster_role, {"metadata": {"name": f"{ns}-agg"}, "aggregationRule": {
        "clusterRoleSelectors": [{"matchLabels": {"example.test/aggregate": "true"}}]}})
    assert st["message"] == (f'clusterroles.{RBAC} "{ns}-agg" is forbidden: must have cluster-admin privileges to '
                             f'use the aggregationRule')

    admin = client.RbacAuthorizationV1Api(kube.api_client())
    admin.create_namespaced_role(ns, {"metadata": {"name": "delegate"}, "rules": [
        {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["escalate"]},
        {"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["edit"]}]})
    admin.create_namespaced_role_binding(ns, {"metadata": {"name": "delegate"}, "roleRef": {
        "apiGroup": RBAC, "kind": "Role", "name": "delegate"}, "subjects": [
        {"kind": "ServiceAccount", "name": acct.name, "namespace": ns}]})
    wait_until(lambda: acct.review("escalate", "roles", RBAC).allowed, timeout=15, message="escalate in effect")
    rbac.create_namespaced_role(ns, {"metadata": {"name": "more"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]})
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "edit"}, "roleRef": {
        "apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}]})
    assert "edit" in {b.metadata.name for b in admin.list_namespaced_role_binding(ns).items}
    assert admin.read_namespaced_role("more", ns).rules[0].verbs == ["delete"]


def test_an_apply_that_creates_needs_create_as_well_as_patch(accounts, kube):
    acct = accounts("applier", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}])
    ns = acct.namespace
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"}}
    path = f"/api/v1/namespaces/{ns}/configmaps/applied?fieldManager=t"
    code, st = raw(acct.api, "PATCH", path, body, "application/apply-patch+yaml")
    assert code == 403 and st["message"].startswith('configmaps "applied" is forbidden:'), st
    assert "cannot patch" not in st["message"]  # the patch was allowed: the create was not
    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(ns, {"metadata": {"name": "applied"}})
    code, out = raw(acct.api, "PATCH", path, body, "application/apply-patch+yaml")
    assert code == 200 and out["data"] == {"k": "v"}


# ------------------------------------------------------------------------------------- the kubelet


@requires_test_server
@pytest.mark.services  # starts a test server of its own, in this process, to see what its kubelet mounted
def test_the_kubelet_gives_a_pod_a_token_of_its_own_service_account(tmp_path):
    from opsbook.testing.kubeapi import authz, start
    from opsbook.testing.kubeapi.__main__ import write_kubeconfig

    srv = start(port=0, nodes=1, ready_delay=0.1)
    try:
        admin_kc = tmp_path / "admin.kubeconfig"
        write_kubeconfig(str(admin_kc), srv.url, srv.ca_pem)
        with config.new_client_from_config(config_file=str(admin_kc)) as admin:
            core = client.CoreV1Api(admin)
            core.create_namespace({"metadata": {"name": "app"}})
            wait_until(lambda: core.read_namespaced_service_account("default", "app"), timeout=10)
            core.create_namespaced_service_account("app", {"metadata": {"name": "runner"}})
            p = pod("job", PAUSE)
            p["spec"]["serviceAccountName"] = "runner"
            core.create_namespaced_pod("app", p)
            quiet = pod("quiet", PAUSE)
            quiet["spec"]["automountServiceAccountToken"] = False
            core.create_namespaced_pod("app", quiet)

            def mounted(name: str):
                uid = core.read_namespaced_pod(name, "app").metadata.uid
                sim = srv.cluster.sim.get(uid) or {}
                return sim if "start" in sim else None
            creds = wait_until(lambda: mounted("job"), timeout=10)["serviceaccount"]
            assert "serviceaccount" not in wait_until(lambda: mounted("quiet"), timeout=10)
            assert creds["namespace"] == "app" and creds["ca.crt"] == srv.ca_pem
            assert creds["token"] != authz.ADMIN_TOKEN
            own = KubeApi(kubeconfig=str(admin_kc), context="opsbook-test", url="", is_test_server=True)
            kc = own.kubeconfig_with_token(creds["token"], tmp_path / "pod.kc", "app")
            with config.new_client_from_config(config_file=str(kc)) as api:
                info = client.AuthenticationV1Api(api).create_self_subject_review(
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).status.user_info
                assert info.username == "system:serviceaccount:app:runner"
                assert info.extra["authentication.kubernetes.io/pod-name"] == ["job"]
                assert denied(client.CoreV1Api(api).list_namespaced_pod, "app")["code"] == 403  # no RBAC: nothing
                core.delete_namespaced_pod("job", "app", grace_period_seconds=0)
                wait_until(lambda: denied(client.CoreV1Api(api).list_namespaced_pod, "app")["code"] == 401,
                           timeout=10, message="the pod's token refused once the pod is gone")
            # a token the legacy token controller keeps in a Secret authenticates while the Secret holds it
            sa = srv.cluster.raw(authz.SAS, "app", "runner")
            secret = {"metadata": {"name": "runner-token", "annotations": {
                "kubernetes.io/service-account.name": "runner"}}, "type": authz.SA_TOKEN_TYPE}
            legacy = authz.legacy_token(srv.cluster, {"metadata": {"name": "runner-token"}}, sa)
            import base64
            secret["data"] = {"token": base64.b64encode(legacy.encode()).decode()}
            core.create_namespaced_secret("app", secret)
            kc = own.kubeconfig_with_token(legacy, tmp_path / "legacy.kc", "app")
            with config.new_client_from_config(config_file=str(kc)) as api:
                assert denied(client.CoreV1Api(api).list_namespaced_pod, "app")["code"] == 403
                core.delete_namespaced_secret("runner-token", "app")
                time.sleep(0.1)
                assert denied(client.CoreV1Api(api).list_namespaced_pod, "app")["code"] == 401
    finally:
        srv.stop()
