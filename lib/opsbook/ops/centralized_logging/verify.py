"""Proving the logs arrive, through the store's search API: a marker line printed by a short-lived pod
must become searchable in time, every expected service must have recent lines, and the operator's own
search (one service, one request id) is answered as a table."""

from __future__ import annotations

import datetime as _dt
import secrets as _random
import time
from dataclasses import dataclass, field
from typing import Any

from opsbook.errors import ClientError
from opsbook.ops.base import Result, change, check, step
from opsbook.ops.centralized_logging.context import APP, MARKER_IMAGE, MARKER_LABEL, Context, reason
from opsbook.ops.journal import JOURNAL

REQUEST_ID_LABEL = "opsbook.io/request-id"


@dataclass
class Marker:
    """The marker line a short-lived pod prints: ``opsbook log marker request_id=<id>``."""

    request_id: str
    pod: str
    namespace: str
    emitted_at: _dt.datetime
    line: str = ""
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def marker_line(request_id: str) -> str:
    return f"opsbook log marker request_id={request_id}"


def new_request_id() -> str:
    return "opsbook-" + _random.token_hex(8)


def marker_pod(ctx: Context, request_id: str) -> dict[str, Any]:
    """A pod that prints the marker line once and exits."""
    name = f"{MARKER_LABEL}-{request_id.rsplit('-', 1)[-1][:10]}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ctx.settings.namespace,
                     "labels": {"app": MARKER_LABEL, "opsbook.io/request-id": request_id,
                                "app.kubernetes.io/managed-by": "opsbook"}},
        "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": 300, "automountServiceAccountToken": False,
                 "containers": [{"name": "marker", "image": MARKER_IMAGE,
                                 "command": ["sh", "-c", f"echo '{marker_line(request_id)}'; sleep 2"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                               "limits": {"memory": "32Mi"}}}]},
    }


def plan_marker(ctx: Context) -> Result:
    pod = marker_pod(ctx, "opsbook-<random>")
    return Result(summary=f"would run pod {ctx.settings.namespace}/{pod['metadata']['name']} printing "
                  f"'{marker_line('<random id>')}', then search the store for it", outcome="planned",
                  details={"pod": pod})


def _no_marker_pod(ctx: Context) -> str | None:
    # plan mode shows the pod without a cluster too: only an apply needs one
    if ctx.applying and not ctx.has_cluster:
        return f"target {ctx.target_name} has no cluster: no marker pod"
    return None


@change("emit-marker", "Emit a marker line", plan=plan_marker, skip_if=_no_marker_pod, undo=JOURNAL)
def emit_marker(ctx: Context, request_id: str | None = None) -> Result:
    """Run the short-lived pod that prints the marker line; ``ctx.marker`` is what the next check
    searches for. The pod is created through ``ctx.journal`` and deleted by that check: an undo finds
    it gone, or deletes one left behind (a run stopped before the search)."""
    s = ctx.settings
    rid = request_id or new_request_id()
    pod = marker_pod(ctx, rid)
    ctx.journal.apply(ctx.kube, [pod], namespace=s.namespace)
    m = Marker(request_id=rid, pod=pod["metadata"]["name"], namespace=s.namespace,
               emitted_at=_dt.datetime.now(_dt.UTC), line=marker_line(rid))
    ctx.marker = m
    return Result(summary=f"pod {s.namespace}/{m.pod} prints '{m.line}'", outcome="changed", value=m,
                  details={"request_id": rid, "pod": m.pod, "emitted_at": m.emitted_at.isoformat()})


def _nothing_emitted(ctx: Context) -> str | None:
    if ctx.marker is not None:
        return None
    why = "plan mode" if not ctx.applying else f"target {ctx.target_name} has no cluster"
    return f"no marker was emitted ({why}): not checked"


@check("marker-searchable", "Marker line is searchable", skip_if=_nothing_emitted)
def marker_searchable(ctx: Context, *, poll: float = 1.0) -> Result:
    """The marker must be found in the store within ``marker_timeout`` seconds; the time it took is shown.
    The marker pod is deleted afterwards, found or not, and when there is no store to search."""
    marker = ctx.marker
    if marker is None:  # called directly, without the declaration's skip (run.do never gets here)
        return Result(summary=_nothing_emitted(ctx) or "", outcome="skipped")
    try:
        return _search_marker(ctx, marker, poll)
    finally:  # whatever the search found or raised, and with no store to search: the pod goes
        if ctx.has_cluster:
            try:
                marker.deleted = ctx.kube.delete(kind="Pod", name=marker.pod, namespace=marker.namespace)
            except ClientError:
                marker.deleted = False


