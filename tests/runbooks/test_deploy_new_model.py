"""The `deploy-new-model` runbook against real things: the registry check on the real ``mlflow_server``
(alias, legacy stage, refusals, alias moves), the canary / promote / rollback on the Kubernetes API
(``kube``) with a stable Deployment rendered from the ml-platform chart, and the notebook headless
through the real CLI on `local` (plan, and an approved apply acting on the plan's recorded verdict) and on
the cluster as the runbook's own ServiceAccount with exactly its declared RBAC."""

from __future__ import annotations

import secrets as _random
from pathlib import Path

import pytest
from opsbook.clients import Clients
from opsbook.clients.helm import Helm
from opsbook.clients.kube import Kube
from opsbook.clients.registry import Registry
from opsbook.ops import deploy_new_model as rollout
from opsbook.ops.base import declaration, skip_reason
from opsbook.targets import LOCAL
from opsbook.testing.runbook import make_context

from .conftest import CHART, ROOT, manifests_of, values_for
from .rbac import assert_applied, assert_not_forbidden

RUNBOOK = "deploy-new-model"
HEALTHY = ROOT / "examples" / "metrics" / "proposer-canary-healthy.csv"
REGRESSED = ROOT / "examples" / "metrics" / "proposer-canary-regressed.csv"


# ------------------------------------------------------------------------------------------- registry


@pytest.fixture(scope="module")
def registry_model(mlflow_server):
    """A registered model with three versions of one tiny pyfunc model: v1 @production, v2 nowhere,
    v3 in the legacy stage Production (alias still on v1)."""
    reg = Registry(mlflow_server.tracking_uri, timeout=60)
    name = f"proposer-{_random.token_hex(3)}"
    exp = reg.create_experiment(f"dnm-{name}")
    run_id = reg.log_run(exp, run_name="train", metrics={"accuracy": 0.91, "d_mean": 0.2}, params={"lr": "0.01"})
    model = reg.log_probe_model(run_id)
    v1 = reg.register(model.model_uri, name, alias="production")
    v2 = reg.register(model.model_uri, name)
    v3 = reg.register(model.model_uri, name)
    reg.transition_stage(name, v3.version, "Production")
    return reg, name, run_id, (v1.version, v2.version, v3.version)


def _ctx(reg: Registry, name: str, **params) -> rollout.Context:
    p = {"mode": "plan", "model": "proposer", "registered_model": name, "serving_version": "1",
         "metrics_file": str(HEALTHY), "tracking_uri": reg.tracking_uri, **params}
    return make_context(RUNBOOK, target=LOCAL, clients=Clients(LOCAL, registry=reg), run_id="run-x",
                        operator="alice", **p)


@pytest.mark.services
def test_version_in_production_by_alias_shows_source_run_and_metrics(registry_model):
    reg, name, run_id, (v1, _, _) = registry_model
    ctx = _ctx(reg, name)
    checks = {c.name: c for c in rollout.check_registry(ctx)}
    assert all(c.passed for c in checks.values()), checks
    assert ctx.candidate.version == v1 and ctx.in_production_by == "alias"
    assert "alias @production points at v" + v1 in checks["model version in Production"].reason
    shown = rollout.registry_version(ctx)
    assert shown.outcome is None or shown.outcome == "ok"
    assert shown.details["run_id"] == run_id and shown.details["metrics"]["accuracy"] == pytest.approx(0.91)
    assert shown.details["source"] and ctx.target_uri == f"models:/{name}/{v1}"


@pytest.mark.services
def test_version_not_in_production_is_refused_with_a_clear_message(registry_model):
    reg, name, _, (v1, v2, _) = registry_model
    ctx = _ctx(reg, name, version=v2)
    checks = rollout.preflight(ctx)
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["model version in Production"], checks
    reason = failed[0].reason
    assert f"v{v2} is not in Production" in reason and f"alias @production points at v{v1}" in reason
    assert "its stage is None" in reason and "Promote it in the registry first" in reason


