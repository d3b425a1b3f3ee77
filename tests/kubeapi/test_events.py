"""Events as a real cluster writes and converts them. The kubelet and the controllers record through
client-go's core/v1 recorder (``eventTime`` null, first/last timestamps, count, source); the scheduler
and any events.k8s.io/v1 client write ``eventTime``, an action and a series instead. Each is served by
both APIs, converted field by field. The official client cannot parse an events.k8s.io/v1 Event whose
``eventTime`` is null, so these tests read the JSON the server sent."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from .conftest import deployment, pod, wait_until

pytestmark = pytest.mark.kube

SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")  # metav1.Time
MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")  # metav1.MicroTime


def _core_events(core, ns: str, name: str) -> list[dict]:
    resp = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}", _preload_content=False)
    return json.loads(resp.data)["items"]


def _new_event(kube, ns: str, name: str) -> dict:
    from kubernetes import client

    resp = client.EventsV1Api(kube.api_client()).read_namespaced_event(name, ns, _preload_content=False)
    return json.loads(resp.data)


def _wait_event(core, ns: str, name: str, reason: str) -> dict:
    def found():
        return [e for e in _core_events(core, ns, name) if e.get("reason") == reason]

    return wait_until(found, timeout=60, message=f"a {reason} event about {name}")[0]


def test_a_controller_event_has_no_event_time_and_converts_to_deprecated_fields(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("web", replicas=1))
    rs = wait_until(lambda: apps.list_namespaced_replica_set(ns, label_selector="app=web").items,
                    message="the ReplicaSet")[0].metadata.name
    ev = _wait_event(core, ns, rs, "SuccessfulCreate")
    assert ev["eventTime"] is None  # client-go tools/record never sets it
    assert SECONDS.match(ev["firstTimestamp"]) and SECONDS.match(ev["lastTimestamp"]) and ev["count"] >= 1
    assert ev["source"] == {"component": "replicaset-controller"}
    assert (ev["reportingComponent"], ev["reportingInstance"]) == ("replicaset-controller", "")
    assert "action" not in ev and "series" not in ev
    assert ev["involvedObject"]["kind"] == "ReplicaSet" and ev["metadata"]["name"].startswith(rs + ".")

    new = _new_event(kube, ns, ev["metadata"]["name"])
    assert new["eventTime"] is None  # what the official client refuses to parse
    assert (new["deprecatedFirstTimestamp"], new["deprecatedLastTimestamp"], new["deprecatedCount"]) == (
        ev["firstTimestamp"], ev["lastTimestamp"], ev["count"])
    assert new["deprecatedSource"] == ev["source"] and new["regarding"] == ev["involvedObject"]
    assert (new["note"], new["reason"], new["type"]) == (ev["message"], "SuccessfulCreate", "Normal")
    assert new["reportingController"] == "replicaset-controller"
    assert "reportingInstance" not in new and "action" not in new and "series" not in new  # empty: left out


@pytest.mark.needs_kubelet
def test_scheduler_and_kubelet_events_have_their_recorders_shapes(kube, core):
    ns = kube.namespace
    core.create_namespaced_pod(ns, pod("noisy"))
    scheduled = _wait_event(core, ns, "noisy", "Scheduled")
    started = _wait_event(core, ns, "noisy", "Started")
    node = core.read_namespaced_pod("noisy", ns).spec.node_name

    # the scheduler records through events.k8s.io: eventTime, an action, no deprecated fields
    assert MICROS.match(scheduled["eventTime"]) and scheduled["action"] == "Binding"
    assert scheduled["firstTimestamp"] is None and scheduled["lastTimestamp"] is None
    assert scheduled["source"] == {} and "count" not in scheduled
    assert scheduled["reportingComponent"] == "default-scheduler"
    assert scheduled["reportingInstance"].startswith("default-scheduler-")
    new = _new_event(kube, ns, scheduled["metadata"]["name"])
    assert new["eventTime"] == scheduled["eventTime"] and new["action"] == "Binding"
    assert new["deprecatedFirstTimestamp"] is None and new["deprecatedLastTimestamp"] is None
    assert new["deprecatedSource"] == {} and "deprecatedCount" not in new

    # the kubelet through core/v1, naming its node and the container
    assert started["eventTime"] is None and SECONDS.match(started["lastTimestamp"])
    assert started["source"] == {"component": "kubelet", "host": node}
    assert (started["reportingComponent"], started["reportingInstance"]) == ("kubelet", node)
    assert started["involvedObject"]["fieldPath"] == "spec.containers{app}"


def test_an_event_written_through_events_k8s_io_reads_through_core_v1(kube, core):
    # sent as JSON by kubectl: the official client would rewrite the MicroTime as +00:00 on its way out
    ns = kube.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    t0 = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "cm.opsbook1"},
            "eventTime": t0, "reportingController": "opsbook.io/tests", "reportingInstance": "tests-1",
            "action": "Checking", "reason": "Checked", "note": "checked once", "type": "Normal",
            "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": ns}}
    kube.kubectl("create", "-f", "-", input=json.dumps(body))
    (ev,) = _core_events(core, ns, "cm")
    assert ev["eventTime"] == t0 and ev["firstTimestamp"] is None and ev["lastTimestamp"] is None
    assert ev["source"] == {} and "count" not in ev
    assert (ev["reportingComponent"], ev["reportingInstance"]) == ("opsbook.io/tests", "tests-1")
    assert (ev["message"], ev["action"]) == ("checked once", "Checking")

    t1 = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.kubectl("patch", "events.v1.events.k8s.io", "cm.opsbook1", "--type=merge",
                 "-p", json.dumps({"series": {"count": 2, "lastObservedTime": t1}}))
    (ev,) = _core_events(core, ns, "cm")
    assert ev["series"] == {"count": 2, "lastObservedTime": t1} and ev["eventTime"] == t0
    assert ev["lastTimestamp"] is None and "count" not in ev
