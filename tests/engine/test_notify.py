"""Notifications against a real HTTP receiver on loopback: the webhook client's retry rules, the Slack
and generic payloads, and real `opsbook run`s with --notify and --ci (GitHub and GitLab formats)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opsbook import notify
from opsbook.clients.webhook import Webhook, check_url, masked
from opsbook.errors import Invalid, UsageError

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK

TOKEN = "XyZ0secretTOKEN0abc123"  # the secret part of a webhook URL


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers from a script of
    (status, headers, body, delay) tuples; once the script is used up it answers 200 "ok"."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes, float]] | None = None):
        self.answers = list(answers or [])
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.times.append(time.monotonic())
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status, headers, reply, delay = outer.answers.pop(0) if outer.answers else (200, {}, b"ok", 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = f"/services/T0001/B0002/{TOKEN}") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def json(self, i: int = 0) -> Any:
        return json.loads(self.requests[i]["body"])

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fast(**kw: Any) -> Webhook:
    opts: dict[str, Any] = {"timeout": 2.0, "deadline": 10.0, "backoff": 0.05, "max_backoff": 0.2}
    opts.update(kw)
    return Webhook(**opts)


MANIFEST: dict[str, Any] = {
    "run_id": "20261201T120000Z-abc123", "runbook_id": "deploy-new-model", "runbook_version": "2.0.0",
    "runbook_title": "Deploy a new model", "risk": "high", "mode": "apply", "target": "staging",
    "status": "failed", "started": "2026-12-01T12:00:00Z", "ended": "2026-12-01T12:03:00Z",
    "duration_seconds": 180.0, "operator": "alice", "approval": {"plan_run_id": "20261201T110000Z-def456"},
    "error": "RunFailed: FAILED: 1 step(s) failed: Canary judged <worse> & rolled back",
    "failed_cell": {"index": 9, "code_cell": 7, "ename": "RunFailed", "evalue": "FAILED", "source": "run.summary()"},
    "steps": [
        {"kind": "preflight", "title": "Preflight", "outcome": "ok", "summary": "2 prerequisites met",
         "rows": [{"prerequisite": "registry", "status": "pass", "reason": ""},
                  {"prerequisite": "cluster", "status": "pass", "reason": ""}]},
        {"kind": "change", "title": "Deploy canary", "outcome": "changed", "summary": "1 pod"},
        {"kind": "check", "title": "Canary judged", "outcome": "failed", "summary": "error rate 4% > 1% <b>"},
        {"kind": "check", "title": "Latency p99", "outcome": "ok", "summary": "120 ms"},
    ],
}


# -- the client against a real receiver -------------------------------------------------------------------

def test_generic_payload_delivered_with_every_field():
    with Receiver() as rx:
        body = notify.generic_payload(MANIFEST, record="/srv/outputs/deploy-new-model/x", link="https://ci/job/1")
        d = fast().post_json(rx.url("/hook"), body)
    assert d.delivered and d.attempts == 1 and d.status == 200 and d.reason == ""
    (req,) = rx.requests
    assert req["headers"]["Content-Type"] == "application/json; charset=utf-8"
    got = rx.json()
    assert got["schema"] == "opsbook.notification/v1" and got["event"] == "run.finished"
    assert got["run_id"] == "20261201T120000Z-abc123"
    assert got["runbook"] == {"id": "deploy-new-model", "version": "2.0.0", "title": "Deploy a new model",
                              "risk": "high"}
    assert (got["target"], got["mode"], got["status"]) == ("staging", "apply", "failed")
    assert got["failing_step"] == {"kind": "check", "title": "Canary judged", "summary": "error rate 4% > 1% <b>"}
    assert got["record"] == "/srv/outputs/deploy-new-model/x" and got["link"] == "https://ci/job/1"
    assert (got["started"], got["ended"]) == ("2026-12-01T12:00:00Z", "2026-12-01T12:03:00Z")
    assert got["approved_plan"] == "20261201T110000Z-def456"
    assert got["checks"] == {"total": 4, "passed": 3, "failed": 1}  # 2 prerequisites + 2 checks
    assert got["failed_checks"] == [{"name": "Canary judged", "reason": "error rate 4% > 1% <b>"}]
    assert got["steps"] == {"total": 4, "ok": 2, "changed": 1, "failed": 1}


def test_slack_payload_delivered():
    with Receiver() as rx:
        d = fast().post_json(rx.url(), notify.slack_payload(MANIFEST, record="/srv/rec", link="https://ci/j|1>"))
    assert d.delivered
    got = rx.json()
    assert got["text"].startswith(":x: opsbook deploy-new-model failed (apply on staging), run 20261201T120000Z")
    types = [b["type"] for b in got["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert got["blocks"][0]["text"] == {"type": "plain_text", "emoji": True, "text": "❌ deploy-new-model: failed"}
    fields = [f["text"] for f in got["blocks"][1]["fields"]]
    assert "*Target*\nstaging" in fields and "*Mode*\napply" in fields and "*Checks*\n3 of 4 passed" in fields
    failing = got["blocks"][2]["text"]["text"]
    assert failing.startswith("*Failing check*: Canary judged") and "4% &gt; 1% &lt;b&gt;" in failing
    ctx = got["blocks"][3]["elements"][0]["text"]
    assert "Record: `/srv/rec`" in ctx and "<https://ci/j%7C1%3E|CI job>" in ctx


def test_500_twice_then_200_is_three_attempts():
    answers = [(500, {}, b"oops", 0.0), (503, {}, b"", 0.0)]
    with Receiver(answers) as rx:
        d = fast().post_json(rx.url(), {"n": 1})
    assert d.delivered and d.attempts == 3 and len(rx.requests) == 3
    assert len({r["body"] for r in rx.requests}) == 1  # the same document each time


def test_429_retry_after_is_honoured():
    with Receiver([(429, {"Retry-After": "1"}, b"slow down", 0.0)]) as rx:
        d = fast(backoff=0.01).post_json(rx.url(), {"n": 1})
    assert d.delivered and d.attempts == 2
    assert rx.times[1] - rx.times[0] >= 0.95  # waited what the receiver asked, not the 0.01 s backoff


def test_429_retry_after_past_the_deadline_gives_up_at_once():
    with Receiver([(429, {"Retry-After": "120"}, b"", 0.0)]) as rx:
        t0 = time.monotonic()
        d = fast(deadline=5).post_json(rx.url(), {"n": 1})
    assert not d.delivered and d.attempts == 1 and d.status == 429
    assert "Retry-After 120 s" in d.reason and "deadline" in d.reason
    assert time.monotonic() - t0 < 2


def test_400_is_not_retried():
    with Receiver([(400, {}, b"invalid_payload", 0.0)]) as rx:
        d = fast().post_json(rx.url(), {"n": 1})
    assert not d.delivered and d.attempts == 1 and len(rx.requests) == 1
    assert d.status == 400 and d.reason == "HTTP 400 (invalid_payload)"


def test_redirect_is_not_followed():
    with Receiver([(302, {"Location": "http://127.0.0.1:1/elsewhere"}, b"", 0.0)]) as rx:
        d = fast().post_json(rx.url(), {"n": 1})
    assert not d.delivered and d.attempts == 1 and len(rx.requests) == 1
    assert "redirects are not followed" in d.reason


def test_receiver_down_is_retried_then_reported():
    t0 = time.monotonic()
    d = fast(max_attempts=4).post_json(f"http://127.0.0.1:{closed_port()}/{TOKEN}", {"n": 1})
    assert not d.delivered and d.attempts == 4 and d.status is None
    assert d.reason.startswith("connection failed (") and "refused" in d.reason
    assert TOKEN not in d.reason
    assert time.monotonic() - t0 < 3


def test_slow_receiver_times_out_within_the_deadline():
    with Receiver([(200, {}, b"ok", 5.0)] * 5) as rx:
        t0 = time.monotonic()
        d = fast(timeout=0.5, deadline=2.0).post_json(rx.url(), {"n": 1})
        took = time.monotonic() - t0
    assert not d.delivered and d.attempts >= 2
    assert "no answer within" in d.reason
    assert took < 3.0


def test_a_drip_feeding_receiver_cannot_outlast_the_deadline():
    """Each byte comes before the per-read timeout, so only post_all's outer deadline stops it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def drip() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stop.is_set():
            try:
                conn.sendall(b"a")
            except OSError:
                break
            time.sleep(0.1)
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    try:
        t0 = time.monotonic()
        (d,) = fast(timeout=1.0, deadline=1.5).post_all([(f"http://127.0.0.1:{srv.getsockname()[1]}/x", {})],
                                                          grace=0.5)
        took = time.monotonic() - t0
    finally:
        stop.set()
        srv.close()
    assert not d.delivered and d.attempts == 1 and "abandoned" in d.reason
    assert 1.5 <= took < 3.0


