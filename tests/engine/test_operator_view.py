"""What an operator sees in the terminal during and after `opsbook run` (issue 16, section 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from opsbook.runview import RunView, headlines, step_line
from rich.console import Console

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK


def _manifest(outputs: Path, runbook: str) -> dict:
    (rec,) = [p for p in (outputs / runbook).iterdir() if p.is_dir()]
    return json.loads((rec / "manifest.json").read_text())


def test_each_step_is_shown_as_it_finishes_with_outcome_and_seconds(cli, outputs):
    r = cli("run", "passing", "-p", "replicas", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    # like a test runner: one line per finished step, outcome and seconds first
    step_lines = [ln for ln in lines if ln.startswith("  ") and " s  " in ln]
    assert [ln.split()[0] for ln in step_lines] == ["ok", "planned", "ok"], r.stderr
    assert any("Compute: 3 replicas" in ln for ln in step_lines)
    # the step's heading, not a cut line of code
    assert "[4/8] Passing fixture" in r.stderr and "opsbook.start(" not in r.stderr
    # after the run: the status with the tally of outcomes and the record
    assert "succeeded run " in r.stdout and "(3 steps: 2 ok, 1 planned)" in r.stdout


def test_quiet_keeps_only_the_status_and_headline(cli, outputs):
    r = cli("run", "passing", "--quiet")
    assert r.returncode == 0
    assert "Compute" not in r.stderr + r.stdout
    assert "succeeded run " in r.stdout


def test_a_step_with_a_headline_is_the_runs_headline():
    manifest = {"steps": [{"title": "Judge the canary", "outcome": "ok", "seconds": 0.7,
                           "summary": "ROLLBACK at interval 2", "headline": "ROLLBACK: latency +19.3%"},
                          {"title": "Decide", "outcome": "ok", "seconds": 0.0, "summary": "would roll back"}]}
    assert headlines(manifest) == ["ROLLBACK: latency +19.3%"]
    con = Console(width=80, record=True, force_terminal=False)
    RunView(con, quiet=True, live=False).report(status="succeeded", run_id="20261204T000000Z-abcdef",
                                                manifest=manifest, record="/x")
    text = con.export_text()
    assert "ROLLBACK: latency +19.3%" in text and "succeeded run 20261204T000000Z-abcdef" in text
    # a step's text cannot drive the terminal or inject markup
    line = step_line({"title": "[bold]x\x1b[2J", "outcome": "ok", "seconds": 1, "summary": "a\rb"})
    assert "\x1b" not in line and "\r" not in line and "\\[bold]" in line


def test_without_streamed_steps_the_report_shows_the_step_table_at_80_columns():
    manifest = {"steps": [{"title": "initial-kubernetes-deployment-very-long-step-title", "outcome": "failed",
                           "seconds": 1.5, "summary": "helm upgrade failed: " + "x" * 150}]}
    con = Console(width=80, record=True, force_terminal=False)
    RunView(con, live=False).report(status="failed", run_id="20261204T000000Z-abcdef", manifest=manifest,
                                    record="/x", error="RunFailed: 1 step failed")
    text = con.export_text()
    lines = text.splitlines()
    a, b = lines[0].index("step"), lines[0].index("summary")
    table_rows = lines[1: lines.index(next(ln for ln in lines if ln.startswith("▶")))]
    # the step title wraps inside its column; never cut with an ellipsis
    assert "".join(ln[a:b].strip() for ln in table_rows) == "initial-kubernetes-deployment-very-long-step-title"
    assert "…" not in text
    assert "▶ 1 failed: initial-kubernetes-deployment-very-long-step-title" in text  # derived headline
    assert "failed run 20261204T000000Z-abcdef" in text  # the id whole
    assert all(len(ln) <= 80 for ln in text.splitlines())


def test_ctrl_c_during_kernel_start_says_interrupting_at_once_and_stops_soon(outputs):
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET}
    proc = subprocess.Popen([*OPSBOOK, "run", "sleeper", "-p", "seconds", "60", "--notebooks", str(FIXTURE_NOTEBOOKS),
                             "--outputs", str(outputs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "starting the kernel" in proc.stderr.readline():
            break
    time.sleep(0.3)  # the kernel is starting
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "interrupting…" in err
    assert elapsed < 8.0, f"took {elapsed:.1f} s to stop"  # was 11-13 s: a hang to the operator
    m = _manifest(outputs, "sleeper")
    assert m["status"] == "aborted" and m["error"] == "interrupted (Ctrl-C)"  # never "interrupted ()"
    assert "error: interrupted (Ctrl-C)" in out
    # the record has its page too: a Ctrl-C inside an import used to leave the HTML warm-up thread
    # waiting for ever on the import lock (1 run in 6), and the run with it
    (rec,) = [p for p in (outputs / "sleeper").iterdir() if p.is_dir()]
    assert (rec / "notebook.html").is_file() and not (rec / "html-error.txt").exists()


def test_a_run_without_a_headline_says_what_failed_changed_or_would_change():
    from opsbook.runview import derived_headline

    step = {"kind": "change", "seconds": 0.1, "summary": ""}
    assert derived_headline({"steps": [{**step, "title": "Install", "outcome": "planned"},
                                       {**step, "title": "Scale", "outcome": "planned"}]}) == \
        "would change: Install, Scale"
    assert derived_headline({"steps": [{**step, "title": "Install", "outcome": "changed"},
                                       {**step, "kind": "check", "title": "Pods Ready", "outcome": "failed"}]}) == \
        "1 failed: Pods Ready"
    assert derived_headline({"steps": [{**step, "kind": "check", "title": "A", "outcome": "ok"}]}) == \
        "nothing to change; 1 check(s) passed"


def _archive_with_incident_runs(outputs: Path, n: int = 2) -> None:
    import tempfile

    from opsbook.ids import new_run_id
    from opsbook.records.disk import Archive

    archive = Archive(outputs)
    for i in range(n):
        run_id = new_run_id()
        manifest = {"run_id": run_id, "runbook_id": "security-incident-response", "mode": "plan",
                    "status": "succeeded", "operator": "a-very-long-operator-name@example.com",
                    "started": f"2026-12-04T10:0{i}:00Z", "ended": f"2026-12-04T10:0{i}:30Z",
                    "parameters": {"incident_id": "INC-42", "phases": ["triage", "contain", "recover"]}}
        with tempfile.TemporaryDirectory() as empty:
            archive.record(runbook_id="security-incident-response", run_id=run_id, source_dir=Path(empty),
                           manifest=manifest)


def _terminal_lines(shown: str) -> list[str]:
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", shown)
    return [ln.split("\r")[-1] for ln in plain.replace("\r\n", "\n").split("\n")]


def test_ids_and_statuses_are_never_cut_at_80_or_100_columns(outputs):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    _archive_with_incident_runs(outputs)
    ids = [p.name for p in (outputs / "security-incident-response").iterdir()]
    for width in ("80", "100"):
        tty_env = {**env, "COLUMNS": width, "LINES": "50", "TERM": "xterm"}
        shown = _run_in_pty([*OPSBOOK, "list", "--notebooks", str(FIXTURE_NOTEBOOKS)], tty_env)
        lines = _terminal_lines(shown)
        assert "…" not in shown and any("highrisk" in ln for ln in lines), shown
        assert all(len(ln) <= int(width) for ln in lines)
        for argv in (["history", "--outputs", str(outputs)], ["incident", "INC-42", "--outputs", str(outputs)]):
            shown = _run_in_pty([*OPSBOOK, *argv], tty_env)  # a real terminal of that width
            lines = _terminal_lines(shown)
            text = "\n".join(lines)
            assert "…" not in text, text
            assert all(run_id in text for run_id in ids), text
            assert "security-incident-response" in text and "succeeded" in text
            assert all(len(ln) <= int(width) for ln in lines), text


def _run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run ``argv`` on a real pseudo-terminal (what an operator's terminal is) and return what it
    showed, escape sequences included."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other side closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_run_on_an_80_column_terminal_shows_steps_headline_and_whole_ids(outputs):
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    env.update({"OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, "COLUMNS": "80", "LINES": "40", "TERM": "xterm-256color"})
    shown = _run_in_pty([*OPSBOOK, "run", "passing", "-p", "replicas", "3", "--notebooks", str(FIXTURE_NOTEBOOKS),
                         "--outputs", str(outputs)], env)
    # what the terminal ends up showing, line by line: drop colour and cursor sequences, keep the
    # text after the last carriage return of each line (the live bar redraws itself in place)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", shown)
    lines = [ln.split("\r")[-1] for ln in plain.replace("\r\n", "\n").split("\n")]
    run_id = _manifest(outputs, "passing")["run_id"]
    assert any(ln.startswith("succeeded run " + run_id) for ln in lines), plain
    assert any(ln.split()[:1] == ["planned"] and "Scale: would scale" in ln for ln in lines), plain
    assert any(ln.startswith("▶ would change: Scale") for ln in lines), plain  # the derived headline
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    assert "opsbook.start(" not in plain  # step headings, not cut code
