"""Events read by the product, whatever recorder wrote them: ``Kube.events_for`` (the initial deployment's
"events of anything not Ready") and the incident's recent-events step. A real cluster holds the
controllers' events (core/v1 recorder: eventTime null, lastTimestamp and count) next to the scheduler's
and any events.k8s.io client's (eventTime set, lastTimestamp null, a series once repeated); both must
be ordered by when they were last seen and show how many times. The live tests write both shapes
through the API (the ``kube`` fixture: the test server or a real cluster)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from opsbook.clients import Clients
from opsbook.clients.kube import Kube
from opsbook.clients.kube_events import event_summary, format_instant
from opsbook.ops import security_incident_response as incident
from opsbook.targets import LOCAL
from opsbook.testing.runbook import make_context

NOW = dt.datetime.now(dt.UTC).replace(microsecond=250000)


def seconds(delta: float) -> str:
    return (NOW - dt.timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micros(delta: float) -> str:
    return (NOW - dt.timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def about(ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": ns}


def legacy(ns: str, name: str, *, first: float, last: float, count: int, reason: str) -> dict:
    """As client-go's core/v1 recorder writes it (a controller, the kubelet)."""
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": about(ns), "reason": reason, "message": f"{reason} message", "type": "Warning",
            "firstTimestamp": seconds(first), "lastTimestamp": seconds(last), "count": count, "eventTime": None,
            "source": {"component": "opsbook-controller"}, "reportingComponent": "opsbook-controller",
            "reportingInstance": ""}


def new_api(ns: str, name: str, *, first: float, reason: str, series: tuple[int, float] | None = None) -> dict:
    """As client-go's events.k8s.io recorder writes it (the scheduler), with a series once repeated."""
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
          "eventTime": micros(first), "reportingController": "opsbook.io/scheduler", "reportingInstance": "s-1",
          "action": "Scheduling", "reason": reason, "note": f"{reason} message", "type": "Normal",
          "regarding": about(ns)}
    if series:
        ev["series"] = {"count": series[0], "lastObservedTime": micros(series[1])}
    return ev


# ---------------------------------------------------------------------------------- the shapes, offline


def test_every_shape_gives_when_it_was_last_seen_and_how_often():
    ns = "ml"
    core_legacy = legacy(ns, "a", first=300, last=60, count=4, reason="Legacy")
    core_series = {**new_api(ns, "b", first=600, reason="Series", series=(7, 10)), "apiVersion": "v1",
                   "firstTimestamp": None, "lastTimestamp": None, "source": {}}
    # the events.k8s.io view of a controller's event: deprecated fields, eventTime null
    new_legacy = {"apiVersion": "events.k8s.io/v1", "eventTime": None, "reason": "Legacy", "note": "n",
                  "regarding": about(ns), "deprecatedSource": {"component": "kubelet", "host": "node-1"},
                  "deprecatedFirstTimestamp": seconds(300), "deprecatedLastTimestamp": seconds(60),
                  "deprecatedCount": 4, "reportingController": "kubelet"}
    single = new_api(ns, "c", first=120, reason="Single")
    got = {e["reason"] + str(i): event_summary(e) for i, e in enumerate([core_legacy, core_series, new_legacy, single])}
    assert {k: (format_instant(v["last_seen"]), v["count"], v["object"]) for k, v in got.items()} == {
        "Legacy0": (seconds(60), 4, "ConfigMap/cm"), "Series1": (seconds(10), 7, "ConfigMap/cm"),
        "Legacy2": (seconds(60), 4, "ConfigMap/cm"), "Single3": (seconds(120), 1, "ConfigMap/cm")}
    assert format_instant(got["Series1"]["first_seen"]) == seconds(600)
    assert (got["Legacy2"]["message"], got["Legacy2"]["source"]) == ("n", "kubelet")
    assert got["Single3"]["source"] == "opsbook.io/scheduler"


# ------------------------------------------------------------------------------------ through the API


@pytest.fixture
def both_shapes(kube):
    """A ConfigMap with events of both shapes: (Kube client, namespace)."""
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    ns = kube.namespace
    k.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}], namespace=ns)
    events = [legacy(ns, "cm.legacy", first=300, last=60, count=4, reason="Legacy"),
              new_api(ns, "cm.series", first=600, reason="Series", series=(7, 10)),  # first seen long ago
              new_api(ns, "cm.single", first=120, reason="Single"),
              legacy(ns, "cm.old", first=7300, last=7200, count=2, reason="Old"),  # out of a 30 min window
              new_api(ns, "cm.revived", first=7200, reason="Revived", series=(3, 5))]  # back in it
    # kubectl sends the JSON as it is (the official client would rewrite the timestamps)
    kube.kubectl("create", "-f", "-", input="\n".join(json.dumps(e) for e in events))
    try:
        yield k, ns
    finally:
        k.close()


@pytest.mark.kube
def test_events_for_orders_both_shapes_by_when_they_were_last_seen(both_shapes):
    k, ns = both_shapes
    rows = k.events_for(kind="ConfigMap", name="cm", namespace=ns)
    assert [(r["reason"], r["count"], r["last_seen"]) for r in rows] == [
        ("Old", 2, seconds(7200)), ("Single", 1, seconds(120)), ("Legacy", 4, seconds(60)),
        ("Series", 7, seconds(10)), ("Revived", 3, seconds(5))]
    assert {r["source"] for r in rows} == {"opsbook-controller", "opsbook.io/scheduler"}


@pytest.mark.kube
def test_recent_events_keeps_what_was_seen_in_the_window_oldest_first(both_shapes):
    k, ns = both_shapes
    ctx = make_context("security-incident-response", target=LOCAL, clients=Clients(LOCAL, kube=k), namespace=ns,
                       events_since_minutes=30)
    res = incident.recent_events(ctx)
    assert [(r["reason"], r["count"], r["time"]) for r in res.rows] == [
        ("Single", 1, seconds(120)), ("Legacy", 4, seconds(60)), ("Series", 7, seconds(10)),
        ("Revived", 3, seconds(5))]
    assert res.summary == "4 event(s) in the last 30 min, 1 warning(s)"
