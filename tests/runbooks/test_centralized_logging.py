"""The `centralized-logging` runbook against real things: the rendered collector applied to the Kubernetes
API (``kube``: one Ready collector per node), the log store client and the verification against the
real OpenSearch-compatible ``log_store``, and the notebook through the real CLI.

What is simulated, said plainly: there is no Fluent Bit here (no container runtime, no log files on
nodes). Where a real cluster's collector would ship a pod's lines to the store, these tests write the
documents into the store themselves, in the shape the collector's ``opensearch`` output writes
(``logcollect.document_for``: ``@timestamp``, ``log``, ``stream``, ``kubernetes.namespace_name``,
``.pod_name``, ``.container_name``, ``.labels.app``... into daily indices ``<prefix>-YYYY.MM.DD``). So
they prove the deployment, the search and the verification logic, not Fluent Bit's shipping."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets as _random
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from opsbook.clients import Clients
from opsbook.clients.kube import Kube
from opsbook.clients.logstore import connect
from opsbook.ops import centralized_logging as logcollect
from opsbook.targets import Target
from opsbook.testing.runbook import make_context

from .conftest import manifests_of
from .rbac import assert_not_forbidden, problems

RUNBOOK = "centralized-logging"
UTC = dt.UTC


def prefix() -> str:
    return f"t{_random.token_hex(4)}-logs"  # the log store is shared by the session: one index family per test


def load(log_store, index_prefix: str, docs: list[dict]) -> None:
    """Bulk-load documents as the collector writes them (daily index by @timestamp), then refresh."""
    from opensearchpy import helpers

    actions = [{"_index": logcollect.index_for(index_prefix, dt.datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00"))),
                "_source": d} for d in docs]
    ok, errors = helpers.bulk(log_store.client(), actions, refresh=True)
    assert ok == len(docs) and not errors


def service_docs(now: dt.datetime | None = None) -> list[dict]:
    now = now or dt.datetime.now(UTC)
    docs = []
    for i in range(5):
        docs.append(logcollect.document_for(f"POST /v1/propose 200 request_id=req-{i:04d}", namespace="ml-platform",
                                            pod="proposer-6d8f9-x2k4p", container="proposer", app="proposer",
                                            when=now - dt.timedelta(seconds=10 * i)))
    for i in range(2):
        docs.append(logcollect.document_for(f"critique done request_id=req-{i:04d}", namespace="ml-platform",
                                            pod="critic-5c7b8-q9w2e", container="critic", app="critic",
                                            when=now - dt.timedelta(seconds=5 * i)))
    docs.append(logcollect.document_for("old line request_id=req-0003", namespace="ml-platform",
                                         pod="critic-5c7b8-q9w2e", container="critic", app="critic",
                                         when=now - dt.timedelta(hours=3)))
    return docs


def store_target(log_store, **over) -> Target:
    return Target(name="t-store", log_store_url=log_store.url, log_store_kind="opensearch", **over)


# -------------------------------------------------------------------------------- the log store (OpenSearch)


@pytest.mark.services
def test_store_client_finds_by_service_by_request_id_and_counts_per_service(log_store):
    p = prefix()
    load(log_store, p, service_docs())
    store = connect("opensearch", log_store.url, index_prefix=p)
    assert store.health().status in ("green", "yellow")
    end = dt.datetime.now(UTC) + dt.timedelta(seconds=5)
    start = end - dt.timedelta(minutes=15)
    lines = store.logs_for_service("proposer", start, end, limit=3)
    assert len(lines) == 3 and {x.service for x in lines} == {"proposer"}
    assert lines[0].line == "POST /v1/propose 200 request_id=req-0000"  # newest first
    assert (lines[0].namespace, lines[0].pod, lines[0].container) == ("ml-platform", "proposer-6d8f9-x2k4p",
                                                                       "proposer")
    found = store.logs_with_request_id("req-0001", start, end)
    assert sorted(x.service for x in found) == ["critic", "proposer"]
    assert store.logs_with_request_id("req-9999", start, end) == []
    assert store.logs_with_request_id("req-0003", start, end)[0].service == "proposer"  # the 3 h old one is out
    assert store.count_per_service(start, end) == {"proposer": 5, "critic": 2}
    assert connect("opensearch", log_store.url, index_prefix="nothing-here").count_per_service(start, end) == {}


@pytest.mark.services
def test_counts_flag_services_without_logs_and_the_search_is_a_table(log_store):
    p = prefix()
    load(log_store, p, service_docs())
    params = {"index_prefix": p, "services": ["proposer", "critic", "ranker"], "search_request_id": "req-0001",
              "window_minutes": 15}
    ctx = make_context(RUNBOOK, target=store_target(log_store), **params)
    assert all(c.passed for c in logcollect.preflight(ctx))
    counts = logcollect.counts_per_service(ctx)
    assert counts.outcome == "failed" and "no logs from: ranker" in counts.summary
    assert {r["service"]: (r["lines"], r["status"]) for r in counts.rows} == {
        "proposer": (5, "ok"), "critic": (2, "ok"), "ranker": (0, "NO LOGS")}
    result = logcollect.search(ctx)
    assert result.outcome == "ok" and {r["service"] for r in result.rows} == {"proposer", "critic"}
    assert all("req-0001" in r["line"] for r in result.rows)
    ctx = make_context(RUNBOOK, target=store_target(log_store), **params, search_service="critic")
    assert [r["pod"] for r in logcollect.search(ctx).rows] == ["critic-5c7b8-q9w2e"]


@pytest.mark.services
def test_store_down_fails_the_preflight_with_the_reason(log_store):
    from opsbook.testing.services import free_port

    ctx = make_context(RUNBOOK, target=store_target(log_store), backend_url=f"http://127.0.0.1:{free_port()}")
    (bad,) = [c for c in logcollect.preflight(ctx) if not c.passed]
    assert bad.name == "log store answers" and "is not reachable" in bad.reason


# ---------------------------------------------------------------------------------- on the Kubernetes API


def cluster_target(kube, log_store) -> Target:
    return Target(name="t-cluster", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=kube.namespace,
                  log_store_url=log_store.url, log_store_kind="opensearch")


@contextlib.contextmanager
def cluster_setup(kube, log_store, **params):
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    target = cluster_target(kube, log_store)
    p = {"namespace": kube.namespace, "index_prefix": prefix(), "timeout": 60.0, **params}
    ctx = make_context(RUNBOOK, mode="apply", target=target, clients=Clients(target, kube=k), **p)
    try:
        yield ctx
    finally:
        for kind in ("ClusterRoleBinding", "ClusterRole"):  # cluster-scoped: not removed with the namespace
            with contextlib.suppress(Exception):
                k.delete(kind=kind, name=ctx.cluster_role)
        k.close()


@pytest.mark.kube
@pytest.mark.services
def test_collector_reaches_one_ready_pod_per_node(kube, log_store):
    with cluster_setup(kube, log_store) as ctx:
        k = ctx.kube
        assert all(c.passed for c in logcollect.preflight(ctx)), logcollect.preflight(ctx)
        plan = logcollect.plan_deploy(ctx)
        # 4 of 5 dry-run: the ClusterRoleBinding names a ClusterRole only the apply creates, which the
        # RBAC escalation check of a least-privilege account could not read (the CLI test below runs the
        # runbook as such an account: its declared RBAC)
        assert plan.outcome == "planned" and len(plan.details["dry_run"]) == 4, plan.summary
        assert {r["action"] for r in plan.rows} == {"create"}
        assert {r["kind"]: r["dry run"] for r in plan.rows}["ClusterRoleBinding"] == \
            "not dry-run: its ClusterRole is created by this apply"
        with pytest.raises(Exception):  # noqa: B017 - a dry run stores nothing
            k.get(kind="DaemonSet", name=logcollect.APP, namespace=kube.namespace)
        result = logcollect.deploy(ctx)
        assert result.outcome == "changed", result.summary
        nodes = sorted(n["metadata"]["name"] for n in k.list_objects(kind="Node")
                       if not (n.get("spec") or {}).get("unschedulable"))
        pods = k.list_objects(kind="Pod", namespace=kube.namespace, selector="app.kubernetes.io/name=fluent-bit")
        assert sorted(p["spec"]["nodeName"] for p in pods) == nodes  # one per node, control plane included
        check = logcollect.collectors_on_every_node(ctx)
        assert check.outcome == "ok", check.summary
        assert sorted(r["node"] for r in check.rows) == nodes and all(r["status"] == "ok" for r in check.rows)
        # the configuration as the cluster holds it, parsed: input, filter and output that matter
        cm = k.get(kind="ConfigMap", name=logcollect.CONFIG_MAP, namespace=kube.namespace)
        cfg = yaml.safe_load(cm["data"][logcollect.CONFIG_FILE])
        assert [p["name"] for p in cfg["pipeline"]["inputs"]] == ["tail"]
        assert [p["name"] for p in cfg["pipeline"]["filters"]] == ["kubernetes"]
        (out,) = cfg["pipeline"]["outputs"]
        assert out["name"] == "opensearch" and out["logstash_prefix"] == ctx.settings.index_prefix
        assert f"{out['host']}:{out['port']}" == log_store.url.split("//", 1)[1]
        # a re-run is idempotent: the plan says update
        assert {r["action"] for r in logcollect.plan_deploy(ctx).rows} == {"update (server-side apply)"}


@pytest.mark.kube
@pytest.mark.services
def test_a_node_without_a_ready_collector_is_named(kube, log_store):
    from opsbook.testing.kube import requires_test_server

    if not kube.is_test_server:
        pytest.skip(requires_test_server.kwargs["reason"])
    with cluster_setup(kube, log_store) as ctx:
        logcollect.deploy(ctx)
        worker = "opsbook-worker"
        kube.api.set_node_ready(worker, False)
        deadline = time.monotonic() + 15
        while (check := logcollect.collectors_on_every_node(ctx)).outcome == "ok" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert check.outcome == "failed" and check.details["missing"] == [worker], check.summary
        assert worker in check.summary


@pytest.mark.kube
@pytest.mark.services
def test_marker_from_a_pod_becomes_searchable_and_the_time_is_shown(kube, log_store):
    with cluster_setup(kube, log_store, marker_timeout=20.0) as ctx:
        emitted = logcollect.emit_marker(ctx)
        marker = emitted.value
        assert emitted.outcome == "changed" and isinstance(marker, logcollect.Marker)
        assert ctx.marker is marker  # what the next cell's check searches for
        pod = ctx.kube.get(kind="Pod", name=marker.pod, namespace=kube.namespace)
        assert marker.request_id in " ".join(pod["spec"]["containers"][0]["command"])

        def collector() -> None:  # what Fluent Bit would do for the marker pod's line, 1.5 s later
            time.sleep(1.5)
            load(log_store, ctx.settings.index_prefix, [logcollect.document_for(
                marker.line, namespace=kube.namespace, pod=marker.pod, container="marker",
                app=logcollect.MARKER_LABEL)])

        thread = threading.Thread(target=collector)
        thread.start()
        result = logcollect.marker_searchable(ctx, poll=0.3)
        thread.join()
        assert result.outcome == "ok", result.summary
        assert 1.5 <= result.details["seconds"] < 20 and result.details["searches"] >= 2
        assert f"searchable in opensearch {result.details['seconds']:.1f} s" in result.summary
        assert result.rows[0]["pod"] == marker.pod and marker.request_id in result.rows[0]["line"]
        assert marker.deleted  # the marker pod is removed afterwards


@pytest.mark.kube
@pytest.mark.services
def test_absent_marker_fails_after_the_timeout_with_a_clear_message(kube, log_store):
    with cluster_setup(kube, log_store, marker_timeout=2.0) as ctx:
        marker = logcollect.emit_marker(ctx).value
        t0 = time.monotonic()
        result = logcollect.marker_searchable(ctx, poll=0.5)
        assert 2.0 <= time.monotonic() - t0 < 10
        assert result.outcome == "failed"
        assert (f"marker request_id={marker.request_id} from pod {kube.namespace}/{marker.pod} was not found in "
                f"opensearch at {log_store.url} after 2 s") in result.summary
        assert "kubectl -n" in result.summary and "logs ds/fluent-bit" in result.summary
        assert marker.deleted and _marker_pod_gone(ctx.kube, marker)  # not found, and still cleaned up


def _marker_pod_gone(k: Kube, marker) -> bool:
    """Deleted: gone, or going (a real kubelet takes the grace period to stop it)."""
    from opsbook.errors import NotFound

    try:
        pod = k.get(kind="Pod", name=marker.pod, namespace=marker.namespace)
    except NotFound:
        return True
    return bool(pod["metadata"].get("deletionTimestamp"))


@pytest.mark.kube
def test_marker_pod_is_deleted_when_there_is_no_log_store_to_search(kube):
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    target = Target(name="t-no-store", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=kube.namespace)
    ctx = make_context(RUNBOOK, mode="apply", target=target, clients=Clients(target, kube=k), namespace=kube.namespace,
                       timeout=60.0)
    try:
        marker = logcollect.emit_marker(ctx).value
        assert k.get(kind="Pod", name=marker.pod, namespace=kube.namespace)
        result = logcollect.marker_searchable(ctx, poll=0.1)
        assert result.outcome == "failed" and result.summary == "no log store URL: the marker cannot be searched"
        assert marker.deleted and _marker_pod_gone(k, marker)  # the docstring's promise: found or not, it goes
    finally:
        k.close()


# ------------------------------------------------------------------------------------------ through the CLI


def test_plan_on_local_needs_no_cluster_and_no_network(opsbook_run):
    env = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "KUBECONFIG": "/nonexistent"}
    r = opsbook_run(RUNBOOK, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert (m["status"], m["mode"], m["target"]) == ("succeeded", "plan", "local")
    steps = {s["title"]: s for s in m["steps"]}
    assert steps["Deploy the collectors"]["outcome"] == "planned"
    assert steps["Emit a marker line"]["outcome"] == "planned"
    assert [s["id"] for s in m["steps"]] == [  # the declared ids: what an apply finds the plan's steps by
        "settings", "preflight", "collector-configuration", "render-manifests", "deploy-collectors",
        "collector-on-every-node", "emit-marker", "marker-searchable", "logs-from-every-service", "search"]
    assert steps["Marker line is searchable"]["summary"] == "no marker was emitted (plan mode): not checked"
    for title in ("A collector on every node", "Marker line is searchable", "Logs from every service", "Search"):
        assert steps[title]["outcome"] == "skipped", steps[title]
    kinds = [x["kind"] for x in steps["Deploy the collectors"]["details"]["manifests"]]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    assert steps["Collector configuration"]["details"]["config"]["pipeline"]["outputs"][0]["name"] == "opensearch"


@pytest.mark.kube
@pytest.mark.services
def test_apply_with_an_absent_marker_leaves_a_failed_record_that_keeps_the_reason(kube, log_store, opsbook_run,
                                                                                 tmp_path: Path, declared_rbac):
    """As the runbook's own ServiceAccount with exactly its declared RBAC (``rbac.py``): every step but
    the marker's search succeeds with it, the marker pod included (deleted after the search). The checks
    and the clean-up of what the runbook created cluster-wide are the admin's."""
    p = prefix()
    load(log_store, p, service_docs())  # the services have logs: only the marker is missing
    given = {"namespace": kube.namespace, "index_prefix": p, "marker_timeout": "3", "timeout": "60",
             "search_service": "critic"}
    grant = declared_rbac(RUNBOOK, given)
    targets = grant.targets(tmp_path / "targets.yaml", kube, name="t-cluster", log_store_url=log_store.url,
                            log_store_kind="opensearch")
    env = {"OPSBOOK_TARGETS": str(targets)}
    args = ["--target", "t-cluster", *[x for k, v in given.items() for x in ("-p", k, v)]]
    try:
        r = opsbook_run(RUNBOOK, *args, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
        assert_not_forbidden(plan)
        steps = {s["title"]: s for s in plan["steps"]}
        assert steps["Deploy the collectors"]["outcome"] == "planned"
        assert len(steps["Deploy the collectors"]["details"]["dry_run"]) == 4  # the binding to the ClusterRole the apply creates is not
        r = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", plan["run_id"], env=env)
        assert r.returncode == 1, r.stdout + r.stderr
        (m,) = [x for x in manifests_of(opsbook_run.outputs, RUNBOOK) if x["mode"] == "apply"]
        assert m["status"] == "failed"
        # the declared RBAC is enough: only the absent marker failed, and nothing was forbidden
        assert [s["id"] for s in m["steps"] if s["outcome"] in ("failed", "error")] == ["marker-searchable"], \
            problems(m)
        assert_not_forbidden(m)
        assert {s["id"]: s["outcome"] for s in m["steps"]}["deploy-collectors"] == "changed"
        steps = {s["title"]: s for s in m["steps"]}
        assert steps["Deploy the collectors"]["outcome"] == "changed"
        assert steps["A collector on every node"]["outcome"] == "ok"
        assert steps["Emit a marker line"]["outcome"] == "changed"
        assert steps["Logs from every service"]["outcome"] == "ok"
        assert steps["Search"]["outcome"] == "ok" and len(steps["Search"]["rows"]) == 2
        marker = steps["Marker line is searchable"]
        assert marker["outcome"] == "failed" and "was not found in opensearch" in marker["summary"]
        assert "after 3 s" in marker["summary"]
        assert "Marker line is searchable" in r.stdout + r.stderr
        pod = steps["Emit a marker line"]["details"]["pod"]  # the ServiceAccount could delete it (admin's view)
        with contextlib.closing(Kube(kubeconfig=kube.kubeconfig, context=kube.context)) as admin:
            assert _marker_pod_gone(admin, SimpleNamespace(pod=pod, namespace=kube.namespace)), pod
    finally:
        k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            with contextlib.suppress(Exception):
                k.delete(kind=kind, name=f"fluent-bit-read-{kube.namespace}")
        k.close()


@pytest.mark.kube
@pytest.mark.services
def test_collectors_deployed_before_a_refused_marker_pod_are_undone_from_the_record(kube, log_store, opsbook_run,
                                                                                   tmp_path: Path, declared_rbac):
    """The later change fails, portably: the apply runs as an account with the declared RBAC but for
    ``create pods`` (an operator's account that may install the collector, which is all the preflight
    checks: create daemonsets, clusterroles, clusterrolebindings, but not run pods in the namespace; a
    real API server refuses it the same way). So ``deploy-collectors`` deploys everything and its
    collectors become Ready, then ``emit-marker`` is refused with the API server's 403, creating nothing.
    A ConfigMap ``fluent-bit-config`` from an earlier configuration is already there: the apply changes
    it. The failed apply's record keeps every object before and after (the cluster-scoped ClusterRole and
    ClusterRoleBinding too), the CLI names them and the exact ``opsbook undo`` command; the undo, run
    with exactly the declared RBAC, deletes what the apply created, newest first, and puts the ConfigMap
    back: the namespace and both cluster-scoped objects are compared with the snapshot taken before the
    apply, object by object. A second undo of the same apply is refused."""
    import dataclasses

    from opsbook.catalog import RbacSpec

    from .rbac import granted, runbook
    from .undo import assert_second_undo_refused, assert_undone, differences, snapshot, undo

    ns = kube.namespace
    role = f"fluent-bit-read-{ns}"
    cluster = [f"ClusterRole/{role}", f"ClusterRoleBinding/{role}"]
    p = prefix()
    load(log_store, p, service_docs())  # the expected services have logs: nothing else fails
    given = {"namespace": ns, "index_prefix": p, "marker_timeout": "3", "timeout": "60"}
    args = ["--target", "t-cluster", *[x for k, v in given.items() for x in ("-p", k, v)]]
    store = {"log_store_url": log_store.url, "log_store_kind": "opensearch"}
    declared = declared_rbac(RUNBOOK, given)  # the undo's account: exactly the declared RBAC
    env = {"OPSBOOK_TARGETS": str(declared.targets(tmp_path / "targets.yaml", kube, name="t-cluster", **store))}
    rb = runbook(RUNBOOK)
    assert rb.rbac is not None
    rules = tuple(dataclasses.replace(r, verbs=tuple(v for v in r.verbs if v != "create"))
                  if r.resources == ("pods",) else r for r in rb.rbac.rules)
    assert rules != rb.rbac.rules
    less = dataclasses.replace(rb, rbac=RbacSpec(rules=rules, cluster_rules=rb.rbac.cluster_rules))
    old_config = "pipeline:\n  inputs: []\n"
    kube.kubectl("create", "configmap", logcollect.CONFIG_MAP, f"--from-literal={logcollect.CONFIG_FILE}={old_config}")
    (tmp_path / "less").mkdir()
    try:
        with granted(kube, less, given, tmp_path / "less") as no_pods:
            less_env = {"OPSBOOK_TARGETS": str(no_pods.targets(tmp_path / "less" / "targets.yaml", kube,
                                                                 name="t-cluster", **store))}
            plan = opsbook_run(RUNBOOK, *args, env=less_env)
            assert plan.returncode == 0, plan.stdout + plan.stderr
            pm = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
            before = snapshot(kube, [ns], cluster_names=cluster)
            assert before[f"ConfigMap/{ns}/{logcollect.CONFIG_MAP}"]["data"] == {logcollect.CONFIG_FILE: old_config}
            assert all(before[c] is None for c in cluster)
            apply = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", pm["run_id"], env=less_env)
            am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][-1]
            assert apply.returncode == 1 and am["status"] == "failed", apply.stdout + apply.stderr
            steps = {s["id"]: s for s in am["steps"]}
            assert steps["deploy-collectors"]["outcome"] == "changed", problems(am)
            assert steps["collector-on-every-node"]["outcome"] == "ok", problems(am)
            marker = steps["emit-marker"]
            # the API server's refusal of an apply that would create (update.go withAuthorization: the
            # RBAC authorizer gives no reason, so the message ends at "forbidden:")
            assert marker["outcome"] == "failed" and "Forbidden" in marker["summary"], problems(am)
            assert f'403 pods "{logcollect.MARKER_LABEL}-' in marker["summary"], marker["summary"]
            assert marker["undo"] is None and "marker-searchable" not in steps  # refused: it created nothing
            record = steps["deploy-collectors"]["undo"]
            assert record["by"] == "opsbook.ops.journal:journal"
            assert [(e["kind"], e["namespace"], e["name"], e["before"] is None) for e in record["entries"]] == [
                ("ServiceAccount", ns, "fluent-bit", True), ("ClusterRole", None, role, True),
                ("ClusterRoleBinding", None, role, True), ("ConfigMap", ns, logcollect.CONFIG_MAP, False),
                ("DaemonSet", ns, "fluent-bit", True)]
            cm = record["entries"][3]
            assert cm["before"]["data"] == {logcollect.CONFIG_FILE: old_config}
            assert "opensearch" in cm["after"]["data"][logcollect.CONFIG_FILE]
            out = apply.stdout + apply.stderr  # what it changed, and the exact command that takes it back
            assert f"deploy-collectors: ClusterRole/{role} created" in out
            assert f"deploy-collectors: ConfigMap/{ns}/{logcollect.CONFIG_MAP} changed" in out
            assert f"opsbook undo {am['run_id']}" in out

            undo_plan, undo_apply = undo(opsbook_run, am["run_id"], env, cwd=tmp_path)
            rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
            assert [(r["what"], r["now"]) for r in rows] == [  # newest first
                (f"DaemonSet/{ns}/fluent-bit", "as-left"), (f"ConfigMap/{ns}/{logcollect.CONFIG_MAP}", "as-left"),
                (f"ClusterRoleBinding/{role}", "as-left"), (f"ClusterRole/{role}", "as-left"),
                (f"ServiceAccount/{ns}/fluent-bit", "as-left")], rows
            assert_undone(undo_apply, am["run_id"])
            after = snapshot(kube, [ns], cluster_names=cluster)
            assert differences(before, after) == []  # the ConfigMap as it was; the ClusterRole and binding gone
            assert_second_undo_refused(opsbook_run, am["run_id"], env, undo_apply["run_id"], cwd=tmp_path)
    finally:
        with contextlib.closing(Kube(kubeconfig=kube.kubeconfig, context=kube.context)) as k:
            for kind in ("ClusterRoleBinding", "ClusterRole"):  # if the test failed before the undo
                with contextlib.suppress(Exception):
                    k.delete(kind=kind, name=role)


