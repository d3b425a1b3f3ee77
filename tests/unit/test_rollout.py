"""`opsbook.ops.deploy_new_model` without services: the canary rendered from a stable Deployment, the model
version read from templates and pods, the judge over the recorded files, the decision rules (the
approved plan's verdict, overrides, holds), and the preflight on a target without a cluster."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from opsbook.clients import Clients
from opsbook.errors import ParameterError
from opsbook.ops import deploy_new_model as rollout
from opsbook.ops.base import declaration, skip_reason
from opsbook.targets import LOCAL
from opsbook.testing.runbook import make_context

ROOT = Path(__file__).resolve().parents[2]
HEALTHY = ROOT / "examples" / "metrics" / "proposer-canary-healthy.csv"
REGRESSED = ROOT / "examples" / "metrics" / "proposer-canary-regressed.csv"

STABLE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "ml-platform-proposer", "namespace": "ml", "uid": "u-1", "resourceVersion": "7",
                 "generation": 3, "managedFields": [{}],
                 "annotations": {"deployment.kubernetes.io/revision": "3", "meta.helm.sh/release-name": "ml"},
                 "labels": {"app.kubernetes.io/name": "proposer", "app.kubernetes.io/instance": "ml-platform",
                            "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "ml-platform-0.1.0",
                            "opsbook.io/track": "stable"}},
    "spec": {
        "replicas": 3, "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "proposer", "app.kubernetes.io/instance": "ml-platform",
                                     "opsbook.io/track": "stable"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "proposer", "app.kubernetes.io/instance": "ml-platform",
                                    "opsbook.io/track": "stable", "helm.sh/chart": "ml-platform-0.1.0"},
                         "annotations": {"opsbook.io/model-uri": "models:/proposer@production",
                                         "opsbook.io/model-version": "1"}},
            "spec": {"containers": [
                {"name": "proposer", "image": "ghcr.io/ml-platform/proposer:1.0.0",
                 "env": [{"name": "MODEL_NAME", "value": "proposer"},
                         {"name": "MODEL_URI", "value": "models:/proposer@production"},
                         {"name": "MODEL_VERSION", "value": "1"},
                         {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]},
                {"name": "sidecar", "image": "busybox"}]},
        },
    },
    "status": {"replicas": 3},
}


def _ctx(*, target=LOCAL, plan_record: dict | None = None, clients: Clients | None = None,
         **params) -> rollout.Context:
    p = {"mode": "plan", "model": "proposer", "metrics_file": str(HEALTHY), **params}
    return make_context("deploy-new-model", target=target, clients=clients or Clients(target),
                        plan_record=plan_record, run_id="r-1", operator="alice", **p)


def _bare(*, target=LOCAL, clients: Clients | None = None, **params) -> rollout.Context:
    """A context with the notebook's defaults (no metrics file given)."""
    return make_context("deploy-new-model", target=target, clients=clients or Clients(target), **params)


def _skipped(fn, ctx) -> str | None:
    """Why ``run.do`` would skip the declared step ``fn`` in ``ctx`` (None: it runs)."""
    return skip_reason(declaration(fn), ctx)


# ------------------------------------------------------------------------------------------ rendering


