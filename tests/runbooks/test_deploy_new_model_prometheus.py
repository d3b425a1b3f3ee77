"""The `deploy-new-model` runbook's two rounds with live metrics, end to end through the real CLI: a
cluster (``kube``) with the ml-platform chart's stable proposer on v1, a real Prometheus
(``prometheus``) scraping a synthetic model server (:class:`opsbook.testing.model_exporter.ModelServer`)
whose canary track is clearly worse, and no ``metrics_file``.

Round 1: the plan finds no canary (nothing to collect), its approved apply starts the canary and holds.
Round 2, once two full analysis intervals have passed since the canary's creation: the plan judges it
from Prometheus (rollback), and its approved apply deletes the canary; stable stays on v1.

And the collect step alone against the same Prometheus: the latency buckets reach the judge as histograms.
"""

from __future__ import annotations

import datetime as dt
import math
import time

import numpy as np
import pytest
import yaml
from opsbook.errors import NotFound
from opsbook.ops import deploy_new_model as rollout
from opsbook.testing.model_exporter import HEALTHY, ModelServer, TrackParams

from .conftest import manifests_of
from .test_deploy_new_model import _steps, _versions, stable  # noqa: F401 (stable: the fixture)

RUNBOOK = "deploy-new-model"
JOB = "deploy-new-model-canary"
RATE = 80.0  # requests per second per track
INTERVAL = 10  # interval_seconds
WORSE = TrackParams(error_rate=0.10, latency_median=HEALTHY.latency_median * 1.5, accuracy=HEALTHY.accuracy,
                    d_scale=HEALTHY.d_scale)
CANARY = "ml-ml-platform-proposer-canary"


def _apply_run(outputs, plan_id: str) -> dict:
    (m,) = [m for m in manifests_of(outputs, RUNBOOK) if m["mode"] == "apply" and
            _steps(m)["decide"]["details"].get("plan_run_id") == plan_id]
    return m


def _new_plan(outputs, before: set[str]) -> dict:
    (m,) = [m for m in manifests_of(outputs, RUNBOOK) if m["mode"] == "plan" and m["run_id"] not in before]
    return m


