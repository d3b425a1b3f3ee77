"""The Kubernetes client against a Kubernetes API through a kubeconfig (the ``kube`` fixture: the opsbook
test server, or the real cluster of OPSBOOK_TEST_KUBECONFIG: these tests run unchanged on both).

A ServiceAccount without a binding gets the API server's own 403. The error-mapping tests that need an
API to answer any status code, or to hang, use a tiny HTTP server on loopback instead: a real cluster
cannot be made to misbehave on demand."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opsbook import secrets
from opsbook.clients.kube import Kube, RolloutFailed, pod_row
from opsbook.errors import ClientError, Conflict, Forbidden, Invalid, NotFound, TimedOut, Unreachable

# a real, small image that runs until stopped, so that the same tests pass on a real cluster
IMAGE = "registry.k8s.io/pause:3.9"


def deployment(name: str, *, image: str = IMAGE, replicas: int = 2,
               readiness: dict | None = None) -> dict:
    labels = {"app.kubernetes.io/name": name}
    ctr = {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
    if readiness:
        ctr["readinessProbe"] = readiness
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [ctr]}}}}


def service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


@pytest.fixture
def client(kube) -> Iterator[Kube]:
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    yield k
    k.close()


def kubeconfig_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: c, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: c}}]\n")
    return path


# -- cluster and namespaces ------------------------------------------------------------------------

def test_version_and_namespaces(client, kube):
    assert client.version()["gitVersion"].startswith("v1.")
    assert client.namespace_exists(name=kube.namespace)
    assert not client.namespace_exists(name=kube.namespace + "-nope")


def test_ensure_namespace_dry_run_creates_nothing_then_creates_once(client, kube):
    extra = kube.namespace + "-x"
    try:
        assert client.ensure_namespace(name=extra, dry_run=True) is True
        assert not client.namespace_exists(name=extra)
        assert client.ensure_namespace(name=extra) is True
        assert client.ensure_namespace(name=extra) is False
        assert client.namespace_exists(name=extra)
    finally:
        client.delete(kind="Namespace", name=extra)


# -- server-side apply ------------------------------------------------------------------------------

def test_apply_dry_run_creates_nothing_then_apply_creates_and_is_idempotent(client, kube):
    objs = [deployment("web"), service("web")]
    planned = client.apply(objs, namespace=kube.namespace, dry_run=True)
    assert [o["kind"] for o in planned] == ["Deployment", "Service"]
    assert planned[0]["metadata"]["namespace"] == kube.namespace
    with pytest.raises(NotFound):
        client.get(kind="Deployment", name="web", namespace=kube.namespace)

    applied = client.apply(objs, namespace=kube.namespace)
    uid = applied[0]["metadata"]["uid"]
    managers = {m["manager"] for m in applied[0]["metadata"].get("managedFields") or []}
    assert "opsbook" in managers
    again = client.apply(objs, namespace=kube.namespace)
    assert again[0]["metadata"]["uid"] == uid
    assert client.get(kind="Service", name="web", namespace=kube.namespace)["spec"]["ports"][0]["port"] == 80


def test_apply_of_a_kind_the_cluster_does_not_serve_is_not_found(client, kube):
    with pytest.raises(NotFound, match="does not serve"):
        client.apply([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}],
                     namespace=kube.namespace)


def test_delete_is_missing_ok(client, kube):
    client.apply([service("gone")], namespace=kube.namespace)
    assert client.delete(kind="Service", name="gone", namespace=kube.namespace) is True
    assert client.delete(kind="Service", name="gone", namespace=kube.namespace) is False
    with pytest.raises(NotFound):
        client.delete(kind="Service", name="gone", namespace=kube.namespace, missing_ok=False)


# -- rollouts, pods, logs, events ------------------------------------------------------------------

def test_wait_rollout_succeeds_then_pods_are_ready_and_logs_read(client, kube):
    client.apply([deployment("api")], namespace=kube.namespace)
    rollout = client.wait_rollout(namespace=kube.namespace, name="api", timeout=60)
    assert rollout.replicas == 2 and rollout.status["availableReplicas"] == 2
    rows = client.pods(namespace=kube.namespace, selector="app.kubernetes.io/name=api")
    assert len(rows) == 2
    assert all(r["ready"] == "1/1" and r["phase"] == "Running" and r["node"] and not r["reason"] for r in rows)
    lines = client.logs(namespace=kube.namespace, pod=rows[0]["pod"], container="app", tail=20)
    assert isinstance(lines, list)
    events = client.events_for(kind="Pod", name=rows[0]["pod"], namespace=kube.namespace)
    assert any(e["reason"] == "Scheduled" for e in events)


def test_wait_rollout_fails_fast_on_an_image_that_never_pulls(client, kube):
    client.apply([deployment("broken", image="registry.invalid/ml-platform/proposer:0.0.0", replicas=1)],
                 namespace=kube.namespace)
    t0 = time.monotonic()
    with pytest.raises(RolloutFailed) as err:
        client.wait_rollout(namespace=kube.namespace, name="broken", timeout=90)
    assert time.monotonic() - t0 < 60
    assert err.value.reason in ("ErrImagePull", "ImagePullBackOff")
    (pod,) = err.value.pods
    assert pod["pod"].startswith("broken-") and pod["pod"] in str(err.value) and err.value.reason in str(err.value)


def test_wait_rollout_names_image_pull_back_off_when_asked_to_wait_for_it(client, kube):
    client.apply([deployment("backoff", image="registry.invalid/x:1", replicas=1)], namespace=kube.namespace)
    with pytest.raises(RolloutFailed) as err:
        client.wait_rollout(namespace=kube.namespace, name="backoff", timeout=90, fail_on={"ImagePullBackOff"})
    assert err.value.reason == "ImagePullBackOff" and "ImagePullBackOff" in str(err.value)


def test_wait_rollout_times_out_on_a_pod_that_never_gets_ready(client, kube):
    never = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    client.apply([deployment("slow", replicas=1, readiness=never)], namespace=kube.namespace)
    with pytest.raises(TimedOut) as err:
        client.wait_rollout(namespace=kube.namespace, name="slow", timeout=3)
    assert "slow" in str(err.value) and "available 0/1" in str(err.value)
    assert err.value.temporary


def test_wait_rollout_of_a_missing_deployment_is_not_found(client, kube):
    with pytest.raises(NotFound):
        client.wait_rollout(namespace=kube.namespace, name="nope", timeout=5)


def test_pod_row_reason_from_a_waiting_container():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
           "status": {"phase": "Pending", "containerStatuses": [
               {"name": "c", "ready": False, "restartCount": 3,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}
    assert pod_row(pod) == {"pod": "p", "ready": "0/1", "phase": "Pending", "restarts": 3, "node": "n1",
                            "reason": "ImagePullBackOff", "message": "Back-off pulling image"}


# -- access and secrets ----------------------------------------------------------------------------

def test_can_i_create_deployments_in_the_test_namespace(client, kube):
    assert client.can_i(verb="create", resource="deployments", group="apps", namespace=kube.namespace)
    review = client.access_review(verb="get", resource="pods", namespace=kube.namespace)
    assert review["allowed"] is True


def test_read_secret_key_is_a_k8s_reader_for_secret_references(client, kube):
    value = "s3cr3t-for-kube-client-test"
    client.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                   "stringData": {"password": value}}], namespace=kube.namespace)
    assert client.read_secret_key(kube.namespace, "db", "password") == value
    assert secrets.resolve(f"k8s:{kube.namespace}/db/password", k8s=client.read_secret_key) == value
    with pytest.raises(NotFound) as err:
        client.read_secret_key(kube.namespace, "db", "nokey")
    assert value not in str(err.value)


def test_conflict_on_create_of_an_existing_object(client, kube):
    with pytest.raises(Conflict):
        client.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": kube.namespace}})


# -- errors without a (well-behaved) cluster -------------------------------------------------------

def test_unreachable_cluster(tmp_path):
    from opsbook.testing.services import free_port

    k = Kube(kubeconfig=kubeconfig_for(tmp_path, f"http://127.0.0.1:{free_port()}"), context="c")
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as err:
        k.version()
    assert time.monotonic() - t0 < 10 and err.value.temporary
    assert err.value.__cause__ is not None and "127.0.0.1" in str(err.value)


def test_missing_context_is_unreachable_with_the_reason(tmp_path):
    with pytest.raises(Unreachable, match="no-such-context"):
        Kube(kubeconfig=kubeconfig_for(tmp_path, "http://127.0.0.1:1"), context="no-such-context")


class _StatusServer:
    """An HTTP server on loopback answering every request with one Kubernetes Status (or never)."""

    def __init__(self, code: int, reason: str, message: str, *, hang: bool = False):
        status = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                             "reason": reason, "code": code}).encode()
        release = self.release = threading.Event()
        seen = self.headers = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # noqa: ANN002
                pass

            def _answer(self):
                seen.append({k.lower(): v for k, v in self.headers.items()})
                if hang:
                    release.wait(10)
                    return
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(status)))
                self.end_headers()
                self.wfile.write(status)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def stop(self):
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.mark.parametrize("code,reason,expected", [
    (403, "Forbidden", Forbidden), (401, "Unauthorized", Forbidden), (422, "Invalid", Invalid),
    (404, "NotFound", NotFound), (409, "AlreadyExists", Conflict), (503, "ServiceUnavailable", Unreachable),
    (500, "InternalError", ClientError),
])
def test_api_status_codes_map_to_our_errors_with_the_cause_chained(tmp_path, code, reason, expected):
    from kubernetes.client.exceptions import ApiException

    msg = 'deployments.apps is forbidden: User "dev" cannot create resource "deployments"'
    srv = _StatusServer(code, reason, msg)
    try:
        k = Kube(kubeconfig=kubeconfig_for(tmp_path, srv.url), context="c")
        with pytest.raises(expected) as err:
            k.request("POST", "/apis/apps/v1/namespaces/default/deployments", body=deployment("x"))
        assert isinstance(err.value.__cause__, ApiException) and err.value.__cause__.status == code
        assert msg in str(err.value)
    finally:
        srv.stop()


@pytest.mark.kube
def test_a_service_account_without_a_binding_gets_forbidden_with_the_servers_words(kube, tmp_path):
    from kubernetes import client

    admin = kube.api_client()
    try:
        client.CoreV1Api(admin).create_namespaced_service_account(kube.namespace, {"metadata": {"name": "nobody"}})
        token = client.CoreV1Api(admin).create_namespaced_service_account_token("nobody", kube.namespace, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).status.token
    finally:
        admin.close()
    kc = kube.api.kubeconfig_with_token(token, tmp_path / "nobody.kubeconfig", kube.namespace)
    k = Kube(kubeconfig=str(kc), context="sa")
    try:
        with pytest.raises(Forbidden) as err:
            k.list_objects(kind="ConfigMap", namespace=kube.namespace)
        assert (f'configmaps is forbidden: User "system:serviceaccount:{kube.namespace}:nobody" cannot list '
                f'resource "configmaps" in API group "" in the namespace "{kube.namespace}"') in str(err.value)
        assert not k.can_i(verb="list", resource="configmaps", namespace=kube.namespace)
    finally:
        k.close()


def test_request_that_gets_no_answer_times_out(tmp_path):
    srv = _StatusServer(200, "", "", hang=True)
    try:
        k = Kube(kubeconfig=kubeconfig_for(tmp_path, srv.url), context="c", request_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(TimedOut):
            k.version()
        assert time.monotonic() - t0 < 5
    finally:
        srv.stop()


def test_closed_port_is_refused_quickly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    k = Kube(api_client=client.ApiClient(cfg))
    with pytest.raises(Unreachable):
        k.namespace_exists(name="x")


def test_the_kubeconfig_token_is_sent_as_a_bearer_token(tmp_path):
    srv = _StatusServer(404, "NotFound", "nope")
    try:
        k = Kube(kubeconfig=kubeconfig_for(tmp_path, srv.url), context="c")
        assert k.namespace_exists(name="x") is False
        assert srv.headers[0].get("authorization") == "Bearer t"
    finally:
        srv.stop()
