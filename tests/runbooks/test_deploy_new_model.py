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



# --------------------------------------------------------------------------------------------- undo


@pytest.mark.services
def test_an_alias_move_is_journalled_and_its_undo_points_it_back(registry_model):
    """The undo runbook's side of ``move-alias`` (``JOURNAL``, reaching the registry by the tracking URI
    the entry records): the alias is pointed back at the version it was on before the apply."""
    from types import SimpleNamespace

    from opsbook.ops.journal import JOURNAL

    reg, name, _, (v1, _, v3) = registry_model
    undo_ctx = SimpleNamespace(registry_for=lambda uri: Registry(uri, timeout=60))
    ctx = _ctx(reg, name, version=v3, mode="apply", move_alias=True)
    try:
        assert all(c.passed for c in rollout.check_registry(ctx))
        ctx.serving = rollout.Serving(version=v1)
        ctx.decision, ctx.decision_basis = "promote", {"decision": "promote"}
        assert rollout.move_alias(ctx).outcome == "changed"
        (entry,) = ctx.journal.entries
        assert entry == {"type": "alias", "tracking_uri": reg.tracking_uri, "model": name, "alias": "production",
                         "before": v1, "after": v3}
        assert JOURNAL.status(undo_ctx, entry).state == "as-left"
        assert JOURNAL.reverse(undo_ctx, entry) == f"pointed back at v{v1}"
        assert reg.by_alias(name, "production").version == v1
        assert JOURNAL.back_as_before(undo_ctx, entry).state == "restored"
    finally:
        reg.set_alias(name, "production", v1)


def test_an_alias_the_apply_set_is_deleted_by_the_undo(registry_model):
    """An alias that was not set before the apply (MLflow answers INVALID_PARAMETER_VALUE "... not
    found", not RESOURCE_DOES_NOT_EXIST) is recorded as unset, and its undo deletes it."""
    from types import SimpleNamespace

    from opsbook.ops.journal import JOURNAL, Journal

    reg, name, _, (_, _, v3) = registry_model
    assert reg.by_alias(name, "undo-test") is None
    undo_ctx = SimpleNamespace(registry_for=lambda uri: Registry(uri, timeout=60))
    j = Journal()
    j.alias(reg, model=name, alias="undo-test", version=v3)
    (entry,) = j.entries
    assert entry["before"] is None and entry["after"] == v3 and reg.by_alias(name, "undo-test").version == v3
    assert JOURNAL.status(undo_ctx, entry).state == "as-left"
    assert JOURNAL.reverse(undo_ctx, entry) == "alias deleted"
    assert reg.by_alias(name, "undo-test") is None
    assert JOURNAL.back_as_before(undo_ctx, entry).state == "restored"


@pytest.mark.kube
@pytest.mark.services
def test_an_apply_stopped_at_the_alias_move_is_undone_from_its_record(kube, stable, registry_model, opsbook_run,
                                                                       tmp_path, declared_rbac):
    """As the runbook's ServiceAccount, with a registry: the approved apply deploys the canary of v3,
    promotes it (the stable Deployment patched to v3 and rolled out, the canary deleted), then stops at
    the alias move: ``production_alias`` is ``latest``, which MLflow reads as its newest version (v4
    here, so the preflight passes on v3's legacy stage Production) but refuses to set (reserved). The
    CLI names what the apply changed and the undo command; the undo puts the stable Deployment back on
    v1 and finds the canary already gone. The namespace is compared with its state before the apply,
    object by object, and so are the registry's aliases; a second undo is refused."""
    from .undo import assert_second_undo_refused, assert_undone, differences, snapshot, undo

    reg, name, _, (v1, _, v3) = registry_model
    v4 = reg.register(reg.version(name, v1).source, name).version  # newer than the one deployed, nowhere
    ns, stable_name = kube.namespace, "ml-ml-platform-proposer"
    params = {"namespace": ns, "registered_model": name, "version": v3, "tracking_uri": reg.tracking_uri,
              "production_alias": "latest", "move_alias": "true", "metrics_file": str(HEALTHY), "timeout": "60"}
    grant = declared_rbac(RUNBOOK, params)
    env = {"OPSBOOK_TARGETS": str(grant.targets(tmp_path / "targets.yaml", kube)), "OPSBOOK_OPERATOR": "fay"}
    args = ["--target", "kt", *[x for k, v in params.items() for x in ("-p", k, v)]]

    def aliases() -> dict[str, str]:
        return {a: reg.by_alias(name, a).version for a in ("production", "latest")}

    try:
        plan = opsbook_run(RUNBOOK, *args, env=env)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        (pm,) = manifests_of(opsbook_run.outputs, RUNBOOK)
        assert _steps(pm)["move-alias"]["outcome"] == "planned"
        before, aliases_before = snapshot(kube, [ns]), aliases()
        assert aliases_before == {"production": v1, "latest": v4}

        apply = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", pm["run_id"], env=env)
        am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][-1]
        assert apply.returncode == 1 and am["status"] == "failed", apply.stdout + apply.stderr
        steps = _steps(am)
        assert steps["deploy-canary"]["outcome"] == "changed" and steps["promote"]["outcome"] == "changed"
        assert steps["move-alias"]["outcome"] == "failed" and "reserved" in steps["move-alias"]["summary"]
        assert not (steps["move-alias"].get("undo") or {}).get("entries")  # refused: the alias did not move
        assert "verify-instances" not in steps
        canary, promoted = steps["deploy-canary"]["undo"], steps["promote"]["undo"]
        assert canary["by"] == promoted["by"] == "opsbook.ops.journal:journal"
        ((created,), (patched, deleted)) = canary["entries"], promoted["entries"]
        assert (created["name"], created["before"]) == (f"{stable_name}-canary", None)
        assert (deleted["name"], deleted["after"]) == (f"{stable_name}-canary", None)
        assert patched["name"] == stable_name and rollout.model_of(patched["before"])[0] == "1"
        assert rollout.model_of(patched["after"])[:2] == (v3, f"models:/{name}/{v3}")
        out = apply.stdout + apply.stderr
        assert f"promote: Deployment/{ns}/{stable_name} changed" in out and f"opsbook undo {am['run_id']}" in out
        assert _versions(stable, ns, "stable") == [v3, v3] and _versions(stable, ns, "canary") == []

        undo_plan, undo_apply = undo(opsbook_run, am["run_id"], env, cwd=tmp_path)
        rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
        # the canary, created and deleted by the apply, is no change: only the stable Deployment goes back
        assert [(r["what"], r["now"]) for r in rows] == [(f"Deployment/{ns}/{stable_name}", "as-left")]
        assert_undone(undo_apply, am["run_id"])
        assert differences(before, snapshot(kube, [ns])) == []
        assert aliases() == aliases_before
        dep = stable.get(kind="Deployment", name=stable_name, namespace=ns)
        assert rollout.model_of(dep)[:2] == ("1", "models:/proposer/1")
        assert_second_undo_refused(opsbook_run, am["run_id"], env, undo_apply["run_id"], cwd=tmp_path)
    finally:
        reg.client.delete_model_version(name, v4)  # the module's registered model as the other tests know it