def test_canary_is_the_stable_template_with_the_new_version_one_replica_and_the_canary_track():
    canary = rollout.render_canary(STABLE, version="2", uri="models:/proposer/2", model="proposer")
    meta, spec = canary["metadata"], canary["spec"]
    assert meta["name"] == "ml-platform-proposer-canary" and meta["namespace"] == "ml"
    assert not {"uid", "resourceVersion", "generation", "managedFields"} & set(meta)
    assert meta["labels"]["opsbook.io/track"] == "canary" and "helm.sh/chart" not in meta["labels"]
    assert meta["annotations"]["opsbook.io/canary-of"] == "ml-platform-proposer"
    assert spec["replicas"] == 1 and spec["progressDeadlineSeconds"] == 600 and "status" not in canary
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "proposer",
                                               "app.kubernetes.io/instance": "ml-platform",
                                               "opsbook.io/track": "canary"}
    tmpl = spec["template"]
    assert tmpl["metadata"]["labels"]["opsbook.io/track"] == "canary"
    assert rollout.model_of(canary) == ("2", "models:/proposer/2", "container env MODEL_VERSION")
    env = {e["name"]: e for e in tmpl["spec"]["containers"][0]["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db"  # the rest is copied as it is
    assert "env" not in tmpl["spec"]["containers"][1]  # only the model container gets the model
    assert rollout.model_of(STABLE)[:2] == ("1", "models:/proposer@production")  # the input is untouched


def test_model_version_is_read_from_env_then_annotation_and_disagreement_is_reported():
    pod = {"metadata": {"annotations": {"opsbook.io/model-version": "4"}},
           "spec": {"containers": [{"name": "proposer", "env": [{"name": "MODEL_VERSION", "value": "5"}]}]}}
    version, _, how = rollout.model_of(pod)
    assert version == "5" and "annotation opsbook.io/model-version says 4!" in how
    bare = copy.deepcopy(STABLE)
    bare["spec"]["template"]["spec"]["containers"][0]["env"] = []
    assert rollout.model_of(bare) == ("1", "models:/proposer@production", "annotation opsbook.io/model-version")
    bare["spec"]["template"]["metadata"]["annotations"] = {}
    assert rollout.model_of(bare) == ("", "", "not found")
    # a template without the variables gets them on the named container
    t = rollout.set_model(bare["spec"]["template"], version="9", uri="models:/p/9", container="proposer")
    assert rollout.model_of({"spec": {"template": t}})[:2] == ("9", "models:/p/9")


# ------------------------------------------------------------------------------------------ settings


def test_settings_tolerances_and_decision_choices():
    ctx = _bare(mode="apply", monitor_minutes=30, interval_seconds=120)
    assert ctx.applying and ctx.window_intervals == 15 and ctx.registry_name == "proposer" and not ctx.has_cluster
    specs = {m.name: m for m in rollout.metric_specs(0.1, 0.8)}
    assert specs["error_rate"].tolerance == 0.8 and specs["latency"].tolerance == 0.1
    assert specs["accuracy"].higher_is_worse is False and specs["latency"].tail is True
    with pytest.raises(ParameterError, match="decision='maybe': expected one of auto, promote, rollback"):
        _bare(decision="maybe")


@pytest.mark.parametrize(("params", "warmup"), [
    ({}, 1),  # the default: one analysis interval
    ({"interval_seconds": 10, "monitor_minutes": 1}, 1),  # one interval, whatever its length
    ({"warmup_intervals": 0}, 0),
    ({"warmup_intervals": 59}, 59),
])
def test_the_warmup_is_a_number_of_intervals(params, warmup):
    assert _bare(**params).settings.warmup_intervals == warmup


@pytest.mark.parametrize(("params", "problem"), [
    # what ties two parameters together: the runbook's context refuses it
    ({"warmup_intervals": 60}, "warmup_intervals=60: expected at most 59: the warm-up must leave at least one of "
                               "the monitoring period's 60 intervals of 60 s (monitor_minutes=60) to judge"),
    ({"monitor_minutes": 1}, "warmup_intervals=1: expected at most 0: the warm-up must leave at least one of the "
                             "monitoring period's 1 intervals of 60 s (monitor_minutes=1) to judge"),
    # one parameter's type and bounds: the parameters cell says them (the only declaration)
    ({"warmup_intervals": -1}, "warmup_intervals=-1: expected a value >= 0"),
    ({"warmup_intervals": "soon"}, "warmup_intervals='soon': expected an integer >= 0"),
    ({"warmup_intervals": True}, "warmup_intervals=True: expected an integer >= 0"),
    ({"tail_tolerance": 100.0}, "tail_tolerance=100.0: expected a value <= 99"),
    ({"tail_tolerance": -0.1}, "tail_tolerance=-0.1: expected a value >= 0"),
])
def test_a_bad_warmup_or_tail_tolerance_is_refused_naming_it_its_value_and_what_was_expected(params, problem):
    with pytest.raises(ParameterError) as excinfo:
        _bare(**params)
    (p,) = excinfo.value.problems
    assert str(p).startswith(problem), str(p)
    assert problem in str(excinfo.value)


def test_the_notebook_bounds_warmup_and_tail_tolerance_before_any_kernel_starts():
    from opsbook import catalog
    from opsbook.parameters import validate

    spec = catalog.load(ROOT / "notebooks" / "deploy-new-model.ipynb").spec
    assert spec.params["warmup_intervals"].default == 1 and spec.params["tail_tolerance"].default == 0.25
    assert spec.params["tail_tolerance"].default == _bare().settings.tail_tolerance  # one default, not two
    assert validate(spec, {"warmup_intervals": "2", "tail_tolerance": "1"},
                    text_values={"warmup_intervals", "tail_tolerance"})["warmup_intervals"] == 2
    with pytest.raises(ParameterError) as excinfo:
        validate(spec, {"warmup_intervals": "-3", "tail_tolerance": "150"}, text_values={"warmup_intervals",
                                                                                        "tail_tolerance"})
    assert {(p.name, p.value, p.expected) for p in excinfo.value.problems} == {
        ("warmup_intervals", "'-3'", "expected a value >= 0"), ("tail_tolerance", "'150'", "expected a value <= 99")}


def _settings_rows(ctx: rollout.Context) -> dict[str, str]:
    return {r["setting"]: r["value"] for r in rollout.settings(ctx).rows}


def test_tail_tolerance_is_latencys_exceedance_tolerance_and_warmup_reaches_the_judge_and_the_plot():
    specs = {m.name: m for m in rollout.metric_specs(0.05, 1.0, tail_tolerance=2.0)}
    assert specs["latency"].exceed_tolerance == 2.0
    assert specs["d"].exceed_tolerance == rollout.metric_specs()[3].exceed_tolerance == 0.25  # no tail tests: as is
    ctx = _ctx(metrics_file=str(REGRESSED), error_rate_tolerance=1.0, warmup_intervals=2, tail_tolerance=1.0)
    rows = _settings_rows(_bare(metrics_file=str(REGRESSED), warmup_intervals=2, tail_tolerance=1.0))
    assert rows["warm-up"].startswith("the first 2 interval(s), 2 min, are not judged (warmup_intervals 2)")
    assert "p99 latency: the canary's share of requests above the stable's p99 up to 2x the stable's" in rows[
        "tolerances"]
    default_rows = _settings_rows(_bare())
    assert default_rows["warm-up"].startswith("the first 1 interval(s), 1 min, are not judged (warmup_intervals 1)")
    assert "up to 1.25x the stable's" in default_rows["tolerances"]
    none = _settings_rows(_bare(warmup_intervals=0))
    assert none["warm-up"] == "none: every interval is judged"

    rollout.collect(ctx)
    judged = rollout.judge(ctx)
    assert ctx.analysis.judge.config.warmup == 2 and judged.details["warmup_intervals"] == 2
    assert {s.name: s.exceed_tolerance for s in ctx.analysis.judge.specs}["latency"] == 1.0
    plot = rollout.plot(ctx)
    assert plot.details["warmup_intervals"] == 2 and "warm-up (2 interval(s), not judged) shaded" in plot.summary
    spans = [p.get_bbox() for ax in plot.value.get_axes() for p in ax.patches if p.get_gid() == "warmup"]
    assert len(spans) == 4 and all((b.x0, b.x1) == (0.5, 2.5) for b in spans)
    (figure,) = plot.show  # shown by the notebook API, not by the step
    assert figure.png.startswith(b"\x89PNG") and len(figure.png) == plot.details["png_bytes"]


def test_local_uses_the_bundled_recorded_file_by_default_and_a_real_target_never_does():
    ctx = _bare()
    assert ctx.metrics_path == (ROOT / rollout.DEFAULT_METRICS_FILE).resolve() and ctx.prom is None
    staging = LOCAL.model_copy(update={"name": "staging"})
    ctx = _bare(target=staging)
    assert ctx.metrics_path is None and ctx.prom is None
    (check,) = rollout.check_metrics_source(ctx)
    assert not check.passed and "no metrics source" in check.reason


# ------------------------------------------------------------------------------------------ the judge


@pytest.mark.parametrize("path,tolerance,decision", [
    (HEALTHY, 1.0, "promote"),
    (HEALTHY, 0.05, "inconclusive"),  # a 1% error rate at 200 requests per interval cannot support 5%
    (REGRESSED, 1.0, "rollback"),
])
def test_judge_over_the_recorded_files(path, tolerance, decision):
    ctx = _ctx(metrics_file=str(path), error_rate_tolerance=tolerance)
    assert rollout.collect(ctx).details["intervals"] == 60
    result = rollout.judge(ctx)
    assert result.outcome == "ok" and result.details["decision"] == decision, result.summary
    by_metric = {m["metric"]: m for m in result.details["metrics"]}
    assert set(by_metric) == {"accuracy", "latency", "error_rate", "d"}
    assert all(m["reason"] for m in by_metric.values())
    if decision == "rollback":
        assert by_metric["latency"]["status"] == "regressed"
    plot = rollout.plot(ctx)
    assert plot.details["png_bytes"] > 1000 and plot.value is not None


# ------------------------------------------------------------------------------------------ decision


def _plan(decision: str | None, run_id: str = "plan-1") -> dict:
    """An approved plan's manifest: its steps keyed by the ids the steps declare."""
    return {"run_id": run_id, "steps": [
        {"id": declaration(rollout.judge).id, "title": "Judge the canary",
         "details": {"decision": decision, "reason": "why"}},
        {"id": declaration(rollout.serving).id, "title": "Version now serving",
         "details": {"version": "1", "uri": "models:/proposer/1"}}]}


def test_apply_acts_on_the_approved_plans_verdict_not_on_a_later_look():
    ctx = _ctx(mode="apply", metrics_file=str(REGRESSED), plan_record=_plan("promote", "plan-1"))
    rollout.collect(ctx)
    rollout.judge(ctx)  # this run sees a regression
    d = rollout.decide(ctx).details
    assert d["decision"] == "promote" and d["plan_run_id"] == "plan-1" and d["this_run_verdict"] == "rollback"
    assert d["verdict_source"] == "the approved plan plan-1" and d["override"] is False and d["operator"] == "alice"
    assert rollout.rollback_target(ctx) == ("1", "models:/proposer/1", "the approved plan plan-1")


@pytest.mark.parametrize("parameter,verdict,decision,override", [
    ("auto", "rollback", "rollback", False),
    ("auto", "inconclusive", "hold", None),
    ("auto", "continue", "hold", None),
    ("auto", None, "hold", None),
    ("promote", "inconclusive", "promote", True),
    ("rollback", "promote", "rollback", True),
])
def test_decision_rules(parameter, verdict, decision, override):
    ctx = _ctx(mode="apply", decision=parameter, plan_record=_plan(verdict, "plan-2"))
    result = rollout.decide(ctx)
    assert result.details["decision"] == decision and result.details.get("override") == override
    assert ctx.decision == (None if decision == "hold" else decision)
    if decision == "hold":
        assert result.summary.startswith("HOLD")
        assert _skipped(rollout.promote, ctx) == "the decision is hold, not promote"
        assert _skipped(rollout.rollback, ctx) == "the decision is hold, not rollback"
        assert _skipped(rollout.verify_instances, ctx) == "no decision was carried out: nothing to verify"
    else:  # on local (no cluster) an apply has nothing to change
        assert _skipped(rollout.promote if decision == "promote" else rollout.rollback, ctx).startswith(
            "target local has no cluster: nothing")


def test_plan_mode_says_what_it_would_do_and_names_itself_for_the_approval():
    ctx = _ctx(version="2", serving_version="1")
    rollout.collect(ctx)
    rollout.judge(ctx)
    result = rollout.decide(ctx)
    assert result.summary.startswith("would PROMOTE") and "--approve r-1" in result.summary
    assert _skipped(rollout.promote, ctx) is None and rollout.plan_promote(ctx).outcome == "planned"
    assert "from v1 to v2" in rollout.plan_promote(ctx).summary
    assert _skipped(rollout.rollback, ctx) == "the decision is promote, not rollback"
    assert _skipped(rollout.move_alias, ctx) == "move_alias is false: @production is not touched"
    assert _skipped(rollout.verify_instances, ctx) == "plan mode: the instances are verified after the apply"


# ------------------------------------------------------------------------------------------ preflight


def test_preflight_without_cluster_or_registry():
    ctx = _ctx(version="2", serving_version="1")
    checks = {c.name: c for c in rollout.preflight(ctx)}
    assert all(c.passed for c in checks.values()), checks
    assert checks["cluster"].reason.startswith("skipped") and checks["a new version"].reason == "v2 replaces v1"
    same = {c.name: c for c in rollout.preflight(_ctx(version="1", serving_version="1"))}
    assert not same["a new version"].passed and "already serving" in same["a new version"].reason
    no_version = {c.name: c for c in rollout.preflight(_ctx(mode="apply"))}
    assert not no_version["a version to deploy"].passed
    broken = {c.name: c for c in rollout.preflight(_ctx(metrics_file=str(ROOT / "pyproject.toml")))}
    assert not broken["metrics file"].passed and "unknown metrics file type" in broken["metrics file"].reason
    # without a registry the registry step is skipped, with the reason
    assert _skipped(rollout.registry_version, ctx) == "no registry on this target (give tracking_uri): version 2 " \
                                                      "is taken as given"


class _Prom:
    """Answers every range query with 1.0 at each step, and remembers the windows it was asked for."""

    url = "http://prometheus.test:9090"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float, float]] = []

    def query_range(self, promql, start, end, step):  # noqa: ANN001
        import numpy as np
        import pandas as pd

        self.calls.append((promql, float(start), float(end), float(step)))
        ts = np.arange(float(start), float(end) + 1e-6, float(step))
        if promql.startswith("sum by (le)"):  # a histogram's buckets: one series per bound
            return pd.DataFrame({"le": np.repeat(["0.1", "0.2", "+Inf"], len(ts)), "timestamp": np.tile(ts, 3),
                                 "value": np.ones(3 * len(ts))})
        return pd.DataFrame({"timestamp": ts, "value": np.ones(len(ts))})

    def healthy(self) -> bool:
        return True


