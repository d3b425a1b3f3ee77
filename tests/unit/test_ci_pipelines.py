"""The ready-to-copy CI pipelines (ci/github, ci/gitlab): they parse, plan on PR/MR, gate apply behind
an approval, keep the record as an artifact, use only opsbook flags that exist, and their shell
snippets do what the next job relies on. The last test runs the GitHub plan -> approve -> apply
command lines for real against a high-risk fixture runbook."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from opsbook.cli import _parser

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, ROOT

GH_FILE = ROOT / "ci" / "github" / "opsbook-runbook.yml"
GL_FILE = ROOT / "ci" / "gitlab" / "opsbook-runbook.gitlab-ci.yml"
BIN = str(Path(sys.executable).parent)  # python and opsbook of this venv


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def opsbook_commands(script: str) -> list[list[str]]:
    return [shlex.split(line) for line in script.splitlines() if line.strip().startswith("opsbook ")]


def parse(argv: list[str]) -> Any:
    """Parse an opsbook command line with the real argparse parser: an unknown flag fails the test."""
    assert argv[0] == "opsbook"
    try:
        return _parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"opsbook rejects the pipeline's command line: {shlex.join(argv)}")


def step(job: dict[str, Any], **match: str) -> tuple[int, dict[str, Any]]:
    for i, s in enumerate(job["steps"]):
        if all(str(s.get(k, "")).startswith(v) for k, v in match.items()):
            return i, s
    raise AssertionError(f"no step matching {match}")


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI"))}
    full.update({"PATH": BIN + os.pathsep + os.environ["PATH"], **env})
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300)


# -- GitHub Actions -------------------------------------------------------------------------------------

def test_github_triggers_and_inputs():
    wf = load(GH_FILE)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(on) == {"pull_request", "workflow_dispatch"}
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"runbook", "target", "parameters", "apply"}
    assert inputs["apply"]["type"] == "boolean" and inputs["apply"]["default"] is False
    assert wf["permissions"] == {"contents": "read"}


def test_github_plan_job_plans_and_uploads_the_record():
    wf = load(GH_FILE)
    plan = wf["jobs"]["plan"]
    assert "environment" not in plan and "if" not in plan  # runs on every pull request
    _, run = step(plan, name="Plan")
    (argv,) = opsbook_commands(run["run"])
    ns = parse(argv)
    assert (ns.verb, ns.runbook, ns.mode, ns.target, ns.ci) == ("run", "$OPSBOOK_RUNBOOK", "plan", "$OPSBOOK_TARGET",
                                                                 "github")
    assert ns.approve is None and ns.output_json == "opsbook-plan.json" and ns.junit == "opsbook-plan-junit.xml"
    assert ns.parameters_file == ["$RUNNER_TEMP/parameters.yaml"]
    # the run id reaches the apply job as a job output, read from --output-json
    assert plan["outputs"]["run_id"] == "${{ steps.result.outputs.run_id }}"
    i_result, result = step(plan, id="result")
    assert result["if"] == "always()" and "opsbook-plan.json" in result["run"]
    i_up, up = step(plan, uses="actions/upload-artifact@")
    assert up["if"] == "always()" and i_up > i_result  # the record is kept when the plan fails, too
    paths = up["with"]["path"].splitlines()
    assert paths == ["${{ env.OPSBOOK_OUTPUTS }}", "opsbook-plan.json", "opsbook-plan-junit.xml"]
    assert up["with"]["name"] == "opsbook-plan-record"


def test_github_apply_job_is_gated_and_approves_the_plan():
    wf = load(GH_FILE)
    plan, apply = wf["jobs"]["plan"], wf["jobs"]["apply"]
    assert apply["needs"] == "plan"
    assert apply["if"] == "github.event_name == 'workflow_dispatch' && inputs.apply"  # never from a PR
    assert apply["environment"] == {"name": "opsbook-apply"}  # required reviewers are the approval
    i_dl, dl = step(apply, uses="actions/download-artifact@")
    assert dl["with"]["name"] == step(plan, uses="actions/upload-artifact@")[1]["with"]["name"]
    i_apply, run = step(apply, name="Apply")
    assert i_dl < i_apply  # the plan's archive is there before --approve checks it
    assert run["env"]["PLAN_RUN_ID"] == "${{ needs.plan.outputs.run_id }}"
    (argv,) = opsbook_commands(run["run"])
    ns = parse(argv)
    assert (ns.mode, ns.approve, ns.ci) == ("apply", "$PLAN_RUN_ID", "github")
    # the same runbook, target and parameters as the plan, or --approve refuses
    (plan_argv,) = opsbook_commands(step(plan, name="Plan")[1]["run"])
    pns = parse(plan_argv)
    assert (ns.runbook, ns.target, ns.parameters_file) == (pns.runbook, pns.target, pns.parameters_file)
    _, up = step(apply, uses="actions/upload-artifact@")
    assert up["if"] == "always()" and "${{ env.OPSBOOK_OUTPUTS }}" in up["with"]["path"].splitlines()


def test_github_secrets_only_as_step_env_and_no_expression_in_scripts():
    wf = load(GH_FILE)
    text = GH_FILE.read_text()
    assert "secrets." not in yaml.safe_dump(wf.get("env", {}))  # not visible to every action
    for name, job in wf["jobs"].items():
        for s in job["steps"]:
            # ${{ }} in a script is a script-injection hole (inputs are attacker-controlled on PRs)
            assert "${{" not in s.get("run", ""), f"{name}: {s.get('name')}"
            for key, value in (s.get("env") or {}).items():
                if "secrets." in str(value):
                    assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", value), key
                    assert "opsbook run" in s["run"], "secrets only for the step that runs opsbook"
    assert "hooks.slack.com" not in text and "https://" not in text


def test_github_snippets_write_the_parameters_and_the_run_id(tmp_path):
    wf = load(GH_FILE)
    plan = wf["jobs"]["plan"]
    _, params = step(plan, name="Write the parameters")
    r = bash(params["run"], tmp_path, {"OPSBOOK_PARAMETERS": "{namespace: team-a, replicas: 3}",
                                       "RUNNER_TEMP": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "parameters.yaml").read_text()) == {"namespace": "team-a", "replicas": 3}
    _, result = step(plan, id="result")
    out = tmp_path / "github_output"
    out.write_text("")
    r = bash(result["run"], tmp_path, {"GITHUB_OUTPUT": str(out)})
    assert r.returncode == 1 and "::error::opsbook wrote no opsbook-plan.json" in r.stdout
    (tmp_path / "opsbook-plan.json").write_text(json.dumps({"run_id": "20261201T120000Z-abc123",
                                                            "status": "succeeded"}))
    r = bash(result["run"], tmp_path, {"GITHUB_OUTPUT": str(out)})
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "run_id=20261201T120000Z-abc123\nstatus=succeeded\n"


# -- GitLab CI ------------------------------------------------------------------------------------------

def test_gitlab_plan_on_merge_requests_with_artifacts_and_junit():
    ci = load(GL_FILE)
    assert ci["stages"] == ["plan", "apply"]
    plan = ci["opsbook-plan"]
    assert {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'} in plan["rules"]
    (argv,) = [c for line in plan["script"] for c in opsbook_commands(line)]
    ns = parse(argv)
    assert (ns.mode, ns.ci, ns.approve) == ("plan", "gitlab", None)
    assert ns.output_json == "opsbook-plan.json"
    art = plan["artifacts"]
    assert art["when"] == "always" and art["reports"]["junit"] == ns.junit
    assert ci["variables"]["OPSBOOK_OUTPUTS"] + "/" in art["paths"] and ns.output_json in art["paths"]


def test_gitlab_apply_is_manual_protected_and_approves_the_plan(tmp_path):
    ci = load(GL_FILE)
    plan, apply = ci["opsbook-plan"], ci["opsbook-apply"]
    assert apply["stage"] == "apply"
    assert apply["needs"] == [{"job": "opsbook-plan", "artifacts": True}]
    rules = apply["rules"]
    assert rules[0] == {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "never"}
    assert all(r["when"] in ("manual", "never") for r in rules)
    assert {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual", "allow_failure": False} in rules
    assert apply["environment"]["name"] == "opsbook-apply"
    read_id, run_line = apply["script"]
    (argv,) = opsbook_commands(run_line)
    ns = parse(argv)
    (plan_argv,) = [c for line in plan["script"] for c in opsbook_commands(line)]
    pns = parse(plan_argv)
    assert (ns.mode, ns.approve, ns.ci) == ("apply", "$PLAN_RUN_ID", "gitlab")
    assert (ns.runbook, ns.target, ns.parameters_file) == (pns.runbook, pns.target, pns.parameters_file)
    assert apply["artifacts"]["reports"]["junit"] == ns.junit and apply["artifacts"]["when"] == "always"
    # the run id comes from the file the plan job wrote with --output-json
    (tmp_path / pns.output_json).write_text(json.dumps({"run_id": "20261201T120000Z-abc123"}))
    r = bash(read_id + '\necho "id=$PLAN_RUN_ID"', tmp_path, {})
    assert r.returncode == 0 and r.stdout.strip() == "id=20261201T120000Z-abc123", r.stderr


def test_gitlab_before_script_writes_the_parameters(tmp_path):
    ci = load(GL_FILE)
    script = "\n".join(ci[".opsbook"]["before_script"][1:])  # not the pip install
    r = bash(script, tmp_path, {"OPSBOOK_PARAMETERS": "namespace: team-b\n"})
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "parameters.yaml").read_text()) == {"namespace": "team-b"}
    assert "hooks.slack.com" not in GL_FILE.read_text()


# -- the GitHub command lines, run for real -------------------------------------------------------------

@pytest.mark.slow
def test_github_plan_then_approved_apply_for_real(tmp_path):
    """The plan job's scripts, then the apply job's, in order, against a high-risk fixture runbook
    (whose apply is refused without --approve of a matching plan)."""
    wf = load(GH_FILE)
    plan, apply = wf["jobs"]["plan"], wf["jobs"]["apply"]
    out, summary = tmp_path / "github_output", tmp_path / "summary.md"
    out.write_text("")
    env = {"OPSBOOK_RUNBOOK": "highrisk", "OPSBOOK_TARGET": "local", "OPSBOOK_PARAMETERS": "{replicas: 4}",
           "OPSBOOK_OUTPUTS": "opsbook-records", "OPSBOOK_NOTEBOOKS": str(FIXTURE_NOTEBOOKS),
           "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, "RUNNER_TEMP": str(tmp_path), "GITHUB_ACTIONS": "true",
           "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary), "OPSBOOK_OPERATOR": "ci-bot"}
    for name in ("Write the parameters", "Plan", "Read the plan's run id"):
        r = bash(step(plan, name=name)[1]["run"], tmp_path, env)
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["status"] == "succeeded"
    env["PLAN_RUN_ID"] = outputs["run_id"]
    r = bash(step(apply, name="Apply")[1]["run"], tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"approved plan {outputs['run_id']}" in r.stdout and "::group::" in r.stdout
    applied = json.loads((tmp_path / "opsbook-apply.json").read_text())
    assert applied["status"] == "succeeded" and applied["approved_plan"] == outputs["run_id"]
    assert Path(applied["record"]).is_relative_to(tmp_path / "opsbook-records")
    # a plan id that the archive does not hold is refused (exit 2), and nothing is applied
    env["PLAN_RUN_ID"] = "20990101T000000Z-abcdef"
    r = bash(step(apply, name="Apply")[1]["run"], tmp_path, env)
    assert r.returncode == 2 and "no such plan record" in r.stderr
    assert summary.read_text().count("### ✓ opsbook: highrisk succeeded") == 2
