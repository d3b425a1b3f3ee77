"""Controllers: Deployment -> ReplicaSet -> Pods, rollouts, rollbacks, DaemonSets, StatefulSets, Jobs,
garbage collection, Services' Endpoints, and the failure modes a real cluster shows."""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import BUSYBOX, PAUSE, UNPULLABLE, cond, deployment, pod, wait_until

pytestmark = pytest.mark.kube


def _ready_pods(core, ns, selector):
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    return [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]


@pytest.mark.needs_ready_pods
def test_deployment_creates_replicaset_and_ready_pods(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    d = wait_until(lambda: (lambda d: d if (d.status.available_replicas or 0) == 2 else None)(
        apps.read_namespaced_deployment("web", ns)), message="deployment web available")
    assert d.status.observed_generation == d.metadata.generation
    assert cond(d, "Available").status == "True"
    assert cond(d, "Progressing").reason == "NewReplicaSetAvailable"
    rss = apps.list_namespaced_replica_set(ns, label_selector="app=web").items
    assert len(rss) == 1
    rs = rss[0]
    h = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{h}"
    assert rs.metadata.owner_references[0].kind == "Deployment" and rs.metadata.owner_references[0].controller
    pods = _ready_pods(core, ns, "app=web")
    assert len(pods) == 2
    for p in pods:
        assert p.metadata.owner_references[0].name == rs.metadata.name
        assert p.spec.node_name and p.status.phase == "Running"
        assert p.status.container_statuses[0].ready


@pytest.mark.needs_ready_pods
def test_rollout_status_after_template_change_and_undo(kube, apps, tmp_path):
    ns = kube.namespace
    f = tmp_path / "d.yaml"
    d = deployment("roll", replicas=2)
    f.write_text(yaml.safe_dump(d))
    kube.kubectl("apply", "-f", str(f))
    kube.kubectl("rollout", "status", "deployment/roll", "--timeout=30s")
    kube.kubectl("set", "env", "deployment/roll", "VERSION=2")
    out = kube.kubectl("rollout", "status", "deployment/roll", "--timeout=30s", timeout=45)
    assert "successfully rolled out" in out.stdout
    live = apps.read_namespaced_deployment("roll", ns)
    assert live.status.updated_replicas == 2 and live.status.ready_replicas == 2
    assert live.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert len(apps.list_namespaced_replica_set(ns, label_selector="app=roll").items) == 2
    kube.kubectl("rollout", "undo", "deployment/roll")
    kube.kubectl("rollout", "status", "deployment/roll", "--timeout=30s", timeout=45)
    env = apps.read_namespaced_deployment("roll", ns).spec.template.spec.containers[0].env
    assert not env
    hist = kube.kubectl("rollout", "history", "deployment/roll").stdout
    assert "3" in hist


@pytest.mark.needs_kubelet
def test_unpullable_image_never_becomes_available(kube, apps, core):
    ns = kube.namespace
    d = deployment("broken", image=UNPULLABLE)
    d["spec"]["progressDeadlineSeconds"] = 3
    apps.create_namespaced_deployment(ns, d)

    def pull_backoff():
        pods = core.list_namespaced_pod(ns, label_selector="app=broken").items
        for p in pods:
            for cs in p.status.container_statuses or []:
                if cs.state.waiting and cs.state.waiting.reason == "ImagePullBackOff":
                    return p
        return None

    p = wait_until(pull_backoff, timeout=60, message="ImagePullBackOff")
    assert not p.status.container_statuses[0].ready
    dep = wait_until(lambda: (lambda x: x if cond(x, "Progressing") and cond(x, "Progressing").reason ==
                              "ProgressDeadlineExceeded" else None)(apps.read_namespaced_deployment("broken", ns)),
                     timeout=30, message="ProgressDeadlineExceeded")
    assert cond(dep, "Available").status == "False"
    assert not dep.status.available_replicas
    rollout = kube.kubectl("rollout", "status", "deployment/broken", "--timeout=5s", check=False)
    assert rollout.returncode != 0


@pytest.mark.needs_kubelet
def test_crash_loop(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("crash", image=BUSYBOX, command=["sh", "-c", "exit 1"]))

    def crashing():
        p = core.read_namespaced_pod("crash", ns)
        cs = (p.status.container_statuses or [None])[0]
        if cs and cs.restart_count >= 1 and cs.last_state and cs.last_state.terminated and \
                cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff":
            return cs
        return None

    cs = wait_until(crashing, timeout=60, message="CrashLoopBackOff")
    assert cs.last_state.terminated.exit_code == 1
    assert not cs.ready


@pytest.mark.needs_kubelet
def test_failing_readiness_probe_never_ready(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("unready", readinessProbe={"exec": {"command": ["false"]},
                                                                  "periodSeconds": 1}))
    p = wait_until(lambda: (lambda x: x if x.status.phase == "Running" else None)(
        core.read_namespaced_pod("unready", ns)), message="pod running")
    import time

    time.sleep(1)
    p = core.read_namespaced_pod("unready", ns)
    assert cond(p, "Ready").status == "False"


@pytest.mark.needs_kubelet
def test_failing_liveness_probe_restarts_the_container(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("unlive", image=BUSYBOX, command=["sleep", "3600"], livenessProbe={
        "exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}))

    def restarted():
        cs = (core.read_namespaced_pod("unlive", ns).status.container_statuses or [None])[0]
        return cs if cs and cs.restart_count >= 1 else None

    cs = wait_until(restarted, timeout=60, message="restart after liveness failure")
    assert cs.last_state.terminated is not None
    evs = core.list_namespaced_event(ns, field_selector="involvedObject.name=unlive").items
    assert any(e.reason == "Unhealthy" for e in evs)


@pytest.mark.needs_ready_pods
def test_daemonset_runs_one_ready_pod_per_node(kube, apps, core):
    ns = kube.namespace
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
              "metadata": {"labels": {"app": "agent"}},
              "spec": {"tolerations": [{"operator": "Exists"}], "containers": [{"name": "a", "image": PAUSE}]}}}}
    apps.create_namespaced_daemon_set(ns, ds)
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready_nodes = {n["metadata"]["name"] for n in nodes
                   if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}
    kube.kubectl("rollout", "status", "daemonset/agent", "--timeout=30s", timeout=45)
    pods = _ready_pods(core, ns, "app=agent")
    assert sorted(p.spec.node_name for p in pods) == sorted(ready_nodes)
    st = apps.read_namespaced_daemon_set("agent", ns).status
    assert st.desired_number_scheduled == len(ready_nodes) == st.number_ready


@pytest.mark.needs_ready_pods
def test_daemonset_update_and_undo(kube, apps):
    ns = kube.namespace
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent2"},
          "spec": {"selector": {"matchLabels": {"app": "agent2"}}, "template": {
              "metadata": {"labels": {"app": "agent2"}},
              "spec": {"containers": [{"name": "a", "image": PAUSE}]}}}}
    apps.create_namespaced_daemon_set(ns, ds)
    kube.kubectl("rollout", "status", "daemonset/agent2", "--timeout=30s", timeout=45)
    kube.kubectl("set", "env", "daemonset/agent2", "LEVEL=debug")
    kube.kubectl("rollout", "status", "daemonset/agent2", "--timeout=30s", timeout=45)
    assert "2" in kube.kubectl("rollout", "history", "daemonset/agent2").stdout
    kube.kubectl("rollout", "undo", "daemonset/agent2")
    kube.kubectl("rollout", "status", "daemonset/agent2", "--timeout=30s", timeout=45)
    assert not apps.read_namespaced_daemon_set("agent2", ns).spec.template.spec.containers[0].env