@pytest.mark.services
def test_legacy_stage_production_is_accepted(registry_model):
    reg, name, _, (_, _, v3) = registry_model
    ctx = _ctx(reg, name, version=v3)
    checks = {c.name: c for c in rollout.check_registry(ctx)}
    assert checks["model version in Production"].passed, checks
    assert "legacy stage Production" in checks["model version in Production"].reason
    assert ctx.in_production_by == "stage" and ctx.candidate.stage == "Production"
    assert reg.latest_in_stage(name, "Production").version == v3


@pytest.mark.services
def test_missing_model_or_version_is_refused(registry_model):
    reg, name, _, _ = registry_model
    (c,) = rollout.check_registry(_ctx(reg, name + "-absent"))
    assert not c.passed and f"no registered model '{name}-absent'" in c.reason
    (c,) = rollout.check_registry(_ctx(reg, name, version="999"))
    assert not c.passed and "has no version 999" in c.reason


@pytest.mark.services
def test_alias_moves_are_recorded_and_a_rollback_moves_it_back(registry_model):
    reg, name, run_id, (v1, _, v3) = registry_model
    ctx = _ctx(reg, name, version=v3, mode="apply", move_alias=True)
    assert all(c.passed for c in rollout.check_registry(ctx))
    ctx.serving = rollout.Serving(version=v1)
    ctx.decision, ctx.decision_basis = "promote", {"plan_run_id": "plan-1", "verdict": "promote",
                                                   "decision": "promote"}
    assert rollout.plan_alias(ctx).outcome == "planned"
    moved = rollout.move_alias(ctx)
    assert moved.outcome == "changed", moved.summary
    assert reg.by_alias(name, "production").version == v3
    d = moved.details
    assert (d["from_version"], d["to_version"], d["by"], d["run_id"]) == (v1, v3, "alice", "run-x")
    assert d["evidence"]["plan_run_id"] == "plan-1" and d["evidence"]["verdict"] == "promote" and d["at"]
    assert "by alice" in reg.version(name, v3).tags["opsbook.alias_moved"]
    assert rollout.move_alias(ctx).outcome == "ok"  # already there: not moved twice
    # the canary of v3 failed: the alias goes back to what serves
    ctx.decision, ctx.decision_basis = "rollback", {"plan_run_id": "plan-2", "verdict": "rollback"}
    back = rollout.move_alias(ctx)
    assert back.outcome == "changed" and back.details["to_version"] == v1
    assert reg.by_alias(name, "production").version == v1


# ----------------------------------------------------------------------------------------- Kubernetes


@pytest.fixture
def stable(kube, tmp_path):
    """The ml-platform chart's proposer (2 replicas, model v1) applied to the test namespace."""
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    ns = kube.namespace
    k.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ml-platform-db"},
              "stringData": {"username": "u", "password": "p4ssw0rd-test"}}], namespace=ns)
    helm = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    overrides = values_for(kube, "ingress:\n  enabled: false\nservices:\n  critic:\n    enabled: false\n"
                                 "  proposer:\n    model:\n      uri: models:/proposer/1\n")
    values = tmp_path / "values.yaml"
    values.write_text(overrides)
    ms = helm.template("ml", str(CHART), values_files=[values], namespace=ns)
    k.apply([m for m in ms if m["kind"] in ("Deployment", "Service")], namespace=ns)
    k.wait_rollout(namespace=ns, name="ml-ml-platform-proposer", timeout=60)
    yield k
    k.close()


def _cluster_ctx(kube, k: Kube, metrics: Path, *, plan_record: dict | None = None, **params) -> rollout.Context:
    p = {"mode": "apply", "model": "proposer", "version": "2", "namespace": kube.namespace,
         "metrics_file": str(metrics), "timeout": 60.0, **params}
    target = LOCAL.model_copy(update={"name": "test", "kube_context": kube.context})
    return make_context(RUNBOOK, target=target, clients=Clients(target, kube=k), plan_record=plan_record,
                        run_id="run-k", operator="bob", **p)


def _versions(k: Kube, ns: str, track: str) -> list[str]:
    pods = k.pod_objects(namespace=ns, selector=f"app.kubernetes.io/name=proposer,opsbook.io/track={track}")
    return sorted(rollout.model_of(p)[0] for p in pods if not p["metadata"].get("deletionTimestamp"))


