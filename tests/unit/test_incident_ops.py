"""`opsbook.ops.security_incident_response` without a cluster: accounts, settings, the severity matrix, the quarantine policy,
plan-only behaviour on `local`, phase selection, the saved-copy check, and `clients.pgbackup` helpers."""

from __future__ import annotations

import json

import pytest
from opsbook.clients import Clients
from opsbook.clients.pgbackup import dump_format
from opsbook.errors import Invalid, OpsbookError, ParameterError
from opsbook.ops import security_incident_response as incident
from opsbook.ops.security_incident_response import Account, parse_account, subject_matches
from opsbook.records.disk import Archive
from opsbook.targets import LOCAL, Target
from opsbook.testing.runbook import do, make_context

RUNBOOK = "security-incident-response"


def inc_for(*, mode="plan", target=None, clients=None, archive=None, **values):
    values = {"incident_id": "INC-5", "namespace": "ml", **values}
    return make_context(RUNBOOK, mode=mode, target=target, clients=clients, archive=archive, **values)




@pytest.mark.parametrize("text, want", [
    ("ml/proposer", Account("ServiceAccount", "proposer", "ml")),
    ("proposer", Account("ServiceAccount", "proposer", "default-ns")),
    ("system:serviceaccount:ops:deployer", Account("ServiceAccount", "deployer", "ops")),
    ("ServiceAccount:ops/deployer", Account("ServiceAccount", "deployer", "ops")),
    ("User:alice@example.com", Account("User", "alice@example.com")),
    ("group:ml-admins", Account("Group", "ml-admins")),
])
def test_parse_account(text, want):
    assert parse_account(text, "default-ns") == want


@pytest.mark.parametrize("text", ["", "Role:x", "  "])
def test_parse_account_rejects(text):
    with pytest.raises(Invalid):
        parse_account(text, "ns")


def test_subject_matches_service_accounts_users_and_groups():
    sa = Account("ServiceAccount", "web", "ml")
    assert subject_matches({"kind": "ServiceAccount", "name": "web", "namespace": "ml"}, sa)
    assert not subject_matches({"kind": "ServiceAccount", "name": "web", "namespace": "other"}, sa)
    assert subject_matches({"kind": "User", "name": "system:serviceaccount:ml:web"}, sa)
    assert subject_matches({"kind": "User", "name": "alice"}, Account("User", "alice"))
    assert not subject_matches({"kind": "Group", "name": "alice"}, Account("User", "alice"))


def test_settings_phases_severity_and_target():
    ctx = inc_for(phases=["recovery", "identification"])
    assert ctx.phases == ("identification", "recovery")  # handbook order
    assert ctx.wants("recovery") and not ctx.wants("containment")
    assert inc_for(phases=["all"]).phases == incident.PHASES
    bad = inc_for(phases=["contain"])
    with pytest.raises(Invalid, match="phases"):
        bad.phases  # noqa: B018
    with pytest.raises(Invalid, match="phases"):  # the settings step, the run's first, fails on it
        incident.incident_settings(bad)
    with pytest.raises(ParameterError, match="severity"):  # [choices: ...] of the parameters cell
        inc_for(severity="high")
    tgt = Target(name="staging", prometheus_url="http://prom:9090/", namespace="ml-stg", production=True,
                 kube_context="staging-admin")
    ctx = make_context(RUNBOOK, mode="apply", target=tgt)
    assert (ctx.prometheus_url, ctx.production, ctx.applying, ctx.target_name, ctx.has_cluster) == (
        "http://prom:9090", True, True, "staging", True)
    # the namespace is the parameter's (the notebook's default), not the target's
    assert ctx.settings.namespace == "ml-platform"
    assert inc_for(prometheus_url="http://mine:9090/", target=tgt).prometheus_url == "http://mine:9090"


def test_notebook_defaults_hold():
    s = make_context(RUNBOOK).settings
    assert (s.selector, s.monitor_seconds, s.log_lines) == ("app.kubernetes.io/part-of in (ml-platform)", 300, 2000)


def test_settings_step_shows_the_incident():
    res = incident.incident_settings(inc_for(compromised_accounts=["ml/web"], phases=["containment", "evidence"]))
    rows = {r["setting"]: r["value"] for r in res.rows}
    assert rows["phases"] == "evidence, containment" and rows["compromised accounts"] == "ServiceAccount:ml/web"
    assert rows["cluster"].startswith("no") and res.details["accounts"] == ["ServiceAccount:ml/web"]


