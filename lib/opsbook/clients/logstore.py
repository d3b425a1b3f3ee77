"""The log store: search and count container logs in OpenSearch / Elasticsearch or in Loki, behind one
small interface (:class:`LogStore`).

=================================== ===================================================================
method                              what it returns
=================================== ===================================================================
``health()``                        :class:`Health` (status, version) - raises if the store is not there
``logs_for_service(s, start, end)`` :class:`LogLine` list, newest first: the logs of one service
``logs_with_request_id(r, ...)``    :class:`LogLine` list: the lines that contain a request id
``count_per_service(start, end)``   ``{service: count}`` for every service with logs in the window
=================================== ===================================================================

Both talk plain HTTP with ``requests`` (no opensearch-py / elasticsearch-py): the two search APIs are
a few JSON bodies (``_search``, ``_count``), one code path serves OpenSearch and every Elasticsearch
major without the clients' product checks, and the errors are mapped in one place. ``session`` is a
constructor argument (the side-effect seam): tests may pass their own.

Documents are expected in the shape the Fluent Bit collector of ``opsbook.ops.centralized_logging`` writes:

* OpenSearch / Elasticsearch: indices ``<prefix>-YYYY.MM.DD`` (``Logstash_Format``), fields
  ``@timestamp``, ``log`` (the line), ``stream``, ``kubernetes.namespace_name``, ``.pod_name``,
  ``.container_name``, ``.labels.<label>``; the service is the ``app`` label
  (``service_field``; its ``.keyword`` sub-field is used for exact matches and aggregations, as dynamic
  mapping creates it).
* Loki: streams labelled ``namespace``, ``pod``, ``container`` and ``app`` (the service label), with
  the line as sent by the collector.

Errors are ours (``opsbook.errors``), the original exception chained: Unreachable (connection refused,
DNS, HTTP 5xx), TimedOut, Forbidden (401/403), NotFound (404), Invalid (400, or an answer that is not
what the API documents).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opsbook.errors import ClientError, Forbidden, Invalid, NotFound, TimedOut, Unreachable

KINDS = ("opensearch", "elasticsearch", "loki")
DEFAULT_SERVICE_FIELD = "kubernetes.labels.app"
DEFAULT_SERVICE_LABEL = "app"
REQUEST_ID_FIELDS = ("log", "message")  # where a request id is looked for (phrase match)


@dataclass(frozen=True)
class LogLine:
    """One log line as stored: when, where it came from, the text."""

    timestamp: str
    service: str
    namespace: str
    pod: str
    container: str
    line: str
    source: dict[str, Any] = field(default_factory=dict, repr=False)

    def row(self, width: int = 160) -> dict[str, Any]:
        return {"time": self.timestamp, "service": self.service, "namespace": self.namespace, "pod": self.pod,
                "container": self.container, "line": self.line if len(self.line) <= width
                else self.line[: width - 1] + "…"}


@dataclass(frozen=True)
class Health:
    kind: str
    url: str
    status: str  # green / yellow / red (OpenSearch), ready (Loki)
    version: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class LogStore(Protocol):
    kind: str
    url: str

    def health(self) -> Health: ...

    def logs_for_service(self, service: str, start: _dt.datetime, end: _dt.datetime,
                         limit: int = 100) -> list[LogLine]: ...

    def logs_with_request_id(self, request_id: str, start: _dt.datetime, end: _dt.datetime,
                             limit: int = 100) -> list[LogLine]: ...

    def count_per_service(self, start: _dt.datetime, end: _dt.datetime) -> dict[str, int]: ...


def connect(kind: str, url: str, *, index_prefix: str = "kube-logs", username: str | None = None,
            password: str | None = None, timeout: float = 10.0, verify: bool | str = True,
            session: Any = None) -> LogStore:
    """The client for ``kind`` (``opensearch``, ``elasticsearch`` or ``loki``) at ``url``."""
    if kind not in KINDS:
        raise Invalid(f"log store kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not url:
        raise Invalid("no log store URL: give parameter backend_url or set log_store_url in the target")
    auth = (username, password or "") if username else None
    if kind == "loki":
        return Loki(url, auth=auth, timeout=timeout, verify=verify, session=session)
    return OpenSearchStore(url, kind=kind, index_prefix=index_prefix, auth=auth, timeout=timeout, verify=verify,
                           session=session)


# --------------------------------------------------------------------------------------------- HTTP


def _iso(t: _dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(text: str) -> str:
    """The reason an OpenSearch / Loki error body gives, else the start of the body."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            root = (err.get("root_cause") or [{}])[0] if err.get("root_cause") else err
            return f"{root.get('type', err.get('type', ''))}: {root.get('reason', err.get('reason', ''))}".strip(": ")
        if isinstance(err, str):
            return err[:300]
        if doc.get("message"):
            return str(doc["message"])[:300]
    return text.strip()[:300]


