"""The notebook API in-process, as a cell in JupyterLab would call it (no runner)."""

from __future__ import annotations

import json

import opsbook
import pytest
from opsbook import notebook
from opsbook.errors import ParameterError, PreflightFailed, RunFailed

from ..conftest import FIXTURE_NOTEBOOKS


@pytest.fixture
def ns(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(tmp_path / "outputs"))  # an apply writes ahead to the ledger
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID):
        monkeypatch.delenv(var, raising=False)
    return {"mode": "plan", "target": "local", "namespace": "ml-platform", "replicas": 2,
            "db_password": "env:OPSBOOK_FIXTURE_SECRET", "unrelated_variable": object()}


def test_start_validates_parameters_edited_by_hand(ns):
    ns["namespace"] = "Not_A_Name"
    with pytest.raises(ParameterError, match="namespace"):
        opsbook.start("passing", ns)


def test_plan_mode_never_calls_the_change(ns, capsys):
    run = opsbook.start("passing", ns)
    called = []
    run.change("Scale", lambda: called.append(1), plan=lambda: opsbook.Result(summary="would scale to 3"))
    run.change("Delete", lambda: called.append(2))
    assert called == []
    assert [(r.title, r.outcome) for r in run.records] == [("Scale", "planned"), ("Delete", "planned")]
    assert "would run" in run.records[1].summary
    assert "plan mode: Scale is not applied" in capsys.readouterr().out


def test_apply_mode_calls_the_change(ns):
    ns["mode"] = "apply"
    run = opsbook.start("passing", ns)
    assert run.change("Scale", lambda: "done") == "done"
    assert run.records[-1].outcome == "changed"


def test_failed_step_is_recorded_and_reraised(ns):
    run = opsbook.start("passing", ns)
    with pytest.raises(ZeroDivisionError):
        run.step("Divide", lambda: 1 / 0)
    assert run.records[-1].outcome == "failed" and "ZeroDivisionError" in run.records[-1].summary


def test_checks_and_summary(ns):
    run = opsbook.start("passing", ns)
    assert run.check("true", True) is True
    assert run.check("check object", lambda: opsbook.Check("c", False, "because")) is False
    assert run.check("raises", lambda: 1 / 0) is False
    with pytest.raises(RunFailed, match="check object: because; raises: ZeroDivisionError"):
        run.summary()


def test_preflight_stops_with_reasons(ns):
    run = opsbook.start("passing", ns)
    with pytest.raises(PreflightFailed, match="helm: not installed"):
        run.preflight([opsbook.Check("kubectl", True, "v1.32"), opsbook.Check("helm", False, "not installed")])
    assert run.records[-1].outcome == "failed"


def test_events_file_gets_redacted_outcomes(ns, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(notebook.ENV_SOURCE, str(FIXTURE_NOTEBOOKS / "passing.ipynb"))
    monkeypatch.setenv(notebook.ENV_EVENTS, str(events))
    monkeypatch.setenv(notebook.ENV_RUN_ID, "20261128T000000Z-abcdef")
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", "very-secret-value-42")
    run = opsbook.start("passing", ns)
    assert run.id == "20261128T000000Z-abcdef" and run.headless
    pw = run.secret("db_password")
    run.step("Leak", lambda: opsbook.Result(summary="pw=" + pw))
    text = events.read_text()
    assert "very-secret-value-42" not in text and "[REDACTED]" in text
    kinds = [json.loads(line)["event"] for line in text.splitlines()]
    assert kinds == ["start", "step"]


def test_interactive_apply_of_a_high_risk_runbook_needs_an_approved_plan(ns, tmp_path, monkeypatch):
    import subprocess
    import sys

    from opsbook.errors import ApprovalError

    outputs = tmp_path / "outputs"
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(outputs))
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", "fixture-secret-value")
    monkeypatch.delenv(notebook.ENV_APPROVED_PLAN, raising=False)
    ns["mode"] = "apply"
    with pytest.raises(ApprovalError, match="OPSBOOK_APPROVED_PLAN"):
        opsbook.start("highrisk", ns)
    # a plan made headless, then named in the walkthrough
    r = subprocess.run([sys.executable, "-m", "opsbook", "run", "highrisk", "--quiet", "--notebooks",
                        str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)], capture_output=True, text=True,
                       env={**__import__("os").environ})
    assert r.returncode == 0, r.stderr
    plan_id = json.loads((outputs / "ledger.jsonl").read_text().splitlines()[-1])["run_id"]
    monkeypatch.setenv(notebook.ENV_APPROVED_PLAN, plan_id)
    run = opsbook.start("highrisk", ns)
    assert run.approved_plan == plan_id and run.approval["source_checked"] is False
    ns["replicas"] = 5  # not what was planned
    with pytest.raises(ApprovalError, match="parameters differ"):
        opsbook.start("highrisk", ns)
    ns["replicas"] = 2
    monkeypatch.setenv(notebook.ENV_APPROVED_PLAN, "20990101T000000Z-abcdef")
    with pytest.raises(ApprovalError, match="no such plan record"):
        opsbook.start("highrisk", ns)


def test_interactive_plan_of_a_high_risk_runbook_needs_nothing(ns, monkeypatch):
    monkeypatch.delenv(notebook.ENV_APPROVED_PLAN, raising=False)
    run = opsbook.start("highrisk", ns)
    assert run.mode == "plan" and run.approved_plan is None