def test_post_all_sends_concurrently():
    with Receiver([(200, {}, b"ok", 1.0)] * 3) as rx:
        t0 = time.monotonic()
        results = fast().post_all([(rx.url(f"/{i}"), {"i": i}) for i in range(3)])
        took = time.monotonic() - t0
    assert [r.delivered for r in results] == [True] * 3
    assert sorted(r["path"] for r in rx.requests) == ["/0", "/1", "/2"]
    assert took < 2.5  # not 3 x 1 s


@pytest.mark.parametrize("url,ok", [
    ("https://hooks.slack.com/services/T/B/x", True),
    ("http://127.0.0.1:8080/x", True),
    ("http://localhost/x", True),
    ("http://hooks.example.com/x", False),
    ("ftp://example.com/x", False),
    ("https:///nohost", False),
])
def test_check_url(url, ok):
    if ok:
        check_url(url)
    else:
        with pytest.raises(Invalid) as err:
            check_url(url)
        assert "/x" not in str(err.value).replace("://", "")


def test_masked_keeps_scheme_and_host_only():
    assert masked(f"https://hooks.slack.com/services/T/B/{TOKEN}?a=b") == "https://hooks.slack.com/…"
    assert masked("http://127.0.0.1:9999/p") == "http://127.0.0.1:9999/…"


