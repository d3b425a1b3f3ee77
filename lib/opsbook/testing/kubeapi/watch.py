"""Watches: the events after a resourceVersion (or the current objects first), filtered by namespace
and selectors, as chunked JSON lines, with bookmarks, table output and 410 Expired for a
resourceVersion older than the kept history."""

from __future__ import annotations

import json
import time
from typing import Any

from .errors import bad_request
from .handler import HandlerBase, truthy
from .tables import to_table


class WatchHandler(HandlerBase):
    def _watch(self, r, ns, lm, fm) -> None:
        c = self.server.cluster
        timeout = float(self.q.get("timeoutSeconds") or 1800)
        deadline = time.time() + timeout
        rv_param = self.q.get("resourceVersion") or ""
        send_initial = truthy(self.q.get("sendInitialEvents")) and "sendInitialEvents" in self.q
        sr = c.storage(r)

        def visible(obj) -> bool:
            if obj is None:
                return False
            v = c.view(r, obj)
            if ns and r.namespaced and v["metadata"].get("namespace") != ns:
                return False
            return lm(v["metadata"].get("labels") or {}) and fm(v)

        initial: list[dict[str, Any]] = []
        with c.lock:
            if rv_param in ("", "0") or send_initial:
                items, _ = c.list(r, ns, lm, fm)
                initial = [{"type": "ADDED", "object": it} for it in items]
                since = c.rv
            else:
                try:
                    since = int(rv_param)
                except ValueError:
                    raise bad_request(f"invalid resource version: {rv_param}") from None
                if since < c.history_floor:
                    self._start_stream()
                    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": f"too old resource version: {since} ({c.history_floor + 1})",
                          "reason": "Expired", "code": 410}
                    self._chunk(json.dumps({"type": "ERROR", "object": st}).encode() + b"\n")
                    return self._end_stream()
            idx = _bisect_history(c.history, since)
        as_table = self._wants_table()
        if as_table:
            initial = [{"type": e["type"], "object": to_table(r, [e["object"]], e["object"]["metadata"].get(
                "resourceVersion"), include_object=self.q.get("includeObject", "Metadata"))} for e in initial]
        self._start_stream()
        try:
            for ev in initial:
                self._chunk(json.dumps(ev, separators=(",", ":")).encode() + b"\n")
            if send_initial:
                bm = {"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version, "metadata": {
                    "resourceVersion": str(since), "annotations": {"k8s.io/initial-events-end": "true"}}}}
                self._chunk(json.dumps(bm).encode() + b"\n")
            pos_rv = since
            while True:
                out: list[dict[str, Any]] = []
                with c.lock:
                    while True:
                        idx = _bisect_history(c.history, pos_rv)
                        if idx < len(c.history) or c.stopping:
                            break
                        remaining = deadline - time.time()
                        if remaining <= 0:
                            break
                        c.cond.wait(min(remaining, 5.0))
                    if c.stopping:
                        break
                    behind = pos_rv < c.history_floor  # this watcher fell behind the kept history
                    for (erv, typ, er, obj, prev) in ([] if behind else c.history[idx:]):
                        pos_rv = erv
                        if er is not sr:
                            continue
                        now_vis = visible(obj) if typ != "DELETED" else False
                        was_vis = visible(prev)
                        if typ == "DELETED":
                            if visible(obj) or was_vis:
                                out.append({"type": "DELETED", "object": c.view(r, obj)})
                        elif typ == "ADDED":
                            if now_vis:
                                out.append({"type": "ADDED", "object": c.view(r, obj)})
                        else:
                            if now_vis and was_vis:
                                out.append({"type": "MODIFIED", "object": c.view(r, obj)})
                            elif now_vis:
                                out.append({"type": "ADDED", "object": c.view(r, obj)})
                            elif was_vis:
                                out.append({"type": "DELETED", "object": c.view(r, obj)})
                    if as_table:
                        out = [{"type": e["type"], "object": to_table(r, [e["object"]], e["object"]["metadata"].get(
                            "resourceVersion"), include_object=self.q.get("includeObject", "Metadata"))}
                            for e in out]
                    payload = [json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in out]
                    if behind:
                        payload = [json.dumps({"type": "ERROR", "object": {
                            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": f"too old resource version: {pos_rv} ({c.history_floor + 1})",
                            "reason": "Expired", "code": 410}}).encode() + b"\n"]
                        deadline = 0.0
                for p in payload:
                    self._chunk(p)
                if time.time() >= deadline:
                    break
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def _bisect_history(history: list, rv: int) -> int:
    lo, hi = 0, len(history)
    while lo < hi:
        mid = (lo + hi) // 2
        if history[mid][0] <= rv:
            lo = mid + 1
        else:
            hi = mid
    return lo

