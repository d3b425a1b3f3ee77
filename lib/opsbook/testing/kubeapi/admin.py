"""The test-only admin endpoints under ``/_opsbook/`` (faults, logs, node readiness, the legacy token
controller, state) and the injected API faults, so that tests can make the API misbehave the way a
real one sometimes does."""

from __future__ import annotations

import json
import random
import re
from urllib.parse import unquote

from . import resources as RS
from .controllers.tokens import token_settings
from .discovery import is_discovery
from .errors import ApiError, bad_request, internal, not_found
from .handler import HandlerBase, truthy
from .store import NO_FAULTS


class AdminHandler(HandlerBase):
    def _maybe_fault(self, method: str, path: str) -> None:
        f = self.server.cluster.faults
        rate = float(f.get("api_error_rate") or 0)
        if rate <= 0:
            return
        pattern = f.get("paths")
        if pattern:
            if not re.search(pattern, path):
                return
        elif not (path.startswith("/api/") or path.startswith("/apis/")) or is_discovery(path):
            return
        methods = f.get("methods")
        if methods and method not in methods:
            return
        if random.random() < rate:
            code = int(f.get("error_code") or 500)
            if code == 429:
                raise ApiError(429, "TooManyRequests", "the server has received too many requests and has asked "
                                                      "us to try again later", {"retryAfterSeconds": 1})
            if code == 503:
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            raise internal("injected fault (opsbook test server api_error_rate)")

    # ------------------------------------------------------------ admin

    def _admin(self, method: str, path: str) -> None:
        c = self.server.cluster
        parts = [unquote(p) for p in path.split("/")[2:]]
        if parts == ["faults"]:
            if method == "GET":
                return self._json(200, c.faults)
            if method == "DELETE":
                c.faults = dict(NO_FAULTS)
                return self._json(200, c.faults)
            if method in ("POST", "PUT", "PATCH"):
                try:
                    upd = json.loads(self.body or b"{}")
                except ValueError:
                    raise bad_request("faults body must be JSON") from None
                if not isinstance(upd, dict):
                    raise bad_request("faults body must be a JSON object")
                new = dict(c.faults)
                new.update(upd)
                c.faults = new
                return self._json(200, c.faults)
        if parts and parts[0] == "logs" and len(parts) == 4 and method == "POST":
            _, ns, pod, container = parts
            with c.lock:
                if c.raw(RS.res("v1", "pods"), ns, pod) is None:
                    raise not_found(RS.res("v1", "pods"), pod)
                c.append_log(ns, pod, container, self.body.decode("utf-8", "replace"),
                             previous=truthy(self.q.get("previous")) and "previous" in self.q)
            return self._json(200, {"ok": True})
        if parts == ["state"] and method == "GET":
            with c.lock:
                counts = {r.qualified: len(c.data[r]) for r in RS.RESOURCES if c.data[r]}
                return self._json(200, {"resourceVersion": c.rv, "objects": counts, "faults": c.faults,
                                        "nodes": c.node_count, "readyDelay": c.ready_delay,
                                        "tokenController": token_settings(c).as_dict()})
        if parts == ["token-controller"]:
            return self._token_controller(method)
        if parts and parts[0] == "nodes" and len(parts) == 2 and method == "POST":
            try:
                upd = json.loads(self.body or b"{}")
            except ValueError:
                raise bad_request("body must be JSON") from None
            c.node_overrides[parts[1]] = upd
            return self._json(200, {"ok": True})
        raise ApiError(404, "NotFound", f"no admin endpoint {method} {path}", {})

    def _token_controller(self, method: str) -> None:
        """GET the legacy token controller's settings; POST ``{"enabled": bool, "namespaces": [...]}``
        (no namespaces: everywhere) to switch it on or off; DELETE: off everywhere."""
        c = self.server.cluster
        st = token_settings(c)
        if method in ("POST", "PUT", "DELETE"):
            try:
                upd = json.loads(self.body or b"{}") if method != "DELETE" else {"enabled": False}
            except ValueError:
                raise bad_request("token-controller body must be JSON") from None
            namespaces = upd.get("namespaces") if isinstance(upd, dict) else None
            if not isinstance(upd, dict) or not isinstance(upd.get("enabled"), bool) or not (
                    namespaces is None or isinstance(namespaces, list)):
                raise bad_request('token-controller body: {"enabled": true|false, "namespaces": [names] or null}')
            with c.lock:
                st.update(upd["enabled"], [str(n) for n in namespaces] if namespaces is not None else None)
                c.cond.notify_all()  # the controllers act on their next tick, not after a pause
        elif method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"no admin endpoint {method} /_opsbook/token-controller", {})
        return self._json(200, st.as_dict())
