"""`opsbook.ops.security_incident_response` without a cluster: accounts, settings, the severity matrix, the quarantine policy,
plan-only behaviour on `local`, phase selection, the saved-copy check, and `clients.pgbackup` helpers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from opsbook.clients.pgbackup import dump_format
from opsbook.errors import Invalid, OpsbookError
from opsbook.ops import security_incident_response as incident
from opsbook.ops.security_incident_response import Account, parse_account, subject_matches
from opsbook.records.disk import Archive
from opsbook.targets import LOCAL


def inc_for(**params):
    p = {"incident_id": "INC-5", "namespace": "ml", **params}
    return incident.Incident(settings=incident.settings_from(p, None))


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
    s = incident.settings_from({"phases": ["recovery", "identification"]}, None)
    assert s.phases == ("identification", "recovery")  # handbook order
    assert incident.settings_from({"phases": ["all"]}, None).phases == incident.PHASES
    with pytest.raises(Invalid, match="phases"):
        incident.settings_from({"phases": ["contain"]}, None)
    with pytest.raises(Invalid, match="severity"):
        incident.settings_from({"severity": "high"}, None)
    tgt = SimpleNamespace(name="staging", prometheus_url="http://prom:9090/", namespace="ml-stg", production=True,
                          has_cluster=True)
    s = incident.settings_from({"mode": "apply"}, tgt)
    assert (s.prometheus_url, s.namespace, s.production, s.applying, s.target) == (
        "http://prom:9090", "ml-stg", True, True, "staging")


def test_quarantine_label_and_policy_names_are_valid_kubernetes_names():
    s = incident.settings_from({"incident_id": "SEC/2026#17 (token leak)"}, None)
    assert s.quarantine_value == "SEC-2026-17-token-leak"
    assert s.policy_name == "opsbook-quarantine-sec-2026-17-token-leak"
    pol = incident.quarantine_policy(s)
    assert pol["spec"] == {"podSelector": {"matchLabels": {incident.QUARANTINE_LABEL: s.quarantine_value}},
                           "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    long = incident.settings_from({"incident_id": "X" * 100}, None)
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
    inc = inc_for(**params)
    inc.state.update(state)
    res = incident.assess_severity(inc)
    assert res.details["assessed"] == want and res.details["severity"] == want
    assert [r["severity"] for r in res.rows] == list(incident.SEVERITIES)


def test_severity_critical_on_production_is_sev1_and_a_given_severity_wins():
    inc = incident.Incident(settings=incident.settings_from(
        {"incident_id": "I"}, SimpleNamespace(name="prod", production=True, namespace="ml", has_cluster=False)))
    inc.state["alerts"] = [{"state": "firing", "severity": "critical"}]
    assert incident.assess_severity(inc).details["assessed"] == "sev1"
    inc2 = inc_for(severity="sev3")
    res = incident.assess_severity(inc2)
    assert res.details["severity"] == "sev3" and res.details["assessed"] == "sev4"
    assert "given sev3" in res.summary


def test_without_a_cluster_changes_plan_and_reads_skip():
    inc = inc_for(compromised_accounts=["ml/web"], lift_isolation=True)
    assert incident.affected_pods(inc).outcome == "skipped"
    assert incident.capture_evidence(inc).outcome == "skipped"
    assert incident.plan_isolate(inc).outcome == "planned"
    assert incident.isolate(inc).outcome == "skipped"
    plan = incident.plan_disable_accounts(inc)
    assert plan.outcome == "planned" and plan.rows == [{"account": "ServiceAccount:ml/web"}]
    assert incident.plan_lift_isolation(inc).outcome == "planned"
    assert incident.pods_ready(inc).outcome == "skipped"
    assert incident.plan_lift_isolation(inc_for()).outcome == "skipped"  # lifting is explicit


def test_phases_not_selected_are_skipped():
    inc = inc_for(phases=["identification"], compromised_accounts=["ml/web"], release="r", rollback_revision=2)
    for fn in (incident.capture_evidence, incident.plan_isolate, incident.plan_disable_accounts, incident.rollback,
               incident.plan_rollback, incident.lift_isolation, incident.reenable_accounts, incident.incident_so_far):
        assert fn(inc).outcome == "skipped", fn.__name__


def test_preflight_refuses_the_placeholder_incident_id_in_apply():
    inc = incident.Incident(settings=incident.settings_from({"mode": "apply"}, LOCAL))
    checks = {c.name: c for c in incident.preflight(inc)}
    assert not checks["incident id is real"].passed
    ok = incident.Incident(settings=incident.settings_from({"mode": "plan"}, LOCAL))
    assert all(c.passed for c in incident.preflight(ok))


def test_preflight_wants_evidence_before_an_applied_containment(tmp_path):
    params = {"mode": "apply", "incident_id": "INC-8", "phases": ["containment"]}
    inc = incident.Incident(settings=incident.settings_from(params, LOCAL), archive=Archive(tmp_path, fsync=False))
    assert not {c.name: c for c in incident.preflight(inc)}["evidence before containment"].passed
    src = tmp_path / "src"
    (src / "evidence").mkdir(parents=True)
    (src / "evidence" / "events.json").write_text("[]")
    inc.archive.record(runbook_id="security-incident-response", run_id="p1", source_dir=src,
                       manifest={"parameters": {"incident_id": "INC-8"}, "evidence": [{"name": "events.json"}]})
    assert {c.name: c for c in incident.preflight(inc)}["evidence before containment"].passed
    with_evidence = incident.Incident(settings=incident.settings_from({**params, "phases": ["evidence", "containment"]},
                                                                      LOCAL))
    assert "evidence before containment" not in {c.name for c in incident.preflight(with_evidence)}


@pytest.mark.parametrize("text, ok", [
    ("web=ghcr.io/ml/web@sha256:" + "a" * 64, True),
    ("web/server=registry:5000/ml/web@sha256:" + "0" * 64, True),
    ("web=ghcr.io/ml/web:1.0", False),
    ("web=ghcr.io/ml/web@sha256:abc", False),
])
def test_known_good_image_must_be_a_digest(text, ok):
    s = incident.settings_from({"known_good_image": text}, None)
    if ok:
        dep, _container, image = incident._image_target(s)
        assert dep == "web" and "@sha256:" in image
    else:
        with pytest.raises(Invalid):
            incident._image_target(s)


def test_saved_copy_is_read_from_the_incidents_records_and_refused_when_tampered(tmp_path):
    archive = Archive(tmp_path / "out", fsync=False)
    src = tmp_path / "src"
    (src / "evidence" / "containment").mkdir(parents=True)
    payload = {"incident_id": "INC-5", "items": [{"kind": "RoleBinding", "namespace": "ml", "name": "rb",
                                                  "action": "delete", "removed_subjects": [], "object": {}}]}
    (src / "evidence" / incident.ACCOUNTS_EVIDENCE).write_text(json.dumps(payload))
    ref = archive.record(runbook_id="security-incident-response", run_id="r1", source_dir=src,
                         manifest={"parameters": {"incident_id": "INC-5"}, "started": "2026-01-01T00:00:00Z"})
    inc = inc_for(reenable_accounts=True)
    inc.archive = archive
    copies = incident.saved_copies(inc, incident.ACCOUNTS_EVIDENCE)
    assert [c["run_id"] for c in copies] == ["r1"] and copies[0]["items"] == payload["items"]
    assert incident.plan_reenable_accounts(inc).rows[0]["object"] == "RoleBinding/ml/rb"
    other = inc_for(incident_id="INC-6")
    other.archive = archive
    assert incident.saved_copies(other, incident.ACCOUNTS_EVIDENCE) == []
    f = ref.path / "evidence" / incident.ACCOUNTS_EVIDENCE
    f.chmod(0o644)
    f.write_text(json.dumps({**payload, "items": []}))
    with pytest.raises(OpsbookError, match="does not match its manifest"):
        incident.saved_copies(inc, incident.ACCOUNTS_EVIDENCE)


def test_error_rate_over_the_window():
    class Prom:
        def __init__(self, values):
            self.values = values

        def query_range(self, q, start, end, step):  # as clients.prometheus returns it
            import pandas as pd

            return pd.DataFrame([{"timestamp": start + i, "value": v} for i, v in enumerate(self.values)],
                                columns=["timestamp", "value"])

    inc = inc_for(error_rate_query="rate(errors[1m])", error_rate_max=0.05, monitor_seconds=60)
    inc.prometheus = Prom([0.01, 0.02])
    assert incident.error_rate(inc).outcome == "ok"
    inc.prometheus = Prom([0.01, 0.2])
    res = incident.error_rate(inc)
    assert res.outcome == "failed" and res.details["max"] == 0.2
    inc.prometheus = Prom([])
    assert incident.error_rate(inc).outcome == "failed"
    assert incident.error_rate(inc_for()).outcome == "skipped"


def test_dump_format(tmp_path):
    (tmp_path / "a.dump").write_bytes(b"PGDMP\x01\x0e\x00rest")
    (tmp_path / "b.sql").write_text("--\n-- PostgreSQL database dump\n--\nCREATE TABLE public.t (id int);\n")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "toc.dat").write_bytes(b"PGDMP")
    assert dump_format(tmp_path / "a.dump") == "custom"
    assert dump_format(tmp_path / "b.sql") == "plain"
    assert dump_format(d) == "directory"