# -- destinations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,fmt,dest", [
    ("slack:env:SLACK_WEBHOOK", "slack", "env:SLACK_WEBHOOK"),
    ("generic:file:/run/secrets/hook", "generic", "file:/run/secrets/hook"),
    ("env:HOOK", "generic", "env:HOOK"),
    ("generic:https://hooks.example.com/opsbook", "generic", "https://hooks.example.com/opsbook"),
    ("https://hooks.example.com/opsbook", "generic", "https://hooks.example.com/opsbook"),
])
def test_parse_target(text, fmt, dest):
    t = notify.parse_target(text)
    assert (t.format, t.dest) == (fmt, dest)


@pytest.mark.parametrize("text,needle", [
    (f"slack:https://hooks.slack.com/services/T/B/{TOKEN}", "a Slack webhook URL is a secret"),
    (f"generic:http://hooks.example.com/{TOKEN}", "plain http is allowed only to a loopback host"),
    (f"https://user:pw@hooks.example.com/{TOKEN}", "carries credentials"),
    ("slack:k8s:ns/secret/key", "k8s: references are not supported"),
    ("slack:env:1BAD", "valid environment variable name"),
    (f"teams:https://x.example.com/{TOKEN}", "expected [slack:|generic:]DEST"),
    ("pager", "expected [slack:|generic:]DEST"),
])
def test_parse_target_refuses_with_the_url_masked(text, needle):
    with pytest.raises(UsageError) as err:
        notify.parse_target(text)
    assert needle in str(err.value)
    assert TOKEN not in str(err.value) and "pw" not in str(err.value)


def test_targets_from_cli_or_env():
    env = {"OPSBOOK_NOTIFY": "slack:env:A  generic:env:B\n", "A": "https://a.example", "B": "https://b.example",
           "C": "https://c.example"}
    assert [str(t) for t in notify.targets(None, env)] == ["slack:env:A", "generic:env:B"]
    assert [str(t) for t in notify.targets(["env:C"], env)] == ["generic:env:C"]  # --notify wins
    assert notify.targets(None, {}) == []
    with pytest.raises(UsageError, match="OPSBOOK_NOTIFY: No closing quotation"):
        notify.targets(None, {"OPSBOOK_NOTIFY": "'env:A"})
    with pytest.raises(UsageError, match="environment variable D is not set"):  # refused before the run
        notify.targets(["env:D"], env)
    shown = str(notify.parse_target(f"https://hooks.example.com/{TOKEN}"))
    assert shown == "generic:https://hooks.example.com/…"


