"""Pod logs through kubectl and the client; the fed lines part needs the test server."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException
from opsbook.testing.kube import requires_test_server

from .conftest import BUSYBOX, PAUSE, pod, wait_until

pytestmark = pytest.mark.kube


def _running(core, ns, name):
    return wait_until(lambda: (lambda p: p if p.status.phase == "Running" and p.status.container_statuses
                               and p.status.container_statuses[0].state.running else None)(
        core.read_namespaced_pod(name, ns)), message=f"pod {name} running")


@pytest.mark.needs_kubelet
def test_logs_of_a_running_pod_are_readable(kube, core):
    core.create_namespaced_pod(kube.namespace, pod("quiet", image=PAUSE))
    _running(core, kube.namespace, "quiet")
    assert kube.kubectl("logs", "quiet").returncode == 0
    assert isinstance(core.read_namespaced_pod_log("quiet", kube.namespace), str)


@pytest.mark.needs_kubelet
def test_logs_need_a_container_name_when_there_are_several(kube, core):
    p = pod("two", image=PAUSE)
    p["spec"]["containers"].append({"name": "second", "image": PAUSE})
    core.create_namespaced_pod(kube.namespace, p)
    _running(core, kube.namespace, "two")
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_pod_log("two", kube.namespace)
    assert ei.value.status == 400
    assert kube.kubectl("logs", "two", "-c", "second").returncode == 0


def test_logs_of_a_missing_pod_are_404(kube, core):
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_pod_log("nope", kube.namespace)
    assert ei.value.status == 404


@requires_test_server
def test_fed_log_lines_are_returned(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("talker", image=BUSYBOX, command=["sleep", "3600"]))
    _running(core, ns, "talker")
    kube.feed_logs("talker", "app", "first marker line\nsecond marker line\nthird marker line")
    out = kube.kubectl("logs", "talker").stdout
    assert "first marker line" in out and out.rstrip().endswith("third marker line")
    tail = kube.kubectl("logs", "talker", "--tail=2").stdout.splitlines()
    assert tail == ["second marker line", "third marker line"]
    stamped = kube.kubectl("logs", "talker", "--tail=1", "--timestamps").stdout
    assert stamped.split(" ", 1)[1].strip() == "third marker line" and stamped[:4].isdigit()
    assert "third marker line" in core.read_namespaced_pod_log("talker", ns, tail_lines=1)
    assert "first marker line" in kube.kubectl("logs", "talker", "--since=1m").stdout


@pytest.mark.needs_kubelet
def test_previous_logs_of_a_crashed_container(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("crashy", image=BUSYBOX, command=["sh", "-c", "exit 1"]))
    wait_until(lambda: (core.read_namespaced_pod("crashy", ns).status.container_statuses or [None])[0] and
               core.read_namespaced_pod("crashy", ns).status.container_statuses[0].restart_count >= 1,
               timeout=30, message="a restart")
    assert kube.kubectl("logs", "crashy", "--previous").returncode == 0