@pytest.mark.kube
@pytest.mark.services
def test_two_rounds_with_prometheus_start_the_canary_then_roll_the_worse_one_back(
        kube, stable, opsbook_run, prometheus, metrics_exporter, tmp_path):  # noqa: F811
    ns = kube.namespace
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({"kt": {"kubeconfig": kube.kubeconfig, "kube_context": kube.context,
                                              "namespace": ns, "prometheus_url": prometheus.url}}))
    env = {"OPSBOOK_TARGETS": str(targets), "OPSBOOK_OPERATOR": "dana"}
    args = ["--target", "kt", "-p", "namespace", ns, "-p", "version", "2", "-p", "monitor_minutes", "1",
            "-p", "interval_seconds", str(INTERVAL), "-p", "timeout", "60"]
    outputs = opsbook_run.outputs

    def run(*extra: str) -> None:
        r = opsbook_run(RUNBOOK, *args, *extra, env=env)
        assert r.returncode == 0, r.stdout + r.stderr

    exporter = metrics_exporter()
    with ModelServer(exporter.registry, model="proposer", rate=RATE, tracks={"stable": HEALTHY, "canary": WORSE}):
        try:
            prometheus.add_target(exporter.host_port, job=JOB)  # waits for the first scrape

            # a. plan #1: no canary yet, so nothing is collected or judged, and nothing changes
            run()
            (plan1,) = manifests_of(outputs, RUNBOOK)
            assert plan1["mode"] == "plan" and plan1["status"] == "succeeded"
            steps = _steps(plan1)
            assert steps["settings"]["details"]["metrics_file"] == ""
            assert steps["settings"]["details"]["prometheus_url"] == prometheus.url
            collected = steps["collect-metrics"]
            assert collected["outcome"] == "skipped" and "no canary" in collected["summary"], collected
            assert steps["judge"]["outcome"] == "skipped"
            assert steps["judge"]["details"]["decision"] is None
            assert steps["deploy-canary"]["outcome"] == "planned"
            assert steps["decide"]["details"]["decision"] == "hold"
            assert _versions(stable, ns, "canary") == [] and _versions(stable, ns, "stable") == ["1", "1"]

            # b. apply #1: starts the canary (v2) and holds: the approved plan had no verdict
            run("--mode", "apply", "--approve", plan1["run_id"])
            apply1 = _apply_run(outputs, plan1["run_id"])
            assert apply1["status"] == "succeeded"
            steps = _steps(apply1)
            assert steps["deploy-canary"]["outcome"] == "changed"
            decided = steps["decide"]
            assert decided["details"]["decision"] == "hold" and decided["details"]["verdict"] is None, decided
            assert decided["summary"].startswith("HOLD") and "no canary yet" in decided["summary"]
            for step_id in ("promote", "rollback", "verify-instances"):
                assert steps[step_id]["outcome"] == "skipped", (step_id, steps[step_id])
            assert _versions(stable, ns, "canary") == ["2"] and _versions(stable, ns, "stable") == ["1", "1"]
            canary = stable.get(kind="Deployment", name=CANARY, namespace=ns)
            assert rollout.model_of(canary)[0] == "2"

            # c. wait for 2 full intervals (aligned to multiples of INTERVAL s of Unix time) after the
            # canary's creation, plus 3 s for the last interval's final scrape
            born = dt.datetime.fromisoformat(canary["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
            first = math.ceil(born.timestamp() / INTERVAL) * INTERVAL
            time.sleep(max(0.0, first + 2 * INTERVAL + 3 - time.time()))

            # d. plan #2 judges the running canary from Prometheus: rollback, latency / error rate regressed
            seen = {m["run_id"] for m in manifests_of(outputs, RUNBOOK)}
            run()
            plan2 = _new_plan(outputs, seen)
            assert plan2["status"] == "succeeded"
            steps = _steps(plan2)
            collected = steps["collect-metrics"]
            assert collected["outcome"] != "skipped", collected
            assert collected["details"]["source"].startswith(f"Prometheus {prometheus.url}"), collected
            assert collected["details"]["intervals"] >= 2, collected
            judged = steps["judge"]["details"]
            assert judged["decision"] == "rollback", judged
            assert judged["intervals_available"] >= 2, judged
            assert judged["warmup_intervals"] == 1, judged  # the default: one interval, not judged
            status = {x["metric"]: x["status"] for x in judged["metrics"]}
            assert "regressed" in (status["latency"], status["error_rate"]), status
            assert steps["decide"]["details"]["decision"] == "rollback"
            assert steps["rollback"]["outcome"] == "planned"
            assert _versions(stable, ns, "canary") == ["2"]  # the plan changed nothing

            # e. apply #2 acts on plan #2's recorded verdict: canary deleted, stable unchanged on v1
            run("--mode", "apply", "--approve", plan2["run_id"])
            apply2 = _apply_run(outputs, plan2["run_id"])
            assert apply2["status"] == "succeeded"
            steps = _steps(apply2)
            decided = steps["decide"]["details"]
            assert decided["decision"] == "rollback" and decided["verdict"] == "rollback", decided
            assert decided["verdict_source"] == f"the approved plan {plan2['run_id']}"
            rolled = steps["rollback"]
            assert rolled["outcome"] == "changed", rolled
            assert rolled["details"]["canary_deleted"] and not rolled["details"]["restored"], rolled
            assert steps["promote"]["outcome"] == "skipped"
            assert steps["verify-instances"]["outcome"] == "ok"
            with pytest.raises(NotFound):
                stable.get(kind="Deployment", name=CANARY, namespace=ns)
            assert _versions(stable, ns, "canary") == [] and _versions(stable, ns, "stable") == ["1", "1"]
            dep = stable.get(kind="Deployment", name="ml-ml-platform-proposer", namespace=ns)
            assert rollout.model_of(dep)[:2] == ("1", "models:/proposer/1")
        finally:
            prometheus.remove_target(exporter.host_port, job=JOB)


@pytest.mark.services
def test_collect_from_prometheus_gives_the_judge_the_latency_histograms(prometheus, metrics_exporter):
    """The runbook's collect step against the real Prometheus: the latency buckets arrive as cumulative
    ``latency_le_*`` columns (one per exporter bucket, +Inf last), and become per-interval histograms
    in which the worse canary has more requests above the stable's p99 bucket."""
    from opsbook.canary import inputs_from_frame
    from opsbook.clients import Clients
    from opsbook.clients.prometheus import Prometheus
    from opsbook.ops.deploy_new_model.metrics import le_column
    from opsbook.targets import LOCAL
    from opsbook.testing.model_exporter import DEFAULT_BUCKETS
    from opsbook.testing.runbook import make_context

    step, job = 3, JOB + "-buckets"
    exporter = metrics_exporter()
    with ModelServer(exporter.registry, model="proposer", rate=RATE, tracks={"stable": HEALTHY, "canary": WORSE},
                     seed=5):
        try:
            prometheus.add_target(exporter.host_port, job=job)  # waits for the first scrape
            prometheus.wait_for_series(f'count_over_time(model_requests_total{{job="{job}"}}[{step}s]) >= {step}',
                                       timeout=30)
            end = math.ceil(time.time() / step) * step + 3 * step
            time.sleep(end - time.time() + 1.5)  # the last interval's final scrape is in
        finally:
            prometheus.remove_target(exporter.host_port, job=job)
    staging = LOCAL.model_copy(update={"name": "staging"})
    clients = Clients(staging, prometheus=Prometheus(prometheus.url, timeout=10))
    # a 2-minute window: data covers at most the last ~45 s (the first scrape, then at most 30 s waiting for
    # the series and 12 s of intervals), so its first intervals are before the first scrape however slow
    # the machine (with 1 minute, a slow wait for the series left none: a flaky "early" assertion)
    checked = make_context(RUNBOOK, target=staging, clients=clients, monitor_minutes=2, warmup_intervals=0).settings
    # 3 s intervals keep this test short; the parameters cell allows 10 s at least, so the settings are
    # built past that bound here, as only a test does (with the default warm-up of one interval)
    ctx = rollout.Context(settings=checked.model_copy(update={"interval_seconds": step, "warmup_intervals": 1}),
                          target=staging, clients=clients)
    collected = rollout.collect(ctx, now=end)
    assert collected.details["source"].startswith(f"Prometheus {prometheus.url}"), collected.summary
    frame = ctx.frame
    les = [c for c in frame.columns if c.startswith("latency_le_")]
    assert les == [le_column("latency", b) for b in DEFAULT_BUCKETS] + ["latency_le_+Inf"]

    inputs = inputs_from_frame(frame, rollout.metric_specs())
    full = inputs[-3:]  # the last three intervals: every scrape in
    pooled = {}
    for item in full:
        for arm in ("stable", "canary"):
            s = getattr(item, arm)["latency"]
            assert s is not None and s.hist is not None and len(s.hist) == len(DEFAULT_BUCKETS) + 1
            row = frame[(frame["interval"] == item.interval) & (frame["arm"] == arm)].iloc[0]
            assert sum(s.hist) == pytest.approx(row["latency_le_+Inf"], rel=1e-9)
            assert 0.7 * RATE * step <= sum(s.hist) <= 1.3 * RATE * step, s.hist
            pooled[arm] = pooled.get(arm, 0) + np.asarray(s.hist)
    early = [item for item in inputs if not (frame.loc[frame["interval"] == item.interval, "requests"] > 0).any()]
    assert early, "intervals before the first scrape have no data"
    assert all(item.stable["latency"] is None for item in early)
    # above the stable's p90 bucket (its p99 is a handful of requests in 9 s), the canary (latency x1.5)
    # has several times the stable's share: what the exceedance test measures at p99
    j = int(np.argmax(np.cumsum(pooled["stable"]) >= 0.9 * pooled["stable"].sum()))
    share = {arm: pooled[arm][j + 1:].sum() / pooled[arm].sum() for arm in pooled}
    assert share["canary"] > 2 * share["stable"], share
