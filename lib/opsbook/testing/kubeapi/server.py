"""The HTTP front: routing of the Kubernetes REST paths to the store and the subresources. Discovery,
watches, pod logs and the test-only admin endpoints are the modules of the same names."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from . import authz, subresources
from . import resources as RS
from .admin import AdminHandler
from .discovery import AGGREGATED_CT, VERSION, openapi_v3_doc, openapi_v3_index, wants_aggregated
from .errors import ApiError, bad_request, internal, method_not_allowed
from .handler import query_params, truthy
from .logs import LogsHandler
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Cluster
from .tables import to_table
from .watch import WatchHandler


class KubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, cluster: Cluster, log_follow_seconds: float = 30.0,
                 tls: ssl.SSLContext | None = None):
        super().__init__(addr, Handler)
        self.cluster = cluster
        self.log_follow_seconds = log_follow_seconds
        self.tls = tls

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            # the handshake happens on the first read, in the request's own thread: a client that
            # connects and says nothing must not hold up the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # a client went away (normal for watches and kept-alive connections) or refused our CA
        super().handle_error(request, client_address)


class Handler(AdminHandler, WatchHandler, LogsHandler):
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_HEAD(self):
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        self.close_connection = False
        self.server.cluster.tl.warnings = []
        try:
            url = urlsplit(self.path)
            self.q = query_params(url.query)
            self.body = self._read_body()
            path = url.path.rstrip("/") or "/"
            if path.startswith("/_opsbook/"):
                return self._admin(method, path)
            authz.guard(self, method, url.path or "/")  # 401/403 as a real API server (RBAC)
            self._maybe_fault(method, path)
            self._route(method, path)
        except ApiError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - a bug in the server: say so as a real 500
            import traceback
            traceback.print_exc()
            try:
                self._error(internal(f"{type(e).__name__}: {e}"))
            except Exception:
                self.close_connection = True

    # ------------------------------------------------------------ routing

    def _route(self, method: str, path: str) -> None:
        if path in ("/healthz", "/livez", "/readyz"):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self._json(200, VERSION)
        if path in ("/api", "/apis") and wants_aggregated(self.headers.get("Accept") or ""):
            body = json.dumps(RS.aggregated_discovery(legacy=path == "/api"), separators=(",", ":")).encode()
            return self._send(200, body, AGGREGATED_CT)
        if path == "/api":
            return self._json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.headers.get("Host") or "127.0.0.1"}]})
        if path == "/apis":
            return self._json(200, RS.api_group_list())
        if path == "/openapi/v3":
            return self._json(200, openapi_v3_index())
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/"):]
            doc = openapi_v3_doc(gv)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return self._json(200, doc)
        if path == "/openapi/v2" or path == "/swagger.json":
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        parts = [unquote(p) for p in path.split("/")[1:]]
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                gvs = RS.group_versions().get(parts[1])
                if not gvs:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
                versions = [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in gvs]
                return self._json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                                        "versions": versions, "preferredVersion": versions[0]})
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        known = (group == "" and version == "v1") or version in RS.group_versions().get(group, [])
        if not known:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not rest:
            return self._json(200, RS.api_resource_list(group, version))
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and group == "" and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        elif rest[0] == "namespaces" and len(rest) >= 3 and group != "":
            ns, rest = rest[1], rest[2:]
        r = RS.lookup(group, version, rest[0])
        if r is None or (ns is not None and not r.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub == "token" and r.plural == "serviceaccounts" and not r.group and len(rest) == 3 and ns:
            if method != "POST":
                raise method_not_allowed()
            return self._json(201, subresources.token_request(self.server.cluster, ns, name or "", self._body_json(),
                                                              dry_run=self.q.get("dryRun") == "All"))
        if sub in ("exec", "attach", "portforward", "proxy", "ephemeralcontainers", "resize", "token") and \
                len(rest) == 3:
            raise ApiError(405, "MethodNotAllowed", f"{r.plural}/{sub} is not supported by the opsbook Kubernetes "
                                                    f"API test server (see its README, Known gaps)", {})
        if len(rest) > 3 or (sub and sub not in r.subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not r.namespaced:
            ns = ""
        self._resource(method, r, ns, name, sub)

    # ------------------------------------------------------------ resources

    def _resource(self, method: str, r: RS.Resource, ns: str | None, name: str | None, sub: str | None) -> None:
        c = self.server.cluster
        q = self.q
        dry = q.get("dryRun") == "All"
        validation = q.get("fieldValidation") or "Warn"
        if r.plural == "endpoints" and not r.group:
            c.tl.warnings.append("v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice")
        manager = q.get("fieldManager") or _manager_from_agent(self.headers.get("User-Agent") or "")
        if name is None:
            if method == "GET":
                try:
                    lm = parse_label_selector(q.get("labelSelector"))
                    fm = parse_field_selector(q.get("fieldSelector"), r.plural)
                except SelectorError as e:
                    raise bad_request(str(e)) from None
                if truthy(q.get("watch")) and "watch" in q:
                    return self._watch(r, ns, lm, fm)
                if "list" not in r.verbs:
                    raise method_not_allowed()
                return self._list(r, ns, lm, fm)
            if method == "POST":
                if ns is None and r.namespaced:
                    raise method_not_allowed()
                if "create" not in r.verbs:
                    raise method_not_allowed()
                body = self._body_json()
                obj = c.create(r, ns or "", body, dry_run=dry, manager=manager, validation=validation)
                return self._json(201, obj)
            if method == "DELETE":
                if "deletecollection" not in r.verbs:
                    raise method_not_allowed()
                try:
                    lm = parse_label_selector(q.get("labelSelector"))
                    fm = parse_field_selector(q.get("fieldSelector"), r.plural)
                except SelectorError as e:
                    raise bad_request(str(e)) from None
                opts = self._delete_options()
                items = c.delete_collection(r, ns, lm, fm, opts, dry_run=dry or "All" in (opts.get("dryRun") or []))
                return self._json(200, {"kind": r.list_kind, "apiVersion": r.api_version,
                                        "metadata": {"resourceVersion": str(c.rv)}, "items": items})
            raise method_not_allowed()
        if ns is None and r.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        ns = ns or ""
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return self._logs(ns, name)
        if sub in ("binding", "eviction"):
            if method != "POST":
                raise method_not_allowed()
            body = self._body_json() or {}
            if sub == "binding":
                return self._json(201, subresources.bind(c, ns, name, body, dry_run=dry))
            return self._json(201, subresources.evict(c, ns, name, body, dry_run=dry))
        if method == "GET":
            with c.lock:
                obj = c.get(r, ns, name)
                raw = c.raw(r, ns, name)
                if sub == "scale" and raw is not None:
                    obj = subresources.scale_of(r, raw)
                return self._json(200, self._maybe_table(r, obj, single=True))
        if method == "PUT":
            body = self._body_json()
            if sub == "scale":
                return self._json(200, subresources.write_scale(c, r, ns, name, body, dry_run=dry, manager=manager))
            if sub == "finalize":
                with c.lock:
                    cur = c.get(r, ns, name)
                    new = json.loads(json.dumps(cur))
                    new.setdefault("spec", {})["finalizers"] = (body.get("spec") or {}).get("finalizers") or []
                    new["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get("resourceVersion")
                    return self._json(200, c.update(r, ns, name, new, dry_run=dry, internal=True))
            return self._json(200, c.update(r, ns, name, body, subresource=sub, dry_run=dry, manager=manager,
                                            validation=validation))
        if method == "PATCH":
            ct = self.headers.get("Content-Type") or ""
            obj, created = c.patch(r, ns, name, ct, self.body, subresource=sub, dry_run=dry,
                                   manager=q.get("fieldManager") or (None if "apply-patch" in ct else manager),
                                   force=truthy(q.get("force")) and "force" in q, validation=validation)
            return self._json(201 if created else 200, obj)
        if method == "DELETE":
            if sub:
                raise method_not_allowed()
            opts = self._delete_options()
            obj, code = c.delete(r, ns, name, opts, dry_run=dry or "All" in (opts.get("dryRun") or []))
            return self._json(code, obj)
        raise method_not_allowed()

    def _delete_options(self) -> dict:
        opts: dict[str, Any] = {}
        if self.body:
            try:
                opts = self._body_json() or {}
            except ApiError:
                raise bad_request("DeleteOptions must be JSON") from None
        for k in ("propagationPolicy", "gracePeriodSeconds"):
            if k in self.q:
                opts[k] = self.q[k]
        if "orphanDependents" in self.q:
            opts["orphanDependents"] = truthy(self.q["orphanDependents"])
        if self.q.get("dryRun") == "All":
            opts["dryRun"] = ["All"]
        return opts

    def _maybe_table(self, r, obj, single=False):
        if self._wants_table():
            items = [obj] if single else obj["items"]
            return to_table(r, items, obj.get("metadata", {}).get("resourceVersion") if not single else None,
                            include_object=self.q.get("includeObject", "Metadata"))
        return obj

    def _list(self, r, ns, lm, fm) -> None:
        c = self.server.cluster
        items, rv = c.list(r, ns, lm, fm)
        meta: dict[str, Any] = {"resourceVersion": rv}
        limit = int(self.q.get("limit") or 0)
        start = 0
        if self.q.get("continue"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(self.q["continue"]))["o"])
            except Exception:
                raise bad_request("continue key is not valid") from None
        if limit > 0:
            page = items[start:start + limit]
            if start + limit < len(items):
                meta["continue"] = base64.urlsafe_b64encode(json.dumps({"o": start + limit}).encode()).decode()
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        elif start:
            items = items[start:]
        body = {"kind": r.list_kind, "apiVersion": r.api_version, "metadata": meta, "items": items}
        if self._wants_table():
            t = to_table(r, items, rv, include_object=self.q.get("includeObject", "Metadata"))
            if "continue" in meta:
                t["metadata"]["continue"] = meta["continue"]
            return self._json(200, t)
        # list items carry no kind/apiVersion in a real List
        body["items"] = [{k: v for k, v in it.items() if k not in ("kind", "apiVersion")} for it in items]
        data = json.dumps(body, separators=(",", ":")).encode()
        self._send(200, data)


def _manager_from_agent(agent: str) -> str:
    m = agent.split("/", 1)[0].strip()
    return m[:128] or "unknown"


def serve(cluster: Cluster, port: int = 0, host: str = "127.0.0.1", log_follow_seconds: float = 30.0,
          tls: ssl.SSLContext | None = None):
    srv = KubeServer((host, port), cluster, log_follow_seconds, tls)
    t = threading.Thread(target=srv.serve_forever, name="kubeapi-http", daemon=True)
    t.start()
    return srv