def test_deliver_resolves_refs_and_never_shows_the_url(monkeypatch, tmp_path):
    hook_file = tmp_path / "hook"
    with Receiver([(400, {}, f"bad token {TOKEN}".encode(), 0.0)]) as bad, Receiver() as good:
        monkeypatch.setenv("OPSBOOK_TEST_HOOK", bad.url())
        hook_file.write_text(good.url("/ok-path-0000") + "\n")
        to = [notify.parse_target("slack:env:OPSBOOK_TEST_HOOK"), notify.parse_target(f"file:{hook_file}"),
              notify.parse_target("env:OPSBOOK_TEST_UNSET_HOOK")]
        sent = notify.deliver(to, MANIFEST, record="/r", link=None, client=fast())
    assert [s.delivery.delivered for s in sent] == [False, True, False]
    assert "blocks" in bad.json() and good.json()["schema"] == notify.SCHEMA
    lines = [s.line() for s in sent]
    assert lines[0].startswith("notification slack:env:OPSBOOK_TEST_HOOK not delivered after 1 attempt: HTTP 400")
    assert lines[1].startswith("notified generic:file:")
    assert "OPSBOOK_TEST_UNSET_HOOK is not set" in lines[2]
    assert all(TOKEN not in ln and "ok-path-0000" not in ln for ln in lines)  # the echoed token is redacted


# -- real runs through the CLI ----------------------------------------------------------------------------------

_CI_VARS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "OPSBOOK_CI", "OPSBOOK_NOTIFY", "GITHUB_STEP_SUMMARY",
            "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_SERVER_URL", "CI_JOB_URL")


def run_cli(outputs: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                    float]:
    """`opsbook run ...` as a pipeline runs it; returns the process and the seconds between the
    record line and the exit (the time spent notifying)."""
    full = {k: v for k, v in os.environ.items() if k not in _CI_VARS}
    full.update({"OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, **(env or {})})
    argv = [*OPSBOOK, "run", *args, "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)]
    # bytes, not text mode: text mode would turn GitLab's "\r" into a newline
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read().decode()), daemon=True)
    reader.start()
    out, t_record = [], None
    for raw in proc.stdout:
        line = raw.decode()
        out.append(line)
        if line.startswith("  record: "):
            t_record = time.monotonic()
    proc.wait(timeout=180)
    reader.join(10)
    proc.stdout.close()
    proc.stderr.close()
    done = time.monotonic()
    return (subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err)),
            done - (t_record or done))


def all_text(outputs: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in outputs.rglob("*") if p.is_file())


@pytest.mark.slow
def test_github_run_with_failed_check_annotates_and_notifies(tmp_path):
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    with Receiver() as rx:
        r, _ = run_cli(outputs, "failcheck", "--ci", "--notify", "slack:env:HOOK_SLACK",
                       "--notify", "generic:env:HOOK_GENERIC", "--output-json", str(tmp_path / "run.json"),
                       "--junit", str(tmp_path / "junit.xml"),
                       env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                            "GITHUB_REPOSITORY": "acme/ops", "GITHUB_RUN_ID": "77",
                            "HOOK_SLACK": rx.url(), "HOOK_GENERIC": rx.url(f"/generic/{TOKEN}")})
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "::group::Executing failcheck (6 cells)" in lines
    assert "[4/6] A verification check fails" in lines  # the step's heading, once; not a cut line of code
    assert not any(ln.startswith(("[5/6]", "[6/6]")) for ln in lines)
    assert "::group::✗ check: Replicas above 100: failed (0.0 s)" in lines
    assert lines.count("::endgroup::") == sum(ln.startswith("::group::") for ln in lines) == 2
    assert any(ln.startswith("::error title=Check failed%3A Replicas above 100::") for ln in lines)
    assert any(ln.startswith("::error title=opsbook run failed::failcheck failed at code cell 4 (run.summary())")
               for ln in lines)
    assert "━" not in r.stdout + r.stderr and "\r" not in r.stdout  # no progress bar
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["status"] == "failed" and result["exit_code"] == 1 and f"failed run {result['run_id']}" in lines
    assert Path(result["record"]).is_dir() and Path(result["record"]).parent.parent == outputs
    assert "| Status | failed |" in summary.read_text()
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert [c.get("name") for c in junit.iter("testcase")] == ["check: Replicas above 100", "run: failcheck"]
    # both webhooks got the run's facts
    by_path = {q["path"]: json.loads(q["body"]) for q in rx.requests}
    slack, generic = by_path[f"/services/T0001/B0002/{TOKEN}"], by_path[f"/generic/{TOKEN}"]
    assert "failcheck failed" in slack["text"] and slack["blocks"][0]["type"] == "header"
    assert generic["run_id"] == result["run_id"] and generic["status"] == "failed"
    assert generic["failing_step"]["title"] == "Replicas above 100" and generic["record"] == result["record"]
    assert generic["link"] == "https://github.com/acme/ops/actions/runs/77"
    assert generic["checks"] == {"total": 1, "passed": 0, "failed": 1}
    assert r.stderr.count("opsbook: notified ") == 2
    # the webhook URLs (env: references) are nowhere: not in the output, not in the record
    for text in (r.stdout, r.stderr, all_text(outputs), summary.read_text(), (tmp_path / "run.json").read_text()):
        assert TOKEN not in text


