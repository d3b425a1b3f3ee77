"""opsbook.cireport: CI formats, escaping, job summary, JUnit and the run-result JSON (no run needed)."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from opsbook import cireport
from opsbook.errors import UsageError
from opsbook.runner import RunOutcome


def manifest(**over: Any) -> dict[str, Any]:
    m = {
        "run_id": "20261201T120000Z-abc123", "runbook_id": "deploy", "runbook_version": "1.2.0",
        "runbook_title": "Deploy", "mode": "plan", "target": "staging", "status": "failed",
        "started": "2026-12-01T12:00:00Z", "ended": "2026-12-01T12:01:00Z", "duration_seconds": 60.0,
        "operator": "alice", "approval": None, "evidence_dropped": None,
        "failed_cell": {"index": 7, "code_cell": 5, "ename": "RunFailed", "evalue": "FAILED: 2 step(s) failed",
                        "source": "run.summary()\n# more"},
        "error": "RunFailed: FAILED: 2 step(s) failed",
        "steps": [
            {"kind": "preflight", "title": "Preflight", "outcome": "failed", "seconds": 0.2,
             "summary": "1 of 2 prerequisites failed", "details": {"checks": []},
             "rows": [{"prerequisite": "helm on PATH", "status": "pass", "reason": "helm 3.17"},
                      {"prerequisite": "cluster reachable", "status": "FAIL", "reason": "connection refused"}]},
            {"kind": "step", "title": "Render values", "outcome": "ok", "seconds": 0.1, "summary": "3 keys",
             "details": {"keys": 3}, "rows": [{"key": "replicas", "value": 3}]},
            {"kind": "change", "title": "Install", "outcome": "planned", "seconds": 1.5, "summary": "would install",
             "details": {}, "rows": None},
            {"kind": "check", "title": "Pods: Ready, all", "outcome": "failed", "seconds": 0.0,
             "summary": "2 of 3 ready\nweb-2 CrashLoopBackOff 100%", "details": {}, "rows": None},
            {"kind": "step", "title": "Optional", "outcome": "skipped", "seconds": 0.0, "summary": "not needed",
             "details": {}, "rows": None},
        ],
    }
    m.update(over)
    return m


def outcome(m: dict[str, Any] | None = None, **over: Any) -> RunOutcome:
    m = manifest() if m is None else m
    kw: dict[str, Any] = {"run_id": "20261201T120000Z-abc123", "runbook_id": "deploy",
                          "record_dir": Path("/archive/deploy/20261201T120000Z-abc123"), "status": m["status"],
                          "failed_cell": m.get("failed_cell"), "error": m.get("error"), "manifest": m}
    kw.update(over)
    return RunOutcome(**kw)


def render(fmt: str, m: dict[str, Any] | None = None, env: dict[str, str] | None = None,
           progress: bool = True) -> str:
    m = manifest() if m is None else m
    buf = io.StringIO()
    rep = cireport.make(fmt, buf, env=env or {}, clock=lambda: 1764590400.0)
    rep.banner(runbook="deploy", version="1.2.0", mode="plan", target="staging")
    if progress:
        for i, label in enumerate(["(markdown) Deploy", "(parameter defaults)", "run.step(...)"]):
            rep.progress("start", i, 3, label)
            rep.progress("complete", i, 3, label)
    rep.end_progress()
    rep.report(cireport.run_result(outcome(m)), m)
    return buf.getvalue()


# -- choosing the format --------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,env,expected", [
    ("auto", {"GITHUB_ACTIONS": "true"}, "github"),
    ("auto", {"GITLAB_CI": "true"}, "gitlab"),
    ("auto", {}, "plain"),
    ("gitlab", {"GITHUB_ACTIONS": "true"}, "gitlab"),  # an explicit value wins over detection
    (None, {}, None),                                  # not asked for: terminal output
    (None, {"OPSBOOK_CI": "github"}, "github"),
    (None, {"OPSBOOK_CI": "1", "GITLAB_CI": "true"}, "gitlab"),
    (None, {"OPSBOOK_CI": "0", "GITHUB_ACTIONS": "true"}, None),
    (None, {"GITHUB_ACTIONS": "true"}, None),          # CI alone does not switch formats
])
def test_choose(flag, env, expected):
    assert cireport.choose(flag, env) == expected


def test_choose_rejects_an_unknown_env_value():
    with pytest.raises(UsageError, match="OPSBOOK_CI='jenkins'"):
        cireport.choose(None, {"OPSBOOK_CI": "jenkins"})


def test_job_url():
    gh = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.example", "GITHUB_REPOSITORY": "o/r",
          "GITHUB_RUN_ID": "42"}
    assert cireport.job_url(gh) == "https://github.example/o/r/actions/runs/42"
    assert cireport.job_url({"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/j/7"}) == "https://gl/j/7"
    assert cireport.job_url({}) is None


# -- escaping -------------------------------------------------------------------------------------------

def test_escaping_follows_the_runner_rules():
    assert cireport.escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert cireport.escape_property("a: b, 5%\n") == "a%3A b%2C 5%25%0A"
    # % first, so that an escape is not escaped twice
    assert cireport.escape_data("%0A") == "%250A"


# -- GitHub ---------------------------------------------------------------------------------------------

def test_github_groups_annotations_and_no_progress_bar():
    text = render("github")
    lines = text.splitlines()
    assert lines[0] == "opsbook run deploy v1.2.0: mode plan, target staging"
    # one group for the cells (markdown cells are not listed), then one group per step
    groups = [ln for ln in lines if ln.startswith("::group::")]
    assert groups[0] == "::group::Executing deploy (3 cells)"
    assert len(groups) == 1 + 5
    assert lines.count("::endgroup::") == len(groups)
    assert "[3/3] run.step(...)" in lines and not any("(markdown)" in ln or "(parameter" in ln for ln in lines)
    assert "::group::✗ check: Pods: Ready, all: failed (0.0 s)" in lines
    errors = [ln for ln in lines if ln.startswith("::error ")]
    assert errors == [
        "::error title=Check failed%3A Preflight%3A cluster reachable::connection refused "
        "(deploy run 20261201T120000Z-abc123)",
        "::error title=Check failed%3A Pods%3A Ready%2C all::2 of 3 ready%0Aweb-2 CrashLoopBackOff 100%25 "
        "(deploy run 20261201T120000Z-abc123)",
        "::error title=opsbook run failed::deploy failed at code cell 5 (run.summary()): RunFailed: FAILED: 2 "
        "step(s) failed%0Arun 20261201T120000Z-abc123, record /archive/deploy/20261201T120000Z-abc123",
    ]
    assert "failed run 20261201T120000Z-abc123" in lines
    assert "  record: /archive/deploy/20261201T120000Z-abc123" in lines
    assert "\r" not in text and "━" not in text  # no carriage-return redraws, no bar


def test_github_record_text_cannot_issue_workflow_commands():
    m = manifest(steps=[{"kind": "step", "title": "Echo", "outcome": "ok", "seconds": 0, "details": {},
                         "summary": "::add-mask::x\n::set-env name=A::b", "rows": None}], status="succeeded",
                 failed_cell=None, error=None)
    lines = render("github", m, progress=False).splitlines()
    i = lines.index("::add-mask::x")
    start, end = lines[i - 1], lines[i + 2]
    token = start.removeprefix("::stop-commands::")
    assert start.startswith("::stop-commands::") and len(token) >= 16 and end == f"::{token}::"
    assert lines[i + 1] == "::set-env name=A::b"
    assert not [ln for ln in lines if ln.startswith("::error")]  # a succeeded run has no error annotation


def test_github_step_summary_is_appended(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    render("github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    md = summary.read_text()
    assert md.startswith("earlier step\n### ✗ opsbook: deploy failed")
    assert "| Target | staging |" in md and "| Mode | plan |" in md and "| Status | failed |" in md
    assert "| Record | `/archive/deploy/20261201T120000Z-abc123` |" in md
    assert "| Checks | 1 of 3 passed |" in md  # preflight: 1 of 2, the check: 0 of 1
    # a table cell holds one line with its pipes escaped
    assert "| ✗ | check | Pods: Ready, all | failed | 0.0 | 2 of 3 ready web-2 CrashLoopBackOff 100% |" in md
    assert "- **Preflight: cluster reachable**: connection refused" in md


def test_too_many_failures_are_capped_keeping_the_run_error():
    steps = [{"kind": "check", "title": f"c{i}", "outcome": "failed", "seconds": 0, "summary": "no",
              "details": {}, "rows": None} for i in range(25)]
    lines = render("github", manifest(steps=steps), progress=False).splitlines()
    errors = [ln for ln in lines if ln.startswith("::error ")]
    assert len(errors) == cireport.MAX_ANNOTATIONS
    assert errors[-1].startswith("::error title=opsbook run failed::")
    assert "::error title=More failures::17 more failed check(s)/step(s)" in errors[-2]


# -- GitLab and plain -----------------------------------------------------------------------------------

def test_gitlab_sections_collapsed_unless_failed_and_red_errors():
    text = render("gitlab")
    starts = re.findall(r"\x1b\[0Ksection_start:(\d+):([A-Za-z0-9_.-]+)(\[collapsed=true\])?\r\x1b\[0K(.*)", text)
    ends = re.findall(r"\x1b\[0Ksection_end:(\d+):([A-Za-z0-9_.-]+)\r\x1b\[0K", text)
    assert [s[1] for s in starts] == ["opsbook_cells"] + [f"opsbook_step_{i}" for i in range(1, 6)]
    assert [e[1] for e in ends] == [s[1] for s in starts]
    assert all(s[0] == "1764590400" for s in starts)
    collapsed = {name: bool(flag) for _, name, flag, _ in starts}
    assert collapsed == {"opsbook_cells": True, "opsbook_step_1": False, "opsbook_step_2": True,
                         "opsbook_step_3": True, "opsbook_step_4": False, "opsbook_step_5": True}
    header = dict((name, h) for _, name, _, h in starts)
    assert header["opsbook_step_4"].startswith("\x1b[31;1m✗ check: Pods: Ready, all")
    assert "\x1b[31;1mERROR: Check failed: Pods: Ready, all: 2 of 3 ready\x1b[0m" in text
    assert "\x1b[31;1mERROR: opsbook run failed: deploy failed at code cell 5" in text
    assert "\x1b[31;1mfailed run 20261201T120000Z-abc123\x1b[0m" in text
    assert "::" not in text.replace("Pods: Ready", "")  # no GitHub commands leak into GitLab


def test_gitlab_record_text_cannot_fake_a_section():
    evil = "\x1b[0Ksection_end:1:opsbook_step_1\r\x1b[0K"
    m = manifest(steps=[{"kind": "step", "title": "x", "outcome": "ok", "seconds": 0, "details": {},
                         "summary": evil, "rows": None}])
    text = render("gitlab", m, progress=False)
    assert text.count("section_end:") == 2  # the step's own, plus the fake one as inert text
    assert "\x1b[0Ksection_end:1:" not in text


def test_plain_format():
    text = render("plain")
    assert "== Executing deploy (3 cells)" in text
    assert "ERROR: Check failed: Preflight: cluster reachable: connection refused" in text
    assert "\x1b" not in text and "::group::" not in text
    assert "| key" not in text and "key       value" in text  # the step's table, as text


def test_quiet_drops_progress_lines_only():
    buf = io.StringIO()
    rep = cireport.make("github", buf, env={}, quiet=True)
    rep.progress("start", 1, 3, "x = 1")
    rep.end_progress()
    assert buf.getvalue() == ""


def test_warnings_in_each_format():
    assert cireport.make("github", io.StringIO()).format_warning("a\nb 5%") == "::warning::a%0Ab 5%25"
    assert cireport.make("gitlab", io.StringIO()).format_warning("w") == "\x1b[33;1mWARNING: w\x1b[0m"
    assert cireport.make("plain", io.StringIO()).format_warning("w\x1b[2J") == "WARNING: w[2J"


def test_dropped_evidence_and_succeeded_with_note_are_warnings():
    m = manifest(status="succeeded", failed_cell=None, error=None, steps=[], evidence_dropped=["raw/blob.bin"])
    text = render("github", m, progress=False)
    assert "::warning::evidence file(s) dropped because they held a secret: raw/blob.bin" in text
    assert "::error" not in text


# -- files ----------------------------------------------------------------------------------------------

def test_run_result_and_output_json(tmp_path):
    res = cireport.run_result(outcome())
    assert res["schema"] == cireport.RESULT_SCHEMA
    assert (res["run_id"], res["status"], res["exit_code"]) == ("20261201T120000Z-abc123", "failed", 1)
    assert res["record"] == "/archive/deploy/20261201T120000Z-abc123"
    assert res["failed_cell"]["source"] == "run.summary()"  # the first line only
    assert res["failing_step"]["title"] == "Preflight"
    assert res["checks"] == {"total": 3, "passed": 1, "failed": 2}
    out = tmp_path / "sub" / "run.json"
    assert cireport.write_files(res, manifest(), output_json=str(out)) == []
    assert json.loads(out.read_text()) == res
    assert not list(out.parent.glob(".*tmp"))


def test_write_files_reports_instead_of_raising(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    problems = cireport.write_files(cireport.run_result(outcome()), manifest(), junit=str(blocker / "j.xml"))
    assert len(problems) == 1 and problems[0].startswith(f"--junit {blocker / 'j.xml'}: not written")


def test_junit_cases_failures_and_skips(tmp_path):
    m = manifest()
    m["steps"][1]["summary"] = "bad \x07 byte & <tag>"
    path = tmp_path / "j.xml"
    cireport.write_files(cireport.run_result(outcome(m)), m, junit=str(path))
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "opsbook.deploy"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["preflight: helm on PATH", "preflight: cluster reachable", "step: Render values",
                           "change: Install", "check: Pods: Ready, all", "step: Optional", "run: deploy"]
    assert cases["preflight: helm on PATH"].find("failure") is None
    assert cases["preflight: cluster reachable"].find("failure").get("message") == "connection refused"
    assert cases["check: Pods: Ready, all"].find("failure").get("type") == "check"
    assert cases["step: Optional"].find("skipped") is not None
    assert "bad  byte & <tag>" in cases["step: Render values"].find("system-out").text
    run = cases["run: deploy"].find("failure")
    assert run.get("type") == "failed" and "record: /archive/deploy/" in run.text
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("7", "3", "1")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["run_id"] == "20261201T120000Z-abc123" and props["mode"] == "plan"


def test_junit_of_a_succeeded_run_has_a_passing_run_case():
    m = manifest(status="succeeded", failed_cell=None, error=None, steps=[])
    root = ET.fromstring(cireport.junit_xml(cireport.run_result(outcome(m)), m))
    (case,) = root.iter("testcase")
    assert case.get("name") == "run: deploy" and case.find("failure") is None
    assert root.get("failures") == "0"


def test_bare_ci_before_the_runbook_id_does_not_swallow_it() -> None:
    from opsbook.cli import _bare_ci, _parser

    args = _parser().parse_args(_bare_ci(["run", "--ci", "environment-check", "--mode", "plan"]))
    assert (args.runbook, args.ci) == ("environment-check", "auto")
    args = _parser().parse_args(_bare_ci(["run", "--ci", "gitlab", "environment-check"]))
    assert (args.runbook, args.ci) == ("environment-check", "gitlab")
    args = _parser().parse_args(_bare_ci(["run", "environment-check", "--ci"]))
    assert args.ci == "auto"


def test_the_headline_is_in_the_log_the_json_and_the_job_summary():
    m = manifest()
    m["steps"][2]["headline"] = "ROLLBACK: latency +19.3% (bounds +12.0% .. +27.1%)"
    result = cireport.run_result(outcome(m))
    assert result["headline"] == ["ROLLBACK: latency +19.3% (bounds +12.0% .. +27.1%)"]
    assert "headline: ROLLBACK: latency +19.3%" in render("plain", m)
    assert "| Headline | **ROLLBACK: latency +19.3%" in cireport.step_summary_markdown(result, m)
    # without a step's headline: what failed (else what changed or would change)
    assert cireport.run_result(outcome())["headline"] == ["2 failed: Preflight, Pods: Ready, all"]


def test_long_text_is_cut_at_a_word_in_tables_and_the_job_summary():
    long = "pods web-0 web-1 web-2 are not Ready because the image registry.example.com/ml/proposer:2 " * 4
    cell = cireport._md(long, 60)
    assert cell.endswith("…") and len(cell) <= 60
    assert all(w in long.split() for w in cell[:-1].split())  # whole words only
    assert cireport._md("a|b <i>", 60) == "a\\|b &lt;i&gt;"  # escaped after the cut: never half an escape
    (row,) = cireport._table([{"summary": long}])[2:]
    assert row.endswith("…") and all(w in long.split() for w in row[:-1].split())