def _canary_up(ctx: rollout.Context, k: Kube, ns: str) -> None:
    checks = rollout.preflight(ctx)
    assert all(c.passed for c in checks), checks
    assert ctx.serving.version == "1" and ctx.stable_name == "ml-ml-platform-proposer"
    assert rollout.serving(ctx).details["version"] == "1"
    assert rollout.canary_manifest(ctx).details["manifest"]["metadata"]["name"] == "ml-ml-platform-proposer-canary"
    plan = rollout.plan_canary(ctx)
    assert plan.outcome == "planned" and plan.details["dry_run"] and "create" in plan.summary, plan.summary
    up = rollout.deploy_canary(ctx)
    assert up.outcome == "changed", up.summary
    assert _versions(k, ns, "canary") == ["2"] and _versions(k, ns, "stable") == ["1", "1"]
    svc = k.get(kind="Service", name="ml-ml-platform-proposer", namespace=ns)
    canary_labels = ctx.canary["spec"]["template"]["metadata"]["labels"]
    assert all(canary_labels.get(key) == v for key, v in svc["spec"]["selector"].items())  # gets traffic
    assert rollout.deploy_canary(ctx).outcome == "ok"  # idempotent: already running v2
    assert rollout.collect(ctx).details["intervals"] == 60


@pytest.mark.kube
def test_canary_then_promote_rolls_the_new_version_out_everywhere(kube, stable):
    ns = kube.namespace
    ctx = _cluster_ctx(kube, stable, HEALTHY)
    _canary_up(ctx, stable, ns)
    assert rollout.judge(ctx).details["decision"] == "promote"
    assert rollout.decide(ctx).details["decision"] == "promote"
    assert rollout.plan_promote(ctx).details["dry_run_version"] == "2"
    assert skip_reason(declaration(rollout.rollback), ctx) == "the decision is promote, not rollback"
    assert skip_reason(declaration(rollout.promote), ctx) is None
    done = rollout.promote(ctx)
    assert done.outcome == "changed" and done.details["canary_deleted"], done.summary
    verified = rollout.verify_instances(ctx)
    assert verified.outcome == "ok", verified.summary
    assert _versions(stable, ns, "stable") == ["2", "2"] and _versions(stable, ns, "canary") == []
    dep = stable.get(kind="Deployment", name="ml-ml-platform-proposer", namespace=ns)
    assert rollout.model_of(dep)[:2] == ("2", "models:/proposer/2")
    assert dep["spec"]["template"]["metadata"]["annotations"]["opsbook.io/model-version"] == "2"


@pytest.mark.kube
def test_rollback_deletes_the_canary_and_restores_what_served_before(kube, stable):
    ns = kube.namespace
    # the approved plan recorded v1 serving and a rollback verdict
    plan = {"run_id": "plan-r",
            "steps": [{"id": "serving-version", "details": {"version": "1", "uri": "models:/proposer/1"}},
                      {"id": "judge", "details": {"decision": "rollback", "reason": "latency"}}]}
    ctx = _cluster_ctx(kube, stable, REGRESSED, plan_record=plan)
    _canary_up(ctx, stable, ns)
    assert rollout.judge(ctx).details["decision"] == "rollback"
    decided = rollout.decide(ctx)
    assert decided.details["decision"] == "rollback" and decided.details["plan_run_id"] == "plan-r"
    assert skip_reason(declaration(rollout.promote), ctx) == "the decision is rollback, not promote"
    # someone changed the stable Deployment meanwhile: the rollback puts back exactly v1
    rollout.patch_stable(ctx, version="2", uri="models:/proposer/2")
    done = rollout.rollback(ctx)
    assert done.outcome == "changed" and done.details["restored"] and done.details["canary_deleted"], done.summary
    verified = rollout.verify_instances(ctx)
    assert verified.outcome == "ok", verified.summary
    assert _versions(stable, ns, "stable") == ["1", "1"] and _versions(stable, ns, "canary") == []
    dep = stable.get(kind="Deployment", name="ml-ml-platform-proposer", namespace=ns)
    assert rollout.model_of(dep)[:2] == ("1", "models:/proposer/1")