def test_quarantine_label_and_policy_names_are_valid_kubernetes_names():
    ctx = inc_for(incident_id="SEC/2026#17 (token leak)")
    assert ctx.quarantine_value == "SEC-2026-17-token-leak"
    assert ctx.policy_name == "opsbook-quarantine-sec-2026-17-token-leak"
    pol = incident.quarantine_policy(ctx)
    assert pol["spec"] == {"podSelector": {"matchLabels": {incident.QUARANTINE_LABEL: ctx.quarantine_value}},
                           "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    long = inc_for(incident_id="X" * 100)
    assert len(long.quarantine_value) <= 63 and len(long.policy_name) <= 63


@pytest.mark.parametrize("state, params, want", [
    ({}, {}, "sev4"),
    ({"pods": [{}]}, {}, "sev3"),
    ({"alerts": [{"state": "firing", "severity": "warning"}]}, {}, "sev3"),
    ({"alerts": [{"state": "pending", "severity": "critical"}]}, {}, "sev4"),
    ({"alerts": [{"state": "firing", "severity": "critical"}]}, {}, "sev2"),
    ({}, {"compromised_accounts": ["ml/web"]}, "sev2"),
])
def test_severity_matrix(state, params, want):
    ctx = inc_for(**params)
    for k, v in state.items():
        setattr(ctx, k, v)  # what identification found
    res = incident.assess_severity(ctx)
    assert res.details["assessed"] == want and res.details["severity"] == want
    assert [r["severity"] for r in res.rows] == list(incident.SEVERITIES)


def test_severity_critical_on_production_is_sev1_and_a_given_severity_wins():
    ctx = inc_for(incident_id="I", target=Target(name="prod", production=True, namespace="ml"))
    ctx.alerts = [{"state": "firing", "severity": "critical"}]
    assert incident.assess_severity(ctx).details["assessed"] == "sev1"
    ctx2 = inc_for(severity="sev3")
    res = incident.assess_severity(ctx2)
    assert res.details["severity"] == "sev3" and res.details["assessed"] == "sev4"
    assert "given sev3" in res.summary
    assert incident.record_responders(inc_for(responders=["alice"])).details["responders"] == ["alice"]


def test_without_a_cluster_changes_plan_and_reads_skip():
    ctx = inc_for(compromised_accounts=["ml/web"], lift_isolation=True)
    assert do(incident.affected_pods, ctx).outcome == "skipped"
    assert "no cluster" in do(incident.capture_evidence, ctx).summary
    assert do(incident.isolate, ctx).outcome == "planned"  # plan_isolate: says what it would do
    plan = do(incident.disable_accounts, ctx)
    assert plan.outcome == "planned" and plan.rows == [{"account": "ServiceAccount:ml/web"}]
    assert do(incident.lift_isolation, ctx).outcome == "planned"
    assert do(incident.pods_ready, ctx).outcome == "skipped"
    assert do(incident.scale_back, ctx).outcome == "skipped"
    lifting = do(incident.lift_isolation, inc_for())  # lifting is explicit
    assert lifting.outcome == "skipped" and "lift_isolation is false" in lifting.summary
    # an apply on a target without a cluster: the changes that need one are skipped, with the reason
    applying = inc_for(mode="apply", compromised_accounts=["ml/web"], lift_isolation=True)
    for fn in (incident.isolate, incident.disable_accounts, incident.lift_isolation):
        res = do(fn, applying)
        assert res.outcome == "skipped" and "no cluster on target local" in res.summary, fn.__name__


def test_phases_not_selected_are_skipped():
    ctx = inc_for(phases=["identification"], compromised_accounts=["ml/web"], release="r", rollback_revision=2,
                  lift_isolation=True, reenable_accounts=True)
    for fn in (incident.capture_evidence, incident.isolate, incident.disable_accounts, incident.rollback,
               incident.rollback_verified, incident.lift_isolation, incident.reenable_accounts,
               incident.incident_so_far):
        res = do(fn, ctx)
        assert res.outcome == "skipped" and "not selected" in res.summary, fn.__name__
    assert do(incident.assess_severity, ctx).outcome is None  # every run states the severity


def test_skip_reasons_name_what_is_missing():
    ctx = inc_for(isolate=False, scale_down=False)
    assert do(incident.isolate, ctx).summary == "isolate is false: the pods are not quarantined"
    assert do(incident.disable_accounts, ctx).summary.startswith("no compromised account to disable")
    assert do(incident.scale_down, ctx).summary.startswith("scale_down is false")
    assert do(incident.rollback, ctx).summary == "no helm rollback asked (release and rollback_revision)"
    assert do(incident.redeploy_image, ctx).summary == "no known-good image digest given"
    assert do(incident.restore_database, ctx).summary == "no backup_file given: no database restore"
    assert do(incident.reenable_accounts, ctx).summary.startswith("reenable_accounts is false")
    assert do(incident.alerts, ctx).summary.startswith("no Prometheus URL")
    # checks of what an apply did: nothing to check in a plan
    planned = inc_for(release="r", rollback_revision=2, backup_file="/dev/null")
    assert do(incident.rollback_verified, planned).summary.startswith("no cluster")
    assert do(incident.restore_verified, planned).summary == "plan mode: nothing was restored"


def test_preflight_refuses_the_placeholder_incident_id_in_apply():
    ctx = make_context(RUNBOOK, mode="apply", target=LOCAL)
    checks = {c.name: c for c in incident.incident_preflight(ctx)}
    assert not checks["incident id is real"].passed
    ok = make_context(RUNBOOK, mode="plan", target=LOCAL)
    assert all(c.passed for c in incident.incident_preflight(ok))


def test_preflight_wants_evidence_before_an_applied_containment(tmp_path):
    archive = Archive(tmp_path, fsync=False)
    values = {"incident_id": "INC-8", "phases": ["containment"]}
    ctx = make_context(RUNBOOK, mode="apply", target=LOCAL, archive=archive, **values)
    assert not {c.name: c for c in incident.incident_preflight(ctx)}["evidence before containment"].passed
    src = tmp_path / "src"
    (src / "evidence").mkdir(parents=True)
    (src / "evidence" / "events.json").write_text("[]")
    archive.record(runbook_id=RUNBOOK, run_id="p1", source_dir=src,
                   manifest={"parameters": {"incident_id": "INC-8"}, "evidence": [{"name": "events.json"}]})
    assert {c.name: c for c in incident.incident_preflight(ctx)}["evidence before containment"].passed
    with_evidence = make_context(RUNBOOK, mode="apply", target=LOCAL, **{**values, "phases": ["evidence", "containment"]})
    assert "evidence before containment" not in {c.name for c in incident.incident_preflight(with_evidence)}


def test_preflight_wants_an_archive_to_reenable_accounts(tmp_path):
    checks = {c.name: c for c in incident.incident_preflight(inc_for(reenable_accounts=True))}
    assert not checks["archive"].passed
    archived = inc_for(reenable_accounts=True, archive=Archive(tmp_path, fsync=False))
    assert "archive" not in {c.name for c in incident.incident_preflight(archived)}


@pytest.mark.parametrize("text, ok", [
    ("web=ghcr.io/ml/web@sha256:" + "a" * 64, True),
    ("web/server=registry:5000/ml/web@sha256:" + "0" * 64, True),
    ("web=ghcr.io/ml/web:1.0", False),
    ("web=ghcr.io/ml/web@sha256:abc", False),
])
def test_known_good_image_must_be_a_digest(text, ok):
    s = inc_for(known_good_image=text).settings
    if ok:
        dep, _container, image = incident.image_target(s.known_good_image)
        assert dep == "web" and "@sha256:" in image
    else:
        with pytest.raises(Invalid):
            incident.image_target(s.known_good_image)


def test_saved_copy_is_read_from_the_incidents_records_and_refused_when_tampered(tmp_path):
    archive = Archive(tmp_path / "out", fsync=False)
    src = tmp_path / "src"
    (src / "evidence" / "containment").mkdir(parents=True)
    payload = {"incident_id": "INC-5", "items": [{"kind": "RoleBinding", "namespace": "ml", "name": "rb",
                                                  "action": "delete", "removed_subjects": [], "object": {}}]}
    (src / "evidence" / incident.ACCOUNTS_EVIDENCE).write_text(json.dumps(payload))
    ref = archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src,
                         manifest={"parameters": {"incident_id": "INC-5"}, "started": "2026-01-01T00:00:00Z"})
    ctx = inc_for(reenable_accounts=True, archive=archive)
    copies = incident.saved_copies(ctx, incident.ACCOUNTS_EVIDENCE)
    assert [c["run_id"] for c in copies] == ["r1"] and copies[0]["items"] == payload["items"]
    assert do(incident.reenable_accounts, ctx).rows[0]["object"] == "RoleBinding/ml/rb"
    other = inc_for(incident_id="INC-6", archive=archive)
    assert incident.saved_copies(other, incident.ACCOUNTS_EVIDENCE) == []
    f = ref.path / "evidence" / incident.ACCOUNTS_EVIDENCE
    f.chmod(0o644)
    f.write_text(json.dumps({**payload, "items": []}))
    with pytest.raises(OpsbookError, match="does not match its manifest"):
        incident.saved_copies(ctx, incident.ACCOUNTS_EVIDENCE)


