"""The retry and wait helpers (opsbook.clients.retry), driven by a real client (Prometheus's, through
requests) against a real HTTP server on loopback that fails as scripted, and by real waits."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opsbook.clients.prometheus import Prometheus
from opsbook.clients.retry import Pending, retrying, wait_until
from opsbook.errors import Invalid, NotFound, TimedOut, Unreachable

OK = (200, {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"job": "api"}, "value": [1700000000, "1"]}]}})
UNAVAILABLE = (503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"})
BAD_QUERY = (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"})
NO_API = (404, {"status": "error", "error": "page not found"})


class Server:
    """Answers each GET with the next (status, JSON) of its script, then 200 with one series."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]):
        self.script = list(script)
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                outer.hits += 1
                status, doc = outer.script.pop(0) if outer.script else OK
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# -- retrying -------------------------------------------------------------------------------------------

def test_a_temporary_error_is_retried_until_the_call_succeeds():
    slept: list[float] = []
    with Server([UNAVAILABLE, UNAVAILABLE]) as srv:
        prom = Prometheus(srv.url, timeout=2)
        rows = retrying(lambda: prom.query("up"), attempts=5, backoff=0.2, max_backoff=1.0,
                        sleep=lambda s: slept.append(s) or time.sleep(s))
    assert rows == [{"job": "api", "timestamp": 1700000000.0, "value": 1.0}]
    assert srv.hits == 3 and len(slept) == 2
    # exponential backoff, half fixed and half random: 0.1..0.2 s, then 0.2..0.4 s
    assert 0.1 <= slept[0] <= 0.2 and 0.2 <= slept[1] <= 0.4


def test_a_permanent_error_is_not_retried():
    with Server([BAD_QUERY]) as srv:
        prom = Prometheus(srv.url, timeout=2)
        with pytest.raises(Invalid, match="parse error at char 3") as err:
            retrying(lambda: prom.query("up{"), attempts=5, backoff=0.01)
    assert srv.hits == 1 and not err.value.temporary
    assert not getattr(err.value, "__notes__", None)  # raised as it came: nothing was given up


def test_an_error_that_is_not_a_client_error_goes_through_at_once():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        retrying(broken, attempts=5, backoff=0.01)
    assert calls == [1]


def test_when_the_attempts_run_out_the_last_error_says_so():
    prom = Prometheus(closed_port_url(), timeout=2)
    slept: list[float] = []
    with pytest.raises(Unreachable, match="connection refused") as err:
        retrying(lambda: prom.query("up"), attempts=3, backoff=0.01, sleep=slept.append)
    assert len(slept) == 2 and err.value.temporary
    assert err.value.__notes__ == ["gave up after 3 attempts"]


def test_no_retry_sleeps_past_the_deadline():
    prom = Prometheus(closed_port_url(), timeout=2)
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as err:
        retrying(lambda: prom.query("up"), attempts=10, deadline=1.0, backoff=4.0, max_backoff=8.0)
    assert time.monotonic() - t0 < 1.0  # the first wait (2..4 s) would pass it: not slept at all
    (note,) = err.value.__notes__
    assert note.startswith("the next retry (in ") and note.endswith("would pass the 1 s deadline")


# -- wait_until -----------------------------------------------------------------------------------------

def test_wait_until_returns_what_the_condition_found(tmp_path: Path):
    flag = tmp_path / "ready"
    threading.Timer(0.3, flag.write_text, args=("v7",)).start()

    def written() -> str | Pending:
        return flag.read_text() if flag.exists() else Pending(f"{flag.name} absent")

    t0 = time.monotonic()
    assert wait_until(written, timeout=10, interval=0.05, what="flag not written") == "v7"
    assert 0.25 <= time.monotonic() - t0 < 5


def test_wait_until_times_out_naming_what_was_awaited_and_the_last_state(tmp_path: Path):
    looks = []

    def written() -> Pending:
        looks.append(time.monotonic())
        return Pending(f"{len(looks)} look(s), {tmp_path.name}/ready absent")

    t0 = time.monotonic()
    with pytest.raises(TimedOut) as err:
        wait_until(written, timeout=0.5, interval=0.1, what="flag ready not written")
    took = time.monotonic() - t0
    assert str(err.value) == f"flag ready not written after 0.5 s: {len(looks)} look(s), {tmp_path.name}/ready absent"
    assert err.value.temporary
    assert 0.5 <= took < 2 and 4 <= len(looks) <= 8
    assert looks[-1] - t0 >= 0.5  # the last look is at the deadline, not one interval before it


def test_wait_until_with_no_time_looks_once():
    looks = []
    with pytest.raises(TimedOut, match=r"^deployment ns/api not rolled out after 0 s$"):
        wait_until(lambda: looks.append(1) or False, timeout=0, interval=1, what="deployment ns/api not rolled out")
    assert looks == [1]


def test_wait_until_lets_an_error_of_the_condition_through_at_once():
    with Server([NO_API]) as srv:
        prom = Prometheus(srv.url, timeout=2)
        t0 = time.monotonic()
        with pytest.raises(NotFound):
            wait_until(lambda: prom.query("up"), timeout=30, interval=0.1, what="series not there")
        assert time.monotonic() - t0 < 5 and srv.hits == 1


def test_an_error_the_caller_names_is_retried_like_a_temporary_one():
    """A 409 Conflict is not temporary (retrying the same request fails the same way), but a caller
    that recomputes the request on every attempt (RetryOnConflict) names it with ``when``."""
    from opsbook.errors import Conflict

    calls, naps = [], []

    def patch():
        calls.append(1)
        if len(calls) < 3:
            raise Conflict("the object has been modified; please apply your changes to the latest version")
        return "patched"

    assert retrying(patch, attempts=5, backoff=0.01, sleep=naps.append,
                    when=lambda exc: isinstance(exc, Conflict)) == "patched"
    assert len(calls) == 3 and len(naps) == 2
    calls.clear()
    with pytest.raises(Conflict):  # without ``when`` a Conflict goes through at once
        retrying(patch, attempts=5, backoff=0.01, sleep=naps.append)
    assert len(calls) == 1