@pytest.mark.kube
def test_a_stable_deployment_that_would_adopt_the_canary_is_refused(kube, stable):
    ctx = _cluster_ctx(kube, stable, HEALTHY, version="1")
    checks = {c.name: c for c in rollout.preflight(ctx)}
    assert not checks["a new version"].passed and "already serving" in checks["a new version"].reason
    ctx = _cluster_ctx(kube, stable, HEALTHY, deployment="no-such-deployment")
    checks = {c.name: c for c in rollout.preflight(ctx)}
    assert not checks["stable Deployment"].passed
    # a Deployment whose selector lacks opsbook.io/track: stable would take the canary's pods over
    dep = stable.get(kind="Deployment", name="ml-ml-platform-proposer", namespace=kube.namespace)
    legacy = rollout.render_canary(dep, version="1", uri="models:/proposer/1")
    legacy["metadata"]["name"] = "legacy"
    legacy["spec"]["selector"]["matchLabels"].pop("opsbook.io/track")
    stable.apply([legacy], namespace=kube.namespace)
    ctx = _cluster_ctx(kube, stable, HEALTHY, deployment="legacy")
    checks = {c.name: c for c in rollout.preflight(ctx)}
    assert not checks["stable selector excludes the canary"].passed
    assert "would adopt the canary's pods" in checks["stable selector excludes the canary"].reason


# ---------------------------------------------------------------------------------------------- CLI


def _steps(m: dict) -> dict[str, dict]:
    """A run's recorded steps by their declared id (what an apply finds its plan's steps by)."""
    return {s["id"]: s for s in m["steps"]}


def test_plan_on_local_judges_the_recorded_canary(opsbook_run):
    r = opsbook_run(RUNBOOK, "-p", "version", "2", "-p", "serving_version", "1",
                    env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "succeeded" and m["mode"] == "plan" and m["target"] == "local"
    steps = _steps(m)
    assert steps["judge"]["title"] == "Judge the canary" and steps["judge"]["kind"] == "step"
    judged = steps["judge"]["details"]
    assert judged["decision"] == "promote", judged
    assert {x["metric"] for x in judged["metrics"]} == {"accuracy", "latency", "error_rate", "d"}
    assert all(x["reason"] for x in judged["metrics"])
    assert steps["decide"]["details"]["decision"] == "promote"
    assert steps["deploy-canary"]["outcome"] == "planned"
    assert steps["canary-manifest"]["details"]["manifest"]["metadata"]["labels"]["opsbook.io/track"] == "canary"
    assert steps["promote"]["outcome"] == "planned"
    assert steps["serving-version"]["details"]["version"] == "1"
    assert steps["plot"]["details"]["png_bytes"] > 1000
    assert judged["warmup_intervals"] == 1 and steps["plot"]["details"]["warmup_intervals"] == 1
    nb = (next((opsbook_run.outputs / RUNBOOK).iterdir()) / "notebook.ipynb").read_text()
    assert "image/png" in nb
    assert "the first 1 interval(s), 1 min, are not judged" in nb  # the settings table


def test_a_warmup_as_long_as_the_monitoring_period_is_refused_naming_it(opsbook_run):
    r = opsbook_run(RUNBOOK, "-p", "version", "2", "-p", "serving_version", "1", "-p", "monitor_minutes", "10",
                    "-p", "warmup_intervals", "10")
    assert r.returncode != 0, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())  # the terminal output wraps long lines
    assert ("warmup_intervals=10: expected at most 9: the warm-up must leave at least one of the monitoring "
            "period's 10 intervals of 60 s (monitor_minutes=10) to judge") in out, out
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "failed" and "judge" not in _steps(m)  # stopped at the settings
    r = opsbook_run(RUNBOOK, "-p", "warmup_intervals", "-2")
    assert r.returncode == 2 and "warmup_intervals: got '-2'; expected a value >= 0" in r.stderr, r.stdout + r.stderr