@pytest.mark.needs_ready_pods
def test_statefulset_has_ordered_pods(kube, apps, core):
    ns = kube.namespace
    ss = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
          "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                   "template": {"metadata": {"labels": {"app": "db"}},
                                "spec": {"containers": [{"name": "db", "image": PAUSE}]}}}}
    apps.create_namespaced_stateful_set(ns, ss)
    kube.kubectl("rollout", "status", "statefulset/db", "--timeout=30s", timeout=45)
    names = sorted(p.metadata.name for p in _ready_pods(core, ns, "app=db"))
    assert names == ["db-0", "db-1", "db-2"]
    assert apps.read_namespaced_stateful_set("db", ns).status.ready_replicas == 3


@pytest.mark.needs_kubelet
def test_job_completes(kube, batch, core):
    ns = kube.namespace
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "run", "image": BUSYBOX, "command": ["sh", "-c", "echo done"]}]}}}}
    batch.create_namespaced_job(ns, job)
    j = wait_until(lambda: (lambda x: x if (x.status.succeeded or 0) >= 1 and cond(x, "Complete") else None)(
        batch.read_namespaced_job("once", ns)), timeout=60, message="job complete")
    assert cond(j, "Complete").status == "True"
    pods = core.list_namespaced_pod(ns, label_selector="job-name=once").items
    assert pods and all(p.status.phase == "Succeeded" for p in pods)
    kube.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=10s")


@pytest.mark.needs_ready_pods
def test_deleting_a_deployment_garbage_collects_its_pods(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("gc", replicas=2))
    wait_until(lambda: len(_ready_pods(core, ns, "app=gc")) == 2, message="2 ready pods")
    apps.delete_namespaced_deployment("gc", ns)
    wait_until(lambda: not core.list_namespaced_pod(ns, label_selector="app=gc").items and
               not apps.list_namespaced_replica_set(ns, label_selector="app=gc").items,
               timeout=60, message="pods and replicasets collected")