def test_incident_runs_lists_the_incidents_records(tmp_path):
    archive = Archive(tmp_path / "out", fsync=False)
    src = tmp_path / "src"
    src.mkdir()
    archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src,
                   manifest={"parameters": {"incident_id": "INC-5", "phases": ["containment"]}, "mode": "plan",
                             "status": "succeeded", "started": "2026-01-01T00:00:00Z"})
    res = incident.incident_so_far(inc_for(archive=archive))
    assert [(r["run"], r["phases"], r["mode"]) for r in res.rows] == [("r1", "containment", "plan")]
    assert "opsbook evidence INC-5 --out INC-5.tar.gz" in res.summary
    assert incident.incident_so_far(inc_for()).rows == []  # no archive: none


def test_error_rate_over_the_window():
    class Prom:
        def __init__(self, values):
            self.values = values

        def query_range(self, q, start, end, step):  # as clients.prometheus returns it
            import pandas as pd

            return pd.DataFrame([{"timestamp": start + i, "value": v} for i, v in enumerate(self.values)],
                                columns=["timestamp", "value"])

    def ctx_with(values):
        return inc_for(clients=Clients(LOCAL, prometheus=Prom(values)), prometheus_url="http://prom.test",
                       error_rate_query="rate(errors[1m])", error_rate_max=0.05, monitor_seconds=60)

    assert incident.error_rate(ctx_with([0.01, 0.02])).outcome == "ok"
    res = incident.error_rate(ctx_with([0.01, 0.2]))
    assert res.outcome == "failed" and res.details["max"] == 0.2
    assert incident.error_rate(ctx_with([])).outcome == "failed"
    assert do(incident.error_rate, inc_for()).outcome == "skipped"
    assert do(incident.error_rate, inc_for(error_rate_query="up")).outcome == "skipped"  # no Prometheus URL