@pytest.mark.slow
def test_gitlab_run_with_receiver_down_keeps_its_exit_code(tmp_path):
    outputs = tmp_path / "outputs"
    hook = f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}"
    r, notify_seconds = run_cli(outputs, "failing", "--ci=gitlab", "--notify", "generic:env:HOOK",
                                env={"HOOK": hook})
    assert r.returncode == 1, r.stdout + r.stderr  # the run's own status, not the notification's
    assert "\x1b[0Ksection_start:" in r.stdout and "opsbook_cells[collapsed=true]\r\x1b[0KExecuting failing" in r.stdout
    assert r.stdout.count("section_start:") == r.stdout.count("section_end:")
    assert "\x1b[31;1mERROR: opsbook run failed: failing failed at code cell 3" in r.stdout
    assert "RuntimeError: boom in cell 3" in r.stdout
    warnings = [ln for ln in r.stderr.splitlines() if "not delivered" in ln]
    assert len(warnings) == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert warnings[0].startswith("\x1b[33;1mWARNING: notification generic:env:HOOK not delivered after 5 attempts")
    assert notify_seconds < 20 + 2  # bounded by the webhook deadline
    assert TOKEN not in r.stdout + r.stderr + all_text(outputs)


@pytest.mark.slow
def test_env_configured_plain_run_succeeds_despite_a_rejected_notification(tmp_path):
    outputs = tmp_path / "outputs"
    with Receiver([(400, {}, b"no_service", 0.0)]) as rx:
        r, _ = run_cli(outputs, "passing", env={"OPSBOOK_CI": "plain", "OPSBOOK_NOTIFY": "slack:env:HOOK",
                                                 "HOOK": rx.url()})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== Executing passing (8 cells)" in r.stdout and "ERROR" not in r.stdout
    assert len(rx.requests) == 1  # a 400 is not retried
    (line,) = r.stderr.strip().splitlines()
    assert line == ("WARNING: notification slack:env:HOOK not delivered after 1 attempt: HTTP 400 (no_service) "
                    "(the run's status is unchanged)")


@pytest.mark.parametrize("args,env,needle", [
    (["--notify", f"slack:https://hooks.slack.com/services/T/B/{TOKEN}"], {}, "a Slack webhook URL is a secret"),
    (["--notify", "teams:env:X"], {}, "expected [slack:|generic:]DEST"),
    ([], {"OPSBOOK_NOTIFY": f"generic:http://hooks.example.com/{TOKEN}"}, "plain http is allowed only"),
    ([], {"OPSBOOK_CI": "jenkins"}, "OPSBOOK_CI='jenkins'"),
])
def test_bad_ci_or_notify_settings_exit_2_before_running(tmp_path, args, env, needle):
    outputs = tmp_path / "outputs"
    r, _ = run_cli(outputs, "passing", *args, env=env)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert TOKEN not in r.stderr + r.stdout
    assert not outputs.exists() or not list(outputs.rglob("manifest.json"))