@pytest.mark.needs_ready_pods
def test_service_endpoints_follow_ready_pods(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("ep", replicas=2, ports=[{"containerPort": 8080}]))
    core.create_namespaced_service(ns, {"metadata": {"name": "ep"}, "spec": {
        "selector": {"app": "ep"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    svc = core.read_namespaced_service("ep", ns)
    assert svc.spec.cluster_ip and svc.spec.type == "ClusterIP"

    def two_addresses():
        eps = core.read_namespaced_endpoints("ep", ns)
        addrs = [a for s in (eps.subsets or []) for a in (s.addresses or [])]
        return eps if len(addrs) == 2 else None

    eps = wait_until(two_addresses, timeout=60, message="2 endpoint addresses")
    assert eps.subsets[0].ports[0].port == 8080


@pytest.mark.needs_ready_pods
def test_kubectl_scale_and_get_wide(kube, apps):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("sc2", replicas=1))
    kube.kubectl("scale", "deployment/sc2", "--replicas=3")
    kube.kubectl("rollout", "status", "deployment/sc2", "--timeout=30s", timeout=45)
    out = kube.kubectl("get", "pods", "-l", "app=sc2", "-o", "wide").stdout
    assert out.count("Running") == 3


@pytest.mark.needs_kubelet
def test_job_fails_after_backoff_limit(kube, batch, core):
    ns = kube.namespace
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
           "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "run", "image": BUSYBOX, "command": ["sh", "-c", "exit 3"]}]}}}}
    batch.create_namespaced_job(ns, job)
    j = wait_until(lambda: (lambda x: x if cond(x, "Failed") else None)(batch.read_namespaced_job("doomed", ns)),
                   timeout=120, message="job failed")
    assert cond(j, "Failed").status == "True" and cond(j, "Failed").reason == "BackoffLimitExceeded"
    assert j.status.failed == 2 and not j.status.succeeded
    pods = core.list_namespaced_pod(ns, label_selector="job-name=doomed").items
    assert pods and all(p.status.phase == "Failed" for p in pods)
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 3


@pytest.mark.needs_kubelet
def test_failing_init_container_keeps_the_pod_initializing(kube, core):
    ns = kube.namespace
    p = pod("initfail")
    p["spec"]["initContainers"] = [{"name": "setup", "image": BUSYBOX, "command": ["sh", "-c", "exit 1"]}]
    core.create_namespaced_pod(ns, p)

    def restarted():
        x = core.read_namespaced_pod("initfail", ns)
        ics = x.status.init_container_statuses or []
        return x if ics and ics[0].restart_count >= 1 else None

    x = wait_until(restarted, timeout=60, message="init container restart")
    assert x.status.phase == "Pending"
    assert cond(x, "Initialized").status == "False"
    assert x.status.init_container_statuses[0].last_state.terminated.exit_code == 1
    assert not x.status.container_statuses[0].ready
    assert "Init:" in kube.kubectl("get", "pod", "initfail").stdout


@pytest.mark.needs_kubelet
def test_job_from_cronjob_and_ttl_after_finished(kube, batch):
    ns = kube.namespace
    kube.kubectl("create", "cronjob", "nightly", f"--image={BUSYBOX}", "--schedule=0 3 * * *", "--", "true")
    kube.kubectl("create", "job", "manual-run", "--from=cronjob/nightly")
    job = batch.read_namespaced_job("manual-run", ns)
    assert job.metadata.owner_references[0].kind == "CronJob"
    wait_until(lambda: cond(batch.read_namespaced_job("manual-run", ns), "Complete"), timeout=60,
               message="job from cronjob complete")
    batch.create_namespaced_job(ns, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "short-lived"},
                                     "spec": {"ttlSecondsAfterFinished": 1, "template": {"spec": {
                                         "restartPolicy": "Never",
                                         "containers": [{"name": "c", "image": BUSYBOX, "command": ["true"]}]}}}})

    def collected():
        return "short-lived" not in {j.metadata.name for j in batch.list_namespaced_job(ns).items}

    wait_until(collected, timeout=60, message="finished job removed after its TTL")


def test_autoscaler_keeps_replicas_within_bounds(kube, apps):
    from kubernetes import client

    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("scaled", replicas=1))
    client.AutoscalingV2Api(kube.api_client()).create_namespaced_horizontal_pod_autoscaler(ns, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "scaled"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
                 "minReplicas": 2, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 50}}}]}})
    wait_until(lambda: apps.read_namespaced_deployment("scaled", ns).spec.replicas == 2, timeout=90,
               message="deployment scaled up to minReplicas")
    hpa = client.AutoscalingV2Api(kube.api_client()).read_namespaced_horizontal_pod_autoscaler("scaled", ns)
    assert hpa.status.desired_replicas == 2