def test_prometheus_window_is_the_monitoring_period_aligned_to_intervals():
    staging = LOCAL.model_copy(update={"name": "staging", "prometheus_url": _Prom.url})
    prom = _Prom()
    ctx = _bare(target=staging, clients=Clients(staging, prometheus=prom), monitor_minutes=10, interval_seconds=60)
    assert ctx.metrics_path is None and ctx.prom is prom
    assert [c.name for c in rollout.check_metrics_source(ctx)] == ["Prometheus healthy"]
    now = 1_800_000_030.0
    result = rollout.collect(ctx, now=now)
    assert result.details["intervals"] == 10
    end = 1_800_000_000.0  # floored to the interval
    assert {(c[1], c[2], c[3]) for c in prom.calls} == {(end - 600 + 60, end, 60.0)}
    assert any('track="canary"' in c[0] for c in prom.calls) and any('track="stable"' in c[0] for c in prom.calls)


def test_apply_refuses_to_act_when_the_version_changed_since_the_plan():
    plan = _plan("promote", "plan-3")
    plan["steps"].append({"id": declaration(rollout.registry_version).id, "title": "Model version in the registry",
                          "details": {"version": "2"}})
    ctx = _ctx(mode="apply", version="3", plan_record=plan)
    result = rollout.decide(ctx)
    assert result.outcome == "failed" and "the approved plan plan-3 judged v2, but this run would deploy v3" in \
        result.summary
    assert ctx.decision is None and _skipped(rollout.promote, ctx) == "the decision is hold, not promote"
    # without its registry step, the version the plan was about is the canary it rendered (not a placeholder)
    canary = rollout.render_canary(STABLE, version="2", uri="models:/proposer/2")
    rendered = {"id": declaration(rollout.canary_manifest).id, "title": "Render the canary",
                "details": {"manifest": canary, "placeholder": False}}
    plan = _plan("promote", "plan-4")
    ctx = _ctx(mode="apply", version="3", plan_record={**plan, "steps": [*plan["steps"], rendered]})
    assert rollout.planned_version(ctx) == "2" and rollout.decide(ctx).outcome == "failed"
    placeholder = {**rendered, "details": {"manifest": canary, "placeholder": True}}
    ctx = _ctx(mode="apply", version="3", plan_record={**plan, "steps": [*plan["steps"], placeholder]})
    assert rollout.planned_version(ctx) is None and rollout.decide(ctx).details["decision"] == "promote"