def test_restore_plan_uses_the_database_client_handed_in(tmp_path):
    class Db:
        def contents(self, path):
            return [{"type": "TABLE DATA", "schema": "public", "name": "runs"},
                    {"type": "TABLE", "schema": "public", "name": "runs"}]

        def row_counts(self, db, tables):
            return {"public.runs": 10}

    dump = tmp_path / "good.dump"
    dump.write_bytes(b"PGDMP")
    ctx = inc_for(clients=Clients(LOCAL, pgbackup=Db()), backup_file=str(dump), db_host="db", db_name="ml",
                  expected_rows={"public.runs": 50}, phases=["eradication"])
    plan = do(incident.restore_database, ctx)
    assert plan.outcome == "planned" and plan.rows == [
        {"table": "public.runs", "rows now (replaced)": 10, "expected after": 50}]
    assert "into ml on db:5432" in plan.summary and plan.details["toc_entries"] == 2
    checks = {c.name: c for c in incident.incident_preflight(ctx)}
    assert checks["backup file"].passed and checks["database named"].passed


def test_database_password_is_resolved_through_the_target_cluster():
    """A ``k8s:`` reference is read with the cluster's client, as the notebook API's resolver allows."""
    seen = {}

    def secret(name, *, k8s=None):
        seen[name] = k8s
        return "a-long-enough-password"

    class Kube:
        def read_secret_key(self, namespace, name, key):
            raise AssertionError("the resolver reads it")

    kube = Kube()
    settings = make_context(RUNBOOK, db_password="k8s:ml/db/password", db_host="db").settings
    ctx = incident.Context(settings=settings, target=LOCAL, clients=Clients(LOCAL, kube=kube), secret=secret)
    assert ctx.db().password == "a-long-enough-password" and seen["db_password"] == kube.read_secret_key
    assert ctx.db() is ctx.db()  # one client per run
    assert make_context(RUNBOOK, db_host="db").db().password is None  # no reference: no password


def test_dump_format(tmp_path):
    (tmp_path / "a.dump").write_bytes(b"PGDMP\x01\x0e\x00rest")
    (tmp_path / "b.sql").write_text("--\n-- PostgreSQL database dump\n--\nCREATE TABLE public.t (id int);\n")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "toc.dat").write_bytes(b"PGDMP")
    assert dump_format(tmp_path / "a.dump") == "custom"
    assert dump_format(tmp_path / "b.sql") == "plain"
    assert dump_format(d) == "directory"
