"""Helpers for the Kubernetes API conformance suite.

Every test here talks to the API only through the official ``kubernetes`` client, ``kubectl`` or ``helm``
with the kubeconfig of the ``kube`` fixture, so the suite runs unchanged against a real cluster
(``OPSBOOK_TEST_KUBECONFIG=/path/to/kubeconfig``). Images are real public ones, so that on a real
cluster they pull and behave as the test expects.
"""

from __future__ import annotations

import pytest
from opsbook.testing.kube import wait_until

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


__all__ = ["BUSYBOX", "PAUSE", "UNPULLABLE", "cond", "deployment", "pod", "wait_until"]