@pytest.mark.kube
def test_a_marker_pod_left_behind_is_deleted_by_the_undo_even_once_scheduled(kube):
    """``emit-marker`` creates its pod through the journal; the undo deletes one left behind (the run
    stopped before the search that deletes it), although the scheduler set its node since (a pod is
    compared by its labels and annotations only), and finds nothing to do once the pod is gone."""
    import copy

    from opsbook.ops.journal import JOURNAL
    from opsbook.testing.kube import wait_until

    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    target = Target(name="t-no-store", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=kube.namespace)
    ctx = make_context(RUNBOOK, mode="apply", target=target, clients=Clients(target, kube=k), namespace=kube.namespace)
    undo_ctx = SimpleNamespace(kube=k)
    try:
        marker = logcollect.emit_marker(ctx).value
        (entry,) = ctx.journal.entries
        assert (entry["kind"], entry["name"], entry["before"]) == ("Pod", marker.pod, None)
        wait_until(lambda: k.get(kind="Pod", name=marker.pod, namespace=kube.namespace)["spec"].get("nodeName"),
                   timeout=15, interval=0.1, message="the marker pod was not scheduled")
        assert JOURNAL.describe(entry)[0] == f"Pod/{kube.namespace}/{marker.pod}"
        assert JOURNAL.status(undo_ctx, entry).state == "as-left"
        # on a real cluster the record is read before the scheduler binds the pod: as if without its node
        unbound = copy.deepcopy(entry)
        unbound["after"]["spec"].pop("nodeName", None)
        unbound["resourceVersion"] = "1"  # and an older resourceVersion: the binding wrote a new one
        assert JOURNAL.status(undo_ctx, unbound).state == "as-left"
        kube.kubectl("label", "pod", marker.pod, "someone=else")  # a change someone made: refused
        st = JOURNAL.status(undo_ctx, entry)
        assert st.state == "drifted" and 'metadata.labels.someone: (absent) -> "else"' in st.detail, st
        kube.kubectl("label", "pod", marker.pod, "someone-")
        assert JOURNAL.reverse(undo_ctx, entry) == "deleted"
        assert JOURNAL.back_as_before(undo_ctx, entry).state == "restored"
        assert _marker_pod_gone(k, marker)
    finally:
        k.close()


def test_the_banner_shows_the_runs_own_namespace(monkeypatch, capsys):
    """The target's default namespace is ml-platform; this runbook's collectors go to its own
    ``namespace`` parameter (logging by default), and the banner says so."""
    from opsbook import catalog, notebook, start
    from opsbook.targets import LOCAL

    from .conftest import NOTEBOOKS

    monkeypatch.setenv(catalog.ENV_NOTEBOOKS, str(NOTEBOOKS))
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID):
        monkeypatch.delenv(var, raising=False)
    run = start(RUNBOOK, {"mode": "plan", "target": "local"})
    assert run.settings.namespace == "logging" and LOCAL.namespace == "ml-platform"
    assert isinstance(run.ctx, logcollect.Context) and run.ctx.settings.namespace == "logging"
    target_line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("target"))
    assert "namespace logging" in target_line and "ml-platform" not in target_line
    assert LOCAL.describe() == "local: no cluster (plan only), namespace ml-platform"
    assert LOCAL.describe(namespace="logging") == "local: no cluster (plan only), namespace logging"