class _Http:
    def __init__(self, url: str, *, what: str, auth: tuple[str, str] | None, timeout: float, verify: bool | str,
                 session: Any):
        import requests

        self.url = url.rstrip("/")
        self.what = what
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        if auth:
            self.session.auth = auth
        self.session.verify = verify

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None) -> Any:
        import requests

        url = self.url + path
        where = f"{self.what} at {self.url}"
        try:
            resp = self.session.request(method, url, params=params, json=body, timeout=self.timeout,
                                        headers={"Accept": "application/json"})
        except requests.Timeout as exc:
            raise TimedOut(f"{where}: {method} {path} got no answer in {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"{where} is not reachable: {type(exc).__name__}: {exc}") from exc
        text = resp.text
        if resp.status_code >= 400:
            msg = f"{where}: {method} {path} answered HTTP {resp.status_code} ({_message(text)})"
            err = requests.HTTPError(msg, response=resp)
            if resp.status_code in (401, 403):
                raise Forbidden(msg + ": check the credentials and their permissions") from err
            if resp.status_code == 404:
                raise NotFound(msg) from err
            if resp.status_code >= 500:
                raise Unreachable(msg) from err
            raise Invalid(msg) from err
        try:
            return resp.json() if text.strip() else {}
        except ValueError as exc:
            raise Invalid(f"{where}: {method} {path} did not answer JSON: {text[:200]!r}") from exc


# --------------------------------------------------------------------------- OpenSearch / Elasticsearch


def _get(doc: Mapping[str, Any], dotted: str) -> Any:
    """``a.b.c`` from nested objects, or from a flat ``"a.b.c"`` key (both shapes occur)."""
    if dotted in doc:
        return doc[dotted]
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


class OpenSearchStore:
    """OpenSearch or Elasticsearch: ``_search`` / ``_count`` on ``<index_prefix>-*``."""

    def __init__(self, url: str, *, kind: str = "opensearch", index_prefix: str = "kube-logs",
                 auth: tuple[str, str] | None = None, timeout: float = 10.0, verify: bool | str = True,
                 session: Any = None, service_field: str = DEFAULT_SERVICE_FIELD):
        self.kind = kind
        self.url = url.rstrip("/")
        self.index_prefix = index_prefix
        self.index = f"{index_prefix}-*"
        self.service_field = service_field
        self._http = _Http(url, what=kind, auth=auth, timeout=timeout, verify=verify, session=session)

    def health(self) -> Health:
        info = self._http.call("GET", "/")
        version = ((info.get("version") or {}).get("number")) or ""
        distribution = (info.get("version") or {}).get("distribution") or "elasticsearch"
        status = "unknown"
        details: dict[str, Any] = {"distribution": distribution, "cluster": info.get("cluster_name", "")}
        try:
            h = self._http.call("GET", "/_cluster/health")
            status = h.get("status", "unknown")
            details.update(nodes=h.get("number_of_nodes"))
        except (NotFound, Forbidden) as exc:  # a restricted user may not read cluster health
            details["cluster_health"] = str(exc)
        return Health(kind=self.kind, url=self.url, status=status, version=f"{distribution} {version}".strip(),
                      details=details)

    def _window(self, start: _dt.datetime, end: _dt.datetime) -> dict[str, Any]:
        return {"range": {"@timestamp": {"gte": _iso(start), "lte": _iso(end)}}}

    def _search(self, query: dict[str, Any], limit: int) -> list[LogLine]:
        body = {"size": int(limit), "query": query, "sort": [{"@timestamp": {"order": "desc"}}]}
        doc = self._http.call("POST", f"/{self.index}/_search", params={"ignore_unavailable": "true",
                                                                       "allow_no_indices": "true"}, body=body)
        hits = (doc.get("hits") or {}).get("hits")
        if not isinstance(hits, list):
            raise Invalid(f"{self.kind} at {self.url}: _search answered without hits.hits")
        return [self._line(h.get("_source") or {}) for h in hits]

    def _line(self, src: Mapping[str, Any]) -> LogLine:
        line = src.get("log")
        if line is None:
            line = src.get("message", "")
        return LogLine(timestamp=str(src.get("@timestamp", "")), service=str(_get(src, self.service_field) or ""),
                       namespace=str(_get(src, "kubernetes.namespace_name") or ""),
                       pod=str(_get(src, "kubernetes.pod_name") or ""),
                       container=str(_get(src, "kubernetes.container_name") or ""),
                       line=str(line).rstrip("\n"), source=dict(src))

    def logs_for_service(self, service: str, start: _dt.datetime, end: _dt.datetime,
                         limit: int = 100) -> list[LogLine]:
        query = {"bool": {"filter": [{"term": {f"{self.service_field}.keyword": service}},
                                     self._window(start, end)]}}
        return self._search(query, limit)

    def logs_with_request_id(self, request_id: str, start: _dt.datetime, end: _dt.datetime,
                             limit: int = 100) -> list[LogLine]:
        if not request_id.strip():
            raise Invalid("empty request id")
        query = {"bool": {"filter": [self._window(start, end)],
                          "must": [{"multi_match": {"query": request_id, "type": "phrase",
                                                    "fields": list(REQUEST_ID_FIELDS)}}]}}
        # the phrase match is token-based: keep the lines that really hold the id
        return [x for x in self._search(query, limit) if request_id in json.dumps(x.source)]

    def count_per_service(self, start: _dt.datetime, end: _dt.datetime) -> dict[str, int]:
        body = {"size": 0, "query": {"bool": {"filter": [self._window(start, end)]}},
                "aggs": {"services": {"terms": {"field": f"{self.service_field}.keyword", "size": 1000,
                                                "missing": ""}}}}
        doc = self._http.call("POST", f"/{self.index}/_search", params={"ignore_unavailable": "true",
                                                                       "allow_no_indices": "true"}, body=body)
        aggs = doc.get("aggregations")
        if aggs is None:  # no index matched the pattern yet: nothing to count
            return {}
        buckets = (aggs.get("services") or {}).get("buckets")
        if not isinstance(buckets, list):
            raise Invalid(f"{self.kind} at {self.url}: the terms aggregation answered without buckets")
        return {str(b.get("key", "")): int(b.get("doc_count", 0)) for b in buckets}

    def count(self, start: _dt.datetime, end: _dt.datetime) -> int:
        doc = self._http.call("POST", f"/{self.index}/_count", params={"ignore_unavailable": "true",
                                                                      "allow_no_indices": "true"},
                              body={"query": {"bool": {"filter": [self._window(start, end)]}}})
        return int(doc.get("count", 0))


# --------------------------------------------------------------------------------------------- Loki


def _ns(t: _dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return str(int(t.timestamp() * 1_000_000_000))


def _logql_string(value: str) -> str:
    return json.dumps(value)  # a LogQL string literal: double quotes, backslash escapes


class Loki:
    """Loki's HTTP API: ``/loki/api/v1/query_range`` (LogQL log queries) and ``/loki/api/v1/query``
    (the per-service count, a metric query), ``/ready`` for health."""

    kind = "loki"

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout: float = 10.0,
                 verify: bool | str = True, session: Any = None, service_label: str = DEFAULT_SERVICE_LABEL,
                 tenant: str | None = None):
        self.url = url.rstrip("/")
        self.service_label = service_label
        self._http = _Http(url, what="loki", auth=auth, timeout=timeout, verify=verify, session=session)
        if tenant:
            self._http.session.headers["X-Scope-OrgID"] = tenant

    def health(self) -> Health:
        import requests

        try:
            resp = self._http.session.get(self._http.url + "/ready", timeout=self._http.timeout)
        except requests.Timeout as exc:
            raise TimedOut(f"loki at {self.url}: GET /ready got no answer in {self._http.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"loki at {self.url} is not reachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise Unreachable(f"loki at {self.url} is not ready: GET /ready answered HTTP {resp.status_code} "
                              f"({resp.text.strip()[:200]})")
        version = ""
        try:
            version = str(self._http.call("GET", "/loki/api/v1/status/buildinfo").get("version", ""))
        except ClientError:
            pass
        return Health(kind="loki", url=self.url, status="ready", version=f"loki {version}".strip())

    def _streams(self, logql: str, start: _dt.datetime, end: _dt.datetime, limit: int) -> list[LogLine]:
        doc = self._http.call("GET", "/loki/api/v1/query_range", params={
            "query": logql, "start": _ns(start), "end": _ns(end), "limit": int(limit), "direction": "backward"})
        data = doc.get("data") or {}
        if doc.get("status") != "success" or data.get("resultType") != "streams":
            raise Invalid(f"loki at {self.url}: query_range answered status {doc.get('status')!r}, resultType "
                          f"{data.get('resultType')!r} (expected success / streams)")
        out: list[LogLine] = []
        for stream in data.get("result") or []:
            labels = stream.get("stream") or {}
            for ts, line in stream.get("values") or []:
                when = _dt.datetime.fromtimestamp(int(ts) / 1e9, _dt.UTC)
                out.append(LogLine(timestamp=_iso(when), service=labels.get(self.service_label, ""),
                                   namespace=labels.get("namespace", ""), pod=labels.get("pod", ""),
                                   container=labels.get("container", ""), line=str(line).rstrip("\n"),
                                   source={"stream": labels, "ts": ts}))
        out.sort(key=lambda x: x.timestamp, reverse=True)
        return out[:limit]

    def logs_for_service(self, service: str, start: _dt.datetime, end: _dt.datetime,
                         limit: int = 100) -> list[LogLine]:
        return self._streams(f"{{{self.service_label}={_logql_string(service)}}}", start, end, limit)

    def logs_with_request_id(self, request_id: str, start: _dt.datetime, end: _dt.datetime,
                             limit: int = 100) -> list[LogLine]:
        if not request_id.strip():
            raise Invalid("empty request id")
        return self._streams(f'{{namespace=~".+"}} |= {_logql_string(request_id)}', start, end, limit)

    def count_per_service(self, start: _dt.datetime, end: _dt.datetime) -> dict[str, int]:
        seconds = max(1, int((end - start).total_seconds()))
        label = self.service_label
        logql = f'sum by ({label}) (count_over_time({{{label}=~".+"}}[{seconds}s]))'
        doc = self._http.call("GET", "/loki/api/v1/query", params={"query": logql, "time": _ns(end)})
        data = doc.get("data") or {}
        if doc.get("status") != "success" or data.get("resultType") != "vector":
            raise Invalid(f"loki at {self.url}: query answered status {doc.get('status')!r}, resultType "
                          f"{data.get('resultType')!r} (expected success / vector)")
        out: dict[str, int] = {}
        for sample in data.get("result") or []:
            name = (sample.get("metric") or {}).get(label, "")
            out[name] = out.get(name, 0) + int(float((sample.get("value") or [0, "0"])[1]))
        return out
