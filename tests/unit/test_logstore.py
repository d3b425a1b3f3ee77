"""The log store client's Loki path and its error mapping, against HTTP servers on loopback.

Limit, said plainly: there is no Loki here. ``FakeLoki`` answers ``/loki/api/v1/query_range`` and
``/loki/api/v1/query`` in the response format Loki documents
(``{"status":"success","data":{"resultType":"streams"|"vector","result":[...]}}``) and understands only
the few LogQL shapes our client sends (a label matcher, ``|= "text"``, ``sum by (label)
(count_over_time(...))``); it proves the client's requests and parsing, not Loki's query engine. The
OpenSearch path is tested against a real OpenSearch-compatible server in
``tests/runbooks/test_centralized_logging.py``."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from opsbook.clients.logstore import Loki, connect
from opsbook.errors import Forbidden, Invalid, NotFound, TimedOut, Unreachable
from opsbook.ops import centralized_logging as logcollect
from opsbook.targets import Target
from opsbook.testing.runbook import make_context
from opsbook.testing.services import free_port

UTC = dt.UTC


@dataclass
class FakeLoki:
    url: str = ""
    streams: list[tuple[dict, list[tuple[int, str]]]] = field(default_factory=list)
    queries: list[tuple[str, dict]] = field(default_factory=list)
    status: int = 200  # what every API request answers with when not 200

    def push(self, labels: dict, line: str, when: dt.datetime | None = None) -> None:
        ts = int((when or dt.datetime.now(UTC)).timestamp() * 1e9)
        for lbl, values in self.streams:
            if lbl == labels:
                values.append((ts, line))
                return
        self.streams.append((dict(labels), [(ts, line)]))

    def _select(self, selector: str, text: str | None, start: int, end: int):
        out = []
        matchers = re.findall(r'(\w+)\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', selector)
        for labels, values in self.streams:
            if all((labels.get(k, "") == json.loads(f'"{v}"')) if op == "=" else
                   re.fullmatch(json.loads(f'"{v}"'), labels.get(k, "")) for k, op, v in matchers):
                vals = [(ts, ln) for ts, ln in values if start <= ts <= end and (text is None or text in ln)]
                if vals:
                    out.append((labels, vals))
        return out

    def answer(self, path: str, q: dict) -> tuple[int, dict | str]:
        if path == "/ready":
            return 200, "ready"
        if path == "/loki/api/v1/status/buildinfo":
            return 200, {"version": "fake", "revision": "", "branch": ""}
        self.queries.append((path, q))
        if self.status != 200:
            return self.status, {"message": "denied by the fake"} if self.status < 500 else "upstream down"
        query = q["query"]
        if path == "/loki/api/v1/query_range":
            m = re.fullmatch(r'(\{[^}]*\})\s*(?:\|=\s*("(?:[^"\\]|\\.)*"))?', query.strip())
            if not m:
                return 400, "parse error"
            text = json.loads(m.group(2)) if m.group(2) else None
            result = [{"stream": lbl, "values": [[str(ts), ln] for ts, ln in sorted(vals, reverse=True)]}
                      for lbl, vals in self._select(m.group(1), text, int(q["start"]), int(q["end"]))]
            return 200, {"status": "success", "data": {"resultType": "streams", "result": result,
                                                       "stats": {}}}
        if path == "/loki/api/v1/query":
            m = re.fullmatch(r'sum by \((\w+)\) \(count_over_time\((\{[^}]*\})\[(\d+)s\]\)\)', query.strip())
            if not m:
                return 400, "parse error"
            label, selector, seconds = m.group(1), m.group(2), int(m.group(3))
            end = int(q["time"])
            counts: dict[str, int] = {}
            for lbl, vals in self._select(selector, None, end - seconds * 10**9, end):
                counts[lbl.get(label, "")] = counts.get(lbl.get(label, ""), 0) + len(vals)
            result = [{"metric": {label: k}, "value": [end / 1e9, str(v)]} for k, v in counts.items()]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 404, "404 page not found"


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    state = FakeLoki()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def do_GET(self):  # noqa: N802
            parts = urlsplit(self.path)
            code, body = state.answer(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def labels(app: str, pod: str | None = None) -> dict:
    return {"job": "fluent-bit", "namespace": "ml-platform", "pod": pod or f"{app}-7d9f-abcde",
            "container": app, "app": app}


def window(minutes: int = 15) -> tuple[dt.datetime, dt.datetime]:
    end = dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    return end - dt.timedelta(minutes=minutes), end


def test_loki_client_finds_by_service_by_request_id_and_counts(loki):
    now = dt.datetime.now(UTC)
    for i in range(3):
        loki.push(labels("proposer"), f'{{"log":"served request_id=req-{i}"}}', now - dt.timedelta(seconds=i))
    loki.push(labels("critic"), '{"log":"judged request_id=req-1"}', now)
    loki.push(labels("critic"), '{"log":"too old"}', now - dt.timedelta(hours=2))
    store = connect("loki", loki.url)
    assert store.health().status == "ready"
    lines = store.logs_for_service("proposer", *window())
    assert [x.service for x in lines] == ["proposer"] * 3 and lines[0].line.endswith('req-0"}')
    assert lines[0].namespace == "ml-platform" and lines[0].container == "proposer"
    assert lines[0].timestamp > lines[-1].timestamp  # newest first
    found = store.logs_with_request_id("req-1", *window())
    assert sorted(x.service for x in found) == ["critic", "proposer"]
    assert store.count_per_service(*window()) == {"proposer": 3, "critic": 1}
    sent = [q["query"] for _, q in loki.queries]
    assert '{app="proposer"}' in sent and '{namespace=~".+"} |= "req-1"' in sent
    assert 'sum by (app) (count_over_time({app=~".+"}[900s]))' in sent


def test_verification_steps_work_over_loki(loki):
    target = Target(name="t", log_store_url=loki.url, log_store_kind="loki")
    ctx = make_context("centralized-logging", mode="apply", target=target, marker_timeout=3.0, search_service="critic")
    loki.push(labels("proposer"), "hello")
    counts = logcollect.counts_per_service(ctx)
    assert counts.outcome == "failed" and counts.details["silent"] == ["critic"]
    assert {r["service"]: r["status"] for r in counts.rows} == {"proposer": "ok", "critic": "NO LOGS"}
    loki.push(labels("critic"), "judged")
    assert logcollect.counts_per_service(ctx).outcome == "ok"
    result = logcollect.search(ctx)
    assert [r["line"] for r in result.rows] == ["judged"]
    marker = ctx.marker = logcollect.Marker(request_id="opsbook-feedfacecafe", pod="opsbook-log-marker-feedfacec",
                               namespace="logging", emitted_at=dt.datetime.now(UTC))
    loki.push({**labels("opsbook-log-marker"), "namespace": "logging"},
              logcollect.marker_line(marker.request_id))
    found = logcollect.marker_searchable(ctx, poll=0.2)
    assert found.outcome == "ok" and found.details["searches"] == 1, found.summary


@pytest.mark.parametrize("status,error,needle", [
    (401, Forbidden, "HTTP 401 (denied by the fake): check the credentials"),
    (403, Forbidden, "HTTP 403"),
    (400, Invalid, "HTTP 400"),
    (503, Unreachable, "HTTP 503 (upstream down)"),
])
def test_errors_are_mapped_and_chain_the_original(loki, status, error, needle):
    import requests

    loki.status = status
    with pytest.raises(error, match=re.escape(needle)) as info:
        connect("loki", loki.url).logs_for_service("proposer", *window())
    assert isinstance(info.value.__cause__, requests.HTTPError)


def test_unreachable_timeout_not_found_and_bad_answers():
    import requests

    with pytest.raises(Unreachable, match="is not reachable") as info:
        connect("opensearch", f"http://127.0.0.1:{free_port()}").count_per_service(*window())
    assert isinstance(info.value.__cause__, requests.ConnectionError)

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/slow"):
                threading.Event().wait(2)
            body = b"<html>not json</html>" if self.path.startswith("/loki") else b"{}"
            self.send_response(404 if self.path.startswith("/missing") else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(TimedOut, match="no answer in 0.5 s"):
            Loki(base + "/slow", timeout=0.5).logs_for_service("x", *window())
        with pytest.raises(NotFound):
            Loki(base + "/missing").logs_for_service("x", *window())
        with pytest.raises(Invalid, match="did not answer JSON"):
            Loki(base).logs_for_service("x", *window())
        with pytest.raises(Invalid, match="expected success / streams"):
            Loki(base + "/x").logs_for_service("x", *window())  # {} is not a query_range answer
    finally:
        server.shutdown()
        server.server_close()


def test_connect_refuses_unknown_kinds_and_missing_urls():
    with pytest.raises(Invalid, match="expected one of"):
        connect("splunk", "http://x")
    with pytest.raises(Invalid, match="no log store URL"):
        connect("opensearch", "")