@pytest.mark.slow  # over 10 s on a 2-core machine
def test_regressed_canary_plan_then_approved_apply_acts_on_the_plans_verdict(opsbook_run):
    args = ["-p", "version", "2", "-p", "serving_version", "1", "-p", "metrics_file", str(REGRESSED)]
    r = opsbook_run(RUNBOOK, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert _steps(plan)["judge"]["details"]["decision"] == "rollback"
    assert _steps(plan)["rollback"]["outcome"] == "planned"
    # the terminal says what the run found, not only "succeeded"
    headline = _steps(plan)["judge"]["headline"]
    assert headline.startswith("ROLLBACK at interval ") and "latency +" in headline
    assert f"▶ {headline}" in r.stdout
    r = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", plan["run_id"], env={"OPSBOOK_OPERATOR": "carol"})
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"]
    assert m["status"] == "succeeded"
    decided = _steps(m)["decide"]["details"]
    assert decided["decision"] == "rollback" and decided["plan_run_id"] == plan["run_id"]
    assert decided["verdict_source"] == f"the approved plan {plan['run_id']}" and decided["operator"] == "carol"
    assert _steps(m)["rollback"]["outcome"] == "skipped"  # no cluster on local
    assert _steps(m)["promote"]["outcome"] == "skipped"


@pytest.mark.kube
def test_plan_then_approved_apply_on_a_cluster_canaries_promotes_and_verifies(kube, stable, opsbook_run, tmp_path,
                                                                               declared_rbac):
    """The CLI runs as the runbook's own ServiceAccount with exactly its declared RBAC (``rbac.py``); the
    stable Deployment and the checks are the admin's."""
    ns = kube.namespace
    params = {"namespace": ns, "version": "2", "metrics_file": str(HEALTHY), "timeout": "60"}
    grant = declared_rbac(RUNBOOK, params)
    env = {"OPSBOOK_TARGETS": str(grant.targets(tmp_path / "targets.yaml", kube)), "OPSBOOK_OPERATOR": "dana"}
    args = ["--target", "kt", *[x for k, v in params.items() for x in ("-p", k, v)]]
    r = opsbook_run(RUNBOOK, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert_not_forbidden(plan)
    steps = _steps(plan)
    assert steps["deploy-canary"]["outcome"] == "planned" and steps["deploy-canary"]["details"]["dry_run"]
    assert steps["promote"]["details"]["dry_run_version"] == "2"
    assert _versions(stable, ns, "canary") == []  # plan changed nothing
    r = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", plan["run_id"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"]
    assert_applied(m, r)  # succeeded, and no step was forbidden
    steps = _steps(m)
    assert steps["deploy-canary"]["outcome"] == "changed"
    assert steps["decide"]["details"]["plan_run_id"] == plan["run_id"]
    assert steps["promote"]["outcome"] == "changed"
    assert steps["verify-instances"]["outcome"] == "ok"
    assert _versions(stable, ns, "stable") == ["2", "2"] and _versions(stable, ns, "canary") == []


@pytest.mark.services
def test_local_apply_with_a_registry_moves_the_alias_on_the_approved_evidence(registry_model, opsbook_run):
    reg, name, _, (v1, _, v3) = registry_model
    args = ["-p", "registered_model", name, "-p", "version", v3, "-p", "serving_version", v1,
            "-p", "tracking_uri", reg.tracking_uri, "-p", "move_alias", "true"]
    env = {"OPSBOOK_OPERATOR": "erin"}
    try:
        r = opsbook_run(RUNBOOK, *args, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        (plan,) = manifests_of(opsbook_run.outputs, RUNBOOK)
        steps = _steps(plan)
        assert steps["registry-version"]["details"]["in_production_by"] == "stage"
        assert steps["move-alias"]["outcome"] == "planned"
        assert reg.by_alias(name, "production").version == v1  # the plan moved nothing
        r = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", plan["run_id"], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        (m,) = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"]
        moved = _steps(m)["move-alias"]
        assert moved["outcome"] == "changed", moved
        d = moved["details"]
        assert (d["from_version"], d["to_version"], d["by"], d["run_id"]) == (v1, v3, "erin", m["run_id"])
        assert d["evidence"]["plan_run_id"] == plan["run_id"] and d["evidence"]["verdict"] == "promote"
        assert reg.by_alias(name, "production").version == v3
    finally:
        reg.set_alias(name, "production", v1)
