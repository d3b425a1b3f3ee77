"""End to end through the real `opsbook` CLI: runs, records, exit codes, secrets, signals, approval."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK, ROOT


def records(outputs: Path, runbook: str) -> list[Path]:
    d = outputs / runbook
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.exists() else []


def manifest(outputs: Path, runbook: str) -> dict:
    (rec,) = records(outputs, runbook)
    return json.loads((rec / "manifest.json").read_text())


def test_passing_run_leaves_a_complete_record(cli, outputs):
    r = cli("run", "passing", "-p", "replicas", "3")
    assert r.returncode == 0, r.stderr
    (rec,) = records(outputs, "passing")
    assert {p.name for p in rec.iterdir()} == {"notebook.ipynb", "notebook.html", "manifest.json"}
    m = json.loads((rec / "manifest.json").read_text())
    assert m["status"] == "succeeded" and m["mode"] == "plan" and m["target"] == "local"
    assert m["parameters"]["replicas"] == 3
    assert m["parameters"]["db_password"] == "env:OPSBOOK_FIXTURE_SECRET"  # the reference, not the value
    assert [(s["title"], s["outcome"]) for s in m["steps"]] == [
        ("Compute", "ok"), ("Scale", "planned"), ("Replicas positive", "ok")]
    assert m["source_sha256"] and m["tools"]["papermill"] and m["run_id"] in r.stdout
    assert set(m["files"]) == {"notebook.ipynb", "notebook.html"}
    nb = json.loads((rec / "notebook.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert "Summary" in (rec / "notebook.html").read_text()
    assert Archive(outputs).verify().ok


def test_params_file_then_p_override(cli, outputs, tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("replicas: 5\nnamespace: team-a\n")
    r = cli("run", "passing", "-f", str(f), "-p", "replicas", "7")
    assert r.returncode == 0, r.stderr
    m = manifest(outputs, "passing")
    assert m["parameters"]["replicas"] == 7 and m["parameters"]["namespace"] == "team-a"


def test_failed_run_names_the_failing_cell(cli, outputs):
    r = cli("run", "failing")
    assert r.returncode == 1
    m = manifest(outputs, "failing")
    assert m["status"] == "failed"
    assert m["failed_cell"]["code_cell"] == 3 and "boom in cell 3" in m["failed_cell"]["source"]
    assert "RuntimeError: boom in cell 3" in m["error"]
    assert "code cell 3" in r.stdout and "boom in cell 3" in r.stdout


def test_failed_verification_check_fails_the_run(cli, outputs):
    r = cli("run", "failcheck")
    assert r.returncode == 1
    m = manifest(outputs, "failcheck")
    assert m["status"] == "failed"
    assert [s["outcome"] for s in m["steps"]] == ["failed"]


@pytest.mark.parametrize("args,needle", [
    (["-p", "replicas", "many"], "replicas: got 'many'; expected an integer"),
    (["-p", "namespce", "x"], "did you mean 'namespace'"),
    (["-p", "namespace", "Not_Valid"], "DNS-1123"),
    (["-p", "db_password", "plain-text-pass"], "never a literal value"),
    (["--target", "nowhere"], "unknown target 'nowhere'"),
])
def test_invalid_input_exits_2_before_any_kernel(cli, outputs, args, needle):
    r = cli("run", "passing", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "plain-text-pass" not in r.stderr
    assert not outputs.exists() or not list(outputs.rglob("manifest.json"))


def test_unknown_runbook_exits_2(cli):
    r = cli("run", "pasing")
    assert r.returncode == 2 and "did you mean 'passing'" in r.stderr


def test_every_problem_on_its_own_line(cli):
    r = cli("run", "passing", "-p", "replicas", "0", "-p", "mode", "destroy", "-p", "bogus", "1")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("  ")]
    assert len(lines) == 3, r.stderr


def _start_and_wait_for_kernel(args, outputs):
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET}
    proc = subprocess.Popen([*OPSBOOK, "run", *args, "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs",
                             str(outputs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:  # wait until the sleeping cell has started
        line = proc.stderr.readline()
        seen += line
        if "Sleeps so that" in line:  # the progress line of the runbook's first code cell (after the kernel start)
            break
    time.sleep(2.5)
    return proc, seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_leaves_an_aborted_record(outputs, sig):
    proc, seen = _start_and_wait_for_kernel(["sleeper", "-p", "seconds", "60"], outputs)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + err
    m = manifest(outputs, "sleeper")
    assert m["status"] == "aborted" and "interrupted" in m["error"]
    assert Archive(outputs).verify().ok


def test_killed_kernel_is_archived_as_failed_with_reason(cli, outputs):
    r = cli("run", "killed")
    assert r.returncode == 1
    m = manifest(outputs, "killed")
    assert m["status"] == "failed" and "kernel died" in m["error"]


def test_cell_timeout_fails_the_run_naming_the_cell(cli, outputs):
    r = cli("run", "sleeper", "-p", "seconds", "30", "--cell-timeout", "2", "--quiet")
    assert r.returncode == 1
    m = manifest(outputs, "sleeper")
    assert m["status"] == "failed" and "CellTimeoutError" in m["error"]
    assert "time.sleep" in m["failed_cell"]["source"]


def test_secret_never_reaches_outputs_nor_terminal(cli, outputs):
    r = cli("run", "leaky")
    assert r.returncode == 1  # the last cell raises with the password in its message
    forms = [FIXTURE_SECRET.encode(), base64.b64encode(FIXTURE_SECRET.encode()).rstrip(b"=")]
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        data = p.read_bytes()
        for form in forms:
            assert form not in data, f"secret found in {p}"
    assert FIXTURE_SECRET not in r.stdout + r.stderr
    nb = (records(outputs, "leaky")[0] / "notebook.ipynb").read_text()
    assert nb.count("[REDACTED]") >= 3  # print, step summary, displayed value, error


def test_evidence_files_are_archived_hashed_and_redacted(cli, outputs):
    r = cli("run", "evidential", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    (rec,) = records(outputs, "evidential")
    m = json.loads((rec / "manifest.json").read_text())
    assert set(m["files"]) == {"notebook.ipynb", "notebook.html", "evidence/pods/web-0.json",
                               "evidence/logs/web-0.log", "evidence/raw/clean.bin"}
    assert m["evidence_dropped"] == ["raw/blob.bin"]  # binary holding the secret: not archived
    assert {e["name"] for e in m["evidence"]} == {"pods/web-0.json", "logs/web-0.log", "raw/clean.bin"}
    pod = json.loads((rec / "evidence/pods/web-0.json").read_text())
    assert pod == {"name": "web-0", "env": {"PASSWORD": "[REDACTED]"}}
    for p in rec.rglob("*"):
        if p.is_file():
            assert FIXTURE_SECRET.encode() not in p.read_bytes(), p
    assert Archive(outputs).verify().ok
    log = rec / "evidence/logs/web-0.log"
    log.chmod(0o644)
    log.write_text("line 1\nnothing to see\n")
    report = Archive(outputs).verify()
    assert not report.ok and any(p.kind == "modified" and "web-0.log" in (p.detail + str(p.file))
                                 for p in report.problems)


def test_high_risk_apply_needs_an_approved_matching_plan(cli, outputs):
    r = cli("run", "highrisk", "--mode", "apply")
    assert r.returncode == 2 and "needs --approve" in r.stderr
    r = cli("run", "highrisk", "-p", "replicas", "4")
    assert r.returncode == 0, r.stderr
    plan_id = manifest(outputs, "highrisk")["run_id"]
    # different parameters: refused
    r = cli("run", "highrisk", "--mode", "apply", "--approve", plan_id, "-p", "replicas", "5")
    assert r.returncode == 2 and "parameters differ" in r.stderr and "replicas" in r.stderr
    # unknown plan: refused
    r = cli("run", "highrisk", "--mode", "apply", "--approve", "20990101T000000Z-abcdef", "-p", "replicas", "4")
    assert r.returncode == 2 and "no such plan record" in r.stderr
    # matching: applied, with the approval recorded
    r = cli("run", "highrisk", "--mode", "apply", "--approve", plan_id, "-p", "replicas", "4",
            env={"OPSBOOK_OPERATOR": "alice"})
    assert r.returncode == 0, r.stderr
    applied = [json.loads((p / "manifest.json").read_text()) for p in records(outputs, "highrisk")]
    (apply_m,) = [m for m in applied if m["mode"] == "apply"]
    assert apply_m["approval"]["plan_run_id"] == plan_id and apply_m["approval"]["approver"] == "alice"
    assert [s["outcome"] for s in apply_m["steps"]] == ["ok", "changed", "ok"]
    # the kernel knew which plan it executed
    (apply_dir,) = [p for p in records(outputs, "highrisk")
                    if json.loads((p / "manifest.json").read_text())["mode"] == "apply"]
    nb = (apply_dir / "notebook.ipynb").read_text()
    assert f"approved plan: {plan_id}" in nb


def test_approval_refuses_a_tampered_or_wrong_plan(cli, outputs):
    assert cli("run", "highrisk").returncode == 0
    plan_id = manifest(outputs, "highrisk")["run_id"]
    nb = records(outputs, "highrisk")[0] / "notebook.ipynb"
    nb.chmod(0o644)
    nb.write_text(nb.read_text().replace("Replicas", "replicas"))
    r = cli("run", "highrisk", "--mode", "apply", "--approve", plan_id)
    assert r.returncode == 2 and "does not verify" in r.stderr
    assert cli("run", "passing").returncode == 0
    other = manifest(outputs, "passing")["run_id"]
    r = cli("run", "highrisk", "--mode", "apply", "--approve", other)
    assert r.returncode == 2 and "runbook 'passing'" in r.stderr
    r = cli("run", "highrisk", "--approve", other)
    assert r.returncode == 2 and "use it with --mode apply" in r.stderr


@pytest.mark.slow
def test_twenty_concurrent_runs_leave_twenty_records_and_a_valid_chain(outputs):
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET}
    procs = [subprocess.Popen([*OPSBOOK, "run", "trivial", "--quiet", "--notebooks", str(FIXTURE_NOTEBOOKS),
                               "--outputs", str(outputs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(20)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    failures = [(out.decode()[-2000:], err.decode()[-6000:])
                for (out, err), code in zip(outs, codes, strict=True) if code != 0]
    assert codes == [0] * 20, failures
    assert len(records(outputs, "trivial")) == 20
    report = Archive(outputs).verify()
    assert report.ok and report.records == 20, report.problems
    lines = (outputs / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(ln)["seq"] for ln in lines] == list(range(1, 21))


def test_verify_cli_detects_tampering_and_truncation(cli, outputs):
    for _ in range(2):
        assert cli("run", "trivial", "--quiet").returncode == 0
    r = cli("verify")
    assert r.returncode == 0 and "chain head:" in r.stdout
    head = r.stdout.split("chain head:")[1].split()[0]
    ledger = outputs / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    # an attacker drops the last record and its ledger line: what is left is a valid chain on its own
    last = outputs / json.loads(lines[-1])["record"]
    subprocess.run(["chmod", "-R", "u+w", str(last)], check=True)
    shutil.rmtree(last)
    ledger.write_text("".join(lines[:-1]))
    assert cli("verify").returncode == 0
    r = cli("verify", "--expect-head", head)
    assert r.returncode == 1 and "truncated" in r.stdout
    rec = records(outputs, "trivial")[0] / "notebook.ipynb"
    rec.chmod(0o644)
    data = bytearray(rec.read_bytes())
    data[100] ^= 1
    rec.write_bytes(bytes(data))
    r = cli("verify")
    assert r.returncode == 1 and "modified" in r.stdout and rec.parent.name in r.stdout


def test_history_filters(cli, outputs):
    r = cli("run", "passing", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("run", "failing", "--quiet")
    assert r.returncode == 1 and "failed run" in r.stdout, r.stdout + r.stderr
    r = cli("history", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["runbook_id"] for x in rows] == ["passing", "failing"]
    r = cli("history", "--json", "--status", "failed")
    assert [json.loads(x)["runbook_id"] for x in r.stdout.splitlines()] == ["failing"]
    r = cli("history", "--json", "--since", "2999-01-01")
    assert r.stdout.strip() == ""
    r = cli("history", "--since", "yesterday")
    assert r.returncode == 2 and "expected YYYY-MM-DD" in r.stderr
    r = cli("history")
    assert r.returncode == 0 and "passing" in r.stdout


def _verbs() -> list[str]:
    import argparse

    from opsbook.cli import _parser

    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


@pytest.mark.parametrize("verb", _verbs())
def test_help_on_every_verb(verb):
    r = subprocess.run([*OPSBOOK, verb, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: opsbook" in r.stdout


def test_help_imports_no_heavy_library():
    code = ("import sys, contextlib, io\nfrom opsbook.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help']) if False else None\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('papermill', 'mlflow', 'kubernetes', 'nbconvert', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_list_and_show(cli, tmp_path):
    r = cli("list")
    assert r.returncode == 0 and "passing" in r.stdout and "high" in r.stdout
    r = cli("show", "passing")
    assert r.returncode == 0 and "db_password" in r.stdout and "secret reference" in r.stdout
    bad = tmp_path / "nb"
    bad.mkdir()
    (bad / "broken.ipynb").write_text("{}")
    r = cli("list", notebooks=bad)
    assert r.returncode == 1 and "invalid" in r.stdout


def test_show_lists_the_rbac_a_runbook_declares(cli):
    """What `--on-cluster` would grant, read from the notebook's metadata: both scopes, every verb."""
    from opsbook import catalog

    rb = catalog.get("centralized-logging", ROOT / "notebooks")
    assert rb.rbac is not None and rb.rbac.rules and rb.rbac.cluster_rules
    r = cli("show", "centralized-logging", notebooks=ROOT / "notebooks", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    table = r.stdout[r.stdout.index("RBAC it needs"):]
    for scope, rules in (("namespace", rb.rbac.rules), ("cluster", rb.rbac.cluster_rules)):
        for rule in rules:
            row = next(line for line in table.splitlines()
                       if f" {scope} " in line and ", ".join(rule.resources) in line)
            assert ", ".join(rule.verbs) in row, row
    r = cli("show", "environment-check", notebooks=ROOT / "notebooks")
    assert "RBAC: none (no Kubernetes API call)" in r.stdout
    r = cli("show", "passing")
    assert "RBAC: not declared (the runbook cannot run --on-cluster)" in r.stdout


def test_show_prints_help_text_that_looks_like_markup(cli, tmp_path):
    import shutil as _sh

    d = tmp_path / "nb"
    d.mkdir()
    src = json.loads((FIXTURE_NOTEBOOKS / "trivial.ipynb").read_text())
    for c in src["cells"]:
        if "parameters" in c["metadata"].get("tags", []):
            c["source"] = "".join(c["source"]) + 'image: str = ""  # DEPLOYMENT[/CONTAINER]=IMAGE [bold]x\n'
    (d / "trivial-copy.ipynb").write_text(json.dumps(src))  # a copy outside the catalogue: its own id
    r = cli("show", "trivial-copy", notebooks=d)
    assert r.returncode == 0, r.stderr
    assert "DEPLOYMENT[/CONTAINER]=IMAGE [bold]x" in r.stdout
    _sh.rmtree(d)


def test_no_verb_prints_help_and_exits_2():
    r = subprocess.run(OPSBOOK, capture_output=True, text=True)
    assert r.returncode == 2 and "usage: opsbook" in r.stdout


def test_top_level_help_fits_80_columns_and_names_the_signing_key():
    r = subprocess.run([*OPSBOOK, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0
    assert [ln for ln in r.stdout.splitlines() if len(ln) > 80] == []
    assert "OPSBOOK_SIGNING_KEY" in r.stdout and "outside the catalogue" in r.stdout