@pytest.mark.kube
def test_the_undo_of_a_promote_puts_back_a_canary_an_earlier_run_left(kube, stable):
    """In process, each change with a fresh journal as the notebook API gives it: a canary of v2 left by
    an earlier run; this apply's deploy-canary updates it to v3, promote patches the stable Deployment
    and deletes the canary. The undo runbook reads those two changes of the canary as one (before: the
    v2 canary, after: gone) and re-creates it, and puts the stable Deployment back: the namespace as before."""
    from types import SimpleNamespace

    from opsbook.clients import Clients
    from opsbook.ops import undo
    from opsbook.ops.deploy_new_model.context import FIELD_MANAGER
    from opsbook.ops.journal import JOURNAL, Journal

    from .undo import differences, snapshot

    ns = kube.namespace
    dep = stable.get(kind="Deployment", name="ml-ml-platform-proposer", namespace=ns)
    left = rollout.render_canary(dep, version="2", uri="models:/proposer/2", model="proposer")
    stable.apply([left], namespace=ns, field_manager=FIELD_MANAGER)
    stable.wait_rollout(namespace=ns, name="ml-ml-platform-proposer-canary", timeout=60)
    before = snapshot(kube, [ns])
    ctx = _cluster_ctx(kube, stable, HEALTHY, version="3")
    steps: list[dict] = []

    def change(fn):
        decl = declaration(fn)
        assert decl is not None and decl.undo is JOURNAL
        ctx.journal = Journal()
        done = fn(ctx)
        steps.append({"kind": "change", "id": decl.id, "title": decl.title, "outcome": "changed",
                      "undo": {"by": JOURNAL.name, "entries": ctx.journal.entries}})
        return done

    assert all(c.passed for c in rollout.preflight(ctx))
    rollout.serving(ctx)
    rollout.canary_manifest(ctx)
    assert change(rollout.deploy_canary).details["action"] == "update (running v2)"
    rollout.collect(ctx)
    rollout.judge(ctx)
    assert rollout.decide(ctx).details["decision"] == "promote"
    assert change(rollout.promote).details["canary_deleted"]
    (canary,) = steps[0]["undo"]["entries"]
    assert [rollout.model_of(canary[k])[0] for k in ("before", "after")] == ["2", "3"]
    assert [e["name"] for e in steps[1]["undo"]["entries"]] == ["ml-ml-platform-proposer",
                                                                "ml-ml-platform-proposer-canary"]
    undo_ctx = undo.Context(settings=SimpleNamespace(undo_of="r", target="t", mode="apply"),
                            clients=Clients(None, kube=stable))
    undo_ctx.__dict__["applied"] = {"steps": steps}
    items = undo_ctx.items  # newest first; the canary's two changes as one
    assert [(i.step_id, i.entry["name"]) for i in items] == [
        ("deploy-canary+promote", "ml-ml-platform-proposer-canary"), ("promote", "ml-ml-platform-proposer")]
    assert rollout.model_of(items[0].entry["before"])[0] == "2" and items[0].entry["after"] is None
    assert [undo_ctx.status(i).state for i in items] == ["as-left", "as-left"]
    assert [JOURNAL.reverse(undo_ctx, i.entry) for i in items] == ["re-created", "put back as before"]
    assert [JOURNAL.back_as_before(undo_ctx, i.entry).state for i in items] == ["restored", "restored"]
    assert differences(before, snapshot(kube, [ns])) == []