def test_the_notebook_runs_the_steps_an_apply_reads_back_from_its_plan():
    """The apply finds the approved plan's steps by id (``ctx.planned``): the steps that record them
    must be the ones the notebook runs, under the ids the apply reads."""
    import ast
    import json

    nb = json.loads((ROOT / "notebooks" / "deploy-new-model.ipynb").read_text())
    ran = set()
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(c["source"]))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "do":
                (arg,) = node.args
                decl = declaration(getattr(rollout, arg.attr))
                assert decl is not None, arg.attr
                ran.add(decl.id)
    read_back = {"judge", "serving-version", "registry-version", "canary-manifest"}
    assert read_back <= ran, read_back - ran
    for fn in (rollout.judge, rollout.serving, rollout.registry_version, rollout.canary_manifest):
        assert declaration(fn).id in read_back


class _Kube:
    """Just enough of clients.kube.Kube for the metrics window: the canary Deployment, or none."""

    def __init__(self, canary: dict | None) -> None:
        self.canary = canary

    def get(self, *, kind, name, namespace, api_version=None):  # noqa: ANN001
        from opsbook.errors import NotFound

        if self.canary is None:
            raise NotFound(f"deployments {name} not found")
        return self.canary


def test_on_a_cluster_the_window_starts_with_the_canary_and_no_canary_means_hold():
    import datetime as dt

    staging = LOCAL.model_copy(update={"name": "staging", "kube_context": "staging"})
    now = 1_800_000_030.0
    prom = _Prom()
    ctx = _bare(target=staging, clients=Clients(staging, kube=_Kube(None), prometheus=prom), monitor_minutes=60)
    ctx.stable_name = "ml-platform-proposer"
    result = rollout.collect(ctx, now=now)
    assert result.outcome == "skipped" and "no canary ml-platform-proposer-canary is running yet" in result.summary
    assert rollout.judge(ctx).outcome == "skipped" and not prom.calls
    held = rollout.decide(ctx)
    assert held.details["decision"] == "hold" and "no canary yet" in held.summary
    born = dt.datetime.fromtimestamp(now - 300, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # 5 min ago
    ctx.kube = _Kube({"metadata": {"name": "ml-platform-proposer-canary", "creationTimestamp": born}})
    # only whole intervals after the canary started: (now - 300 s) rounds up, now rounds down: 4 minutes
    assert rollout.collect(ctx, now=now).details["intervals"] == 4


def test_steps_that_do_not_apply_here_are_skipped_by_their_declaration_with_the_reason():
    ctx = _ctx(mode="apply", version="2", serving_version="1", move_alias=True)
    assert _skipped(rollout.deploy_canary, ctx) == "no canary manifest (see the step above)"
    assert _skipped(rollout.plot, ctx) == "no analysis to plot"
    ctx.serving = rollout.Serving(version="1", deployment="ml-platform-proposer", object=STABLE)
    rendered = rollout.canary_manifest(ctx)  # from the stable Deployment read before: no chart, no helm
    (code,) = rendered.show  # the manifest is shown by the notebook API, not by the step
    assert code.lang == "yaml" and "opsbook.io/track: canary" in code.text and "name: ml-platform-proposer-canary" \
        in code.text
    assert _skipped(rollout.deploy_canary, ctx) == "target local has no cluster: nothing deployed"
    assert _skipped(rollout.move_alias, ctx) == "no decision: the alias is not touched"
    ctx.decision = "promote"
    assert _skipped(rollout.move_alias, ctx) == ("no registry on this target (give tracking_uri): the alias move "
                                                 "is only planned")
    # plan mode on the same target: the changes say what they would do
    plan = _ctx(version="2", serving_version="1", move_alias=True)
    plan.serving, plan.decision = rollout.Serving(version="1", object=STABLE), "promote"
    rollout.canary_manifest(plan)
    assert _skipped(rollout.deploy_canary, plan) is None and rollout.plan_canary(plan).outcome == "planned"
    assert _skipped(rollout.move_alias, plan) is None and rollout.plan_alias(plan).outcome == "planned"
    # with a cluster (or a registry) to find it, a canary without a version is not rendered
    cluster = LOCAL.model_copy(update={"name": "staging", "kube_context": "staging"})
    on_cluster = _ctx(target=cluster, clients=Clients(cluster, kube=object()))
    assert _skipped(rollout.canary_manifest, on_cluster).startswith("no version to deploy: give version")
    assert _skipped(rollout.canary_manifest, _ctx()) is None  # neither: a placeholder, as an illustration
