"""Helpers for the Kubernetes API conformance suite.

Every test here talks to the API only through the official ``kubernetes`` client, ``kubectl`` or ``helm``
with the kubeconfig of the ``kube`` fixture, so the suite runs unchanged against a real cluster
(``OPSBOOK_TEST_KUBECONFIG=/path/to/kubeconfig``). Images are real public ones, so that on a real
cluster they pull and behave as the test expects.

Not every cluster can do everything: an API server with its controller manager but no node, nodes
with a simulated kubelet (kwok) that never runs a container, no storage provisioner. A test that needs
one of these carries its marker (:data:`CAPABILITIES`) and is skipped, with the reason, where the
capability is absent. Each capability is probed once per session, when a test first needs it, by
trying it (a pod that must become Ready, a container that must exit 3, a claim that must bind): a
configuration that merely looks capable is not trusted. On the test server every probe must succeed
(``test_capabilities.py``), so that a skip cannot hide a test here.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opsbook.testing.kube import KubeApi, wait_until

PAUSE = "registry.k8s.io/pause:3.10"
BUSYBOX = "busybox:1.36"
UNPULLABLE = "registry.invalid/opsbook/app:1"


def deployment(name: str, image: str = PAUSE, replicas: int = 1, **container) -> dict:
    c = {"name": "app", "image": image, **container}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [c]}}}}


def pod(name: str, image: str = PAUSE, labels: dict | None = None, **container) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image, **container}]}}


def cond(obj, typ: str):
    for c in (obj.status.conditions or []):
        if c.type == typ:
            return c
    return None


@pytest.fixture
def core(kube):
    from kubernetes import client

    return client.CoreV1Api(kube.api_client())


@pytest.fixture
def apps(kube):
    from kubernetes import client

    return client.AppsV1Api(kube.api_client())


@pytest.fixture
def batch(kube):
    from kubernetes import client

    return client.BatchV1Api(kube.api_client())


# ------------------------------------------------------------------------------------ capabilities

CAPABILITIES = {
    "needs_ready_pods": "pods that get scheduled and become Ready (a scheduler and a kubelet, even a simulated one)",
    "needs_kubelet": "a kubelet that really runs containers (exit codes, restarts, probes, logs)",
    "needs_storage_provisioner": "a default StorageClass whose provisioner binds new claims",
}
#: how long a probe waits (a real cluster may pull an image first); OPSBOOK_TEST_PROBE_TIMEOUT overrides
PROBE_TIMEOUT = float(os.environ.get("OPSBOOK_TEST_PROBE_TIMEOUT", "90"))
DEFAULT_CLASS = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")


def pytest_configure(config: pytest.Config) -> None:
    for name, what in CAPABILITIES.items():
        config.addinivalue_line("markers", f"{name}: needs {what}; skipped with the probe's reason where absent "
                                           "(tests/kubeapi/conftest.py)")


class Capabilities:
    """What the cluster can do, each probed on first use in a namespace of its own."""

    def __init__(self, api: KubeApi, timeout: float = PROBE_TIMEOUT):
        from kubernetes import client

        self.api, self.timeout = api, timeout
        self.core = client.CoreV1Api(api.api_client())
        self.storage = client.StorageV1Api(self.core.api_client)
        self.namespace = ""
        self._missing: dict[str, str | None] = {}

    def missing(self, name: str) -> str | None:
        """Why ``name`` (a key of :data:`CAPABILITIES`) is absent, or None when it is there."""
        if name not in self._missing:
            probe: Callable[[], str | None] = getattr(self, "_" + name)
            self._missing[name] = probe()
        return self._missing[name]

    def close(self) -> None:
        if self.namespace:
            try:
                self.core.delete_namespace(self.namespace)
            except Exception:  # noqa: BLE001 - best effort: a leftover probe namespace harms no test
                pass
        self.core.api_client.close()

    # -- the probes --------------------------------------------------------------------------------
    def _ns(self) -> str:
        if not self.namespace:
            name = f"opsbook-probe-{secrets.token_hex(3)}"
            self.core.create_namespace({"metadata": {"name": name, "labels": {"opsbook.test/namespace": "true"}}})
            self.namespace = name
            wait_until(lambda: self._exists(self.core.read_namespaced_service_account, "default"), timeout=30,
                       message=f"the default ServiceAccount of {name}")
        return self.namespace

    def _exists(self, read: Callable[..., Any], name: str) -> bool:
        from kubernetes.client import ApiException

        try:
            read(name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return False
        return True

    def _wait(self, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            got = check()
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(0.2)

    def _pod(self, name: str, image: str, container: dict | None = None, **spec: Any) -> None:
        ctr = {"name": "probe", "image": image, **(container or {})}
        self.core.create_namespaced_pod(self._ns(), {"metadata": {"name": name}, "spec": {
            "terminationGracePeriodSeconds": 0, **spec, "containers": [ctr]}})

    def _needs_ready_pods(self) -> str | None:
        nodes = self.core.list_node().items
        usable = [n for n in nodes if not n.spec.unschedulable and any(
            c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))]
        if not usable:
            return f"no Ready schedulable node ({len(nodes)} node(s) in all)"
        self._pod("ready", PAUSE)

        def ready() -> bool:
            p = self.core.read_namespaced_pod("ready", self.namespace)
            return bool(cond(p, "Ready") and cond(p, "Ready").status == "True")

        if not self._wait(ready):
            p = self.core.read_namespaced_pod("ready", self.namespace)
            return f"a {PAUSE} pod is not Ready after {self.timeout:g} s (phase {p.status.phase})"
        return None

    def _needs_kubelet(self) -> str | None:
        why = self.missing("needs_ready_pods")
        if why:
            return why
        self._pod("exits", BUSYBOX, restartPolicy="Never", container={"command": ["sh", "-c", "exit 3"]})

        def exited() -> bool:
            p = self.core.read_namespaced_pod("exits", self.namespace)
            term = [cs.state.terminated for cs in p.status.container_statuses or [] if cs.state.terminated]
            return p.status.phase == "Failed" and bool(term) and term[0].exit_code == 3

        if not self._wait(exited):
            return (f"a container running `exit 3` did not fail its pod within {self.timeout:g} s: containers are "
                    "not really run here (a simulated kubelet?)")
        from kubernetes.client import ApiException

        try:
            self.core.read_namespaced_pod_log("exits", self.namespace)
        except ApiException as e:
            return f"the log of a finished container cannot be read: {e.status} {e.reason}"
        return None

    def _needs_storage_provisioner(self) -> str | None:
        classes = self.storage.list_storage_class().items
        default = next((c for c in classes if any((c.metadata.annotations or {}).get(a) == "true"
                                                  for a in DEFAULT_CLASS)), None)
        if default is None:
            return f"no default StorageClass ({len(classes)} class(es) in all)"
        if default.provisioner == "kubernetes.io/no-provisioner":
            return f"the default StorageClass {default.metadata.name} has no dynamic provisioner"
        ns = self._ns()
        self.core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "claim"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}})
        if default.volume_binding_mode == "WaitForFirstConsumer":  # binds for a pod only
            why = self.missing("needs_ready_pods")
            if why:
                return f"the default StorageClass {default.metadata.name} binds a claim for a running pod only: {why}"
            self._pod("consumer", PAUSE, volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "claim"}}],
                      container={"volumeMounts": [{"name": "d", "mountPath": "/d"}]})
        if not self._wait(lambda: self.core.read_namespaced_persistent_volume_claim("claim", ns).status.phase
                          == "Bound"):
            return (f"a claim of the default StorageClass {default.metadata.name} is not bound after "
                    f"{self.timeout:g} s (provisioner {default.provisioner})")
        return None


@pytest.fixture(scope="session")
def capabilities(kube_api: KubeApi) -> Iterator[Capabilities]:
    caps = Capabilities(kube_api)
    try:
        yield caps
    finally:
        caps.close()


@pytest.fixture(autouse=True)
def _skip_without_capability(request: pytest.FixtureRequest) -> None:
    """Skip a test marked with a capability the cluster lacks (probed before the test's namespace is made)."""
    wanted = [m.name for m in request.node.iter_markers() if m.name in CAPABILITIES]
    if not wanted:
        return
    caps: Capabilities = request.getfixturevalue("capabilities")
    for name in wanted:
        why = caps.missing(name)
        if why:
            pytest.skip(f"{name}: {why}")


__all__ = ["BUSYBOX", "CAPABILITIES", "PAUSE", "UNPULLABLE", "Capabilities", "cond", "deployment", "pod",
           "wait_until"]