def _search_marker(ctx: Context, marker: Marker, poll: float) -> Result:
    s = ctx.settings
    store = ctx.store()
    if store is None:
        return Result(summary="no log store URL: the marker cannot be searched", outcome="failed")
    start = marker.emitted_at - _dt.timedelta(minutes=5)
    t0 = time.monotonic()
    deadline = t0 + s.marker_timeout
    found, tries, last_error = [], 0, ""
    while True:
        tries += 1
        try:
            found = store.logs_with_request_id(marker.request_id, start,
                                               _dt.datetime.now(_dt.UTC) + _dt.timedelta(minutes=5), limit=10)
            last_error = ""
        except ClientError as exc:
            last_error = reason(exc)
        if found or time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    took = (_dt.datetime.now(_dt.UTC) - marker.emitted_at).total_seconds()
    details = {"request_id": marker.request_id, "pod": marker.pod, "searches": tries, "seconds": round(took, 1)}
    if found:
        return Result(summary=f"request_id={marker.request_id} searchable in {store.kind} {took:.1f} s after the "
                      f"pod was started ({tries} search(es))", outcome="ok", rows=[x.row() for x in found],
                      details=details)
    return Result(summary=f"marker request_id={marker.request_id} from pod {marker.namespace}/{marker.pod} was not "
                  f"found in {store.kind} at {store.url} after {s.marker_timeout:g} s ({tries} searches"
                  + (f"; last error: {last_error}" if last_error else "") + f"): check the collector "
                  f"(kubectl -n {s.namespace} logs ds/{APP}) and its output to the store",
                  outcome="failed", details=details)


def _window(minutes: int) -> tuple[_dt.datetime, _dt.datetime]:
    end = _dt.datetime.now(_dt.UTC)
    return end - _dt.timedelta(minutes=minutes), end


def _no_store(ctx: Context) -> str | None:
    return None if ctx.backend_url else f"target {ctx.target_name} has no log store URL: not checked"


@check("logs-from-every-service", "Logs from every service", skip_if=_no_store)
def counts_per_service(ctx: Context) -> Result:
    """Log lines per service over the last ``window_minutes``; expected services with none are flagged."""
    s = ctx.settings
    store = ctx.store()
    start, end = _window(s.window_minutes)
    counts = store.count_per_service(start, end)
    names = list(dict.fromkeys([*s.services, *sorted(counts)]))
    rows, silent = [], []
    for name in names:
        n = counts.get(name, 0)
        expected = name in s.services
        if expected and n == 0:
            silent.append(name)
        rows.append({"service": name or "(no app label)", "lines": n, "expected": "yes" if expected else "",
                     "status": "NO LOGS" if (expected and n == 0) else "ok"})
    total = sum(counts.values())
    summary = (f"{total} line(s) from {len([c for c in counts.values() if c])} service(s) in the last "
               f"{s.window_minutes} min")
    if silent:
        summary += f"; no logs from: {', '.join(silent)}"
    return Result(summary=summary, outcome="failed" if silent else "ok", rows=rows,
                  details={"counts": counts, "silent": silent, "start": start.isoformat(), "end": end.isoformat()})


def _no_search(ctx: Context) -> str | None:
    s = ctx.settings
    if not (s.search_service or s.search_request_id):
        return "no search asked for (search_service and search_request_id are empty)"
    if not ctx.backend_url:
        return f"target {ctx.target_name} has no log store URL: nothing to search"
    return None


@step("search", "Search", skip_if=_no_search)
def search(ctx: Context) -> Result:
    """The operator's search: the logs of ``search_service`` and/or those holding ``search_request_id``."""
    s = ctx.settings
    store = ctx.store()
    start, end = _window(s.window_minutes)
    if s.search_request_id:
        lines = store.logs_with_request_id(s.search_request_id, start, end, limit=s.search_limit)
        if s.search_service:
            lines = [x for x in lines if x.service == s.search_service]
    else:
        lines = store.logs_for_service(s.search_service, start, end, limit=s.search_limit)
    what = " and ".join(x for x in (f"service {s.search_service}" if s.search_service else "",
                                    f"request id {s.search_request_id}" if s.search_request_id else "") if x)
    return Result(summary=f"{len(lines)} line(s) for {what} in the last {s.window_minutes} min"
                  + ("" if lines else ": nothing found"), outcome="ok", rows=[x.row() for x in lines],
                  details={"service": s.search_service, "request_id": s.search_request_id, "found": len(lines)})
