"""The HTTP front: routing of the Kubernetes REST paths, discovery, OpenAPI stubs, watch streaming,
pod logs, and the test-only admin endpoints under /_opsbook/."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import resources as RS
from .errors import ApiError, bad_request, internal, method_not_allowed, not_found
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Cluster, micro_iso, parse_iso
from .tables import to_table

VERSION = {
    "major": "1", "minor": "37", "emulationMajor": "1", "emulationMinor": "37",
    "minCompatibilityMajor": "1", "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0+opsbook", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0",
    "compiler": "gc", "platform": "linux/amd64",
}


def _qs(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "")


class KubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, cluster: Cluster, log_follow_seconds: float = 30.0):
        super().__init__(addr, Handler)
        self.cluster = cluster
        self.log_follow_seconds = log_follow_seconds

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a client went away: normal for watches and kept-alive connections
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opsbook-kubeapi/1"
    server: KubeServer

    def log_message(self, format, *args):  # noqa: A002
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms each
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ------------------------------------------------------------ plumbing

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

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        for w in getattr(self.server.cluster.tl, "warnings", None) or []:
            self.send_header("Warning", '299 - "' + w.replace('"', '\\"') + '"')
        self.server.cluster.tl.warnings = []
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode())

    def _error(self, e: ApiError) -> None:
        self._json(e.code, e.status())

    def _dispatch(self, method: str) -> None:
        self.close_connection = False
        self.server.cluster.tl.warnings = []
        try:
            url = urlsplit(self.path)
            self.q = _qs(url.query)
            self.body = self._read_body()
            path = url.path.rstrip("/") or "/"
            if path.startswith("/_opsbook/"):
                return self._admin(method, path)
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

    # ------------------------------------------------------------ faults

    def _maybe_fault(self, method: str, path: str) -> None:
        f = self.server.cluster.faults
        rate = float(f.get("api_error_rate") or 0)
        if rate <= 0:
            return
        pattern = f.get("paths")
        if pattern:
            if not re.search(pattern, path):
                return
        elif not (path.startswith("/api/") or path.startswith("/apis/")) or _is_discovery(path):
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
                c.faults = {"api_error_rate": 0.0, "paths": None, "methods": None}
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
                             previous=_truthy(self.q.get("previous")) and "previous" in self.q)
            return self._json(200, {"ok": True})
        if parts == ["state"] and method == "GET":
            with c.lock:
                counts = {r.qualified: len(c.data[r]) for r in RS.RESOURCES if c.data[r]}
                return self._json(200, {"resourceVersion": c.rv, "objects": counts, "faults": c.faults,
                                        "nodes": c.node_count, "readyDelay": c.ready_delay})
        if parts and parts[0] == "nodes" and len(parts) == 2 and method == "POST":
            try:
                upd = json.loads(self.body or b"{}")
            except ValueError:
                raise bad_request("body must be JSON") from None
            c.node_overrides[parts[1]] = upd
            return self._json(200, {"ok": True})
        raise ApiError(404, "NotFound", f"no admin endpoint {method} {path}", {})

    # ------------------------------------------------------------ routing

    def _route(self, method: str, path: str) -> None:
        if path in ("/healthz", "/livez", "/readyz"):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self._json(200, VERSION)
        if path in ("/api", "/apis") and _wants_aggregated(self.headers.get("Accept") or ""):
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
                if _truthy(q.get("watch")) and "watch" in q:
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
                return self._json(201, c.bind(ns, name, body, dry_run=dry))
            return self._json(201, c.evict(ns, name, body, dry_run=dry))
        if method == "GET":
            with c.lock:
                obj = c.get(r, ns, name)
                raw = c.raw(r, ns, name)
                if sub == "scale" and raw is not None:
                    obj = c.scale_of(r, raw)
                return self._json(200, self._maybe_table(r, obj, single=True))
        if method == "PUT":
            body = self._body_json()
            if sub == "scale":
                return self._json(200, c.write_scale(r, ns, name, body, dry_run=dry, manager=manager))
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
                                   force=_truthy(q.get("force")) and "force" in q, validation=validation)
            return self._json(201 if created else 200, obj)
        if method == "DELETE":
            if sub:
                raise method_not_allowed()
            opts = self._delete_options()
            obj, code = c.delete(r, ns, name, opts, dry_run=dry or "All" in (opts.get("dryRun") or []))
            return self._json(code, obj)
        raise method_not_allowed()

    def _body_json(self):
        ct = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ct == "application/vnd.kubernetes.protobuf":
            from .proto import ProtoError, decode
            try:
                return decode(self.body)
            except (ProtoError, ValueError, KeyError) as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from None
        if ct in ("application/yaml", "application/apply-patch+yaml"):
            import yaml
            try:
                return yaml.safe_load(self.body)
            except yaml.YAMLError as e:
                raise bad_request(f"error decoding YAML: {e}") from None
        if ct not in ("application/json", "*/*", ""):
            raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                                                        f'accepted media types include: application/json, '
                                                        f'application/yaml (got "{ct}")')
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise bad_request(f"the body of the request was not valid JSON: {e}") from None

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
            opts["orphanDependents"] = _truthy(self.q["orphanDependents"])
        if self.q.get("dryRun") == "All":
            opts["dryRun"] = ["All"]
        return opts

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

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

    # ------------------------------------------------------------ watch

    def _start_stream(self, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _watch(self, r, ns, lm, fm) -> None:
        c = self.server.cluster
        timeout = float(self.q.get("timeoutSeconds") or 1800)
        deadline = time.time() + timeout
        rv_param = self.q.get("resourceVersion") or ""
        send_initial = _truthy(self.q.get("sendInitialEvents")) and "sendInitialEvents" in self.q
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

    # ------------------------------------------------------------ logs

    def _logs(self, ns: str, name: str) -> None:
        c = self.server.cluster
        pods = RS.res("v1", "pods")
        q = self.q
        with c.lock:
            pod = c.raw(pods, ns, name)
            if pod is None:
                raise not_found(pods, name)
            cnames = [x.get("name") for x in (pod.get("spec") or {}).get("containers") or []]
            inames = [x.get("name") for x in (pod.get("spec") or {}).get("initContainers") or []]
            container = q.get("container")
            if not container:
                if len(cnames) != 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(cnames)}]" + (f" or one of the init containers: "
                                                                  f"[{' '.join(inames)}]" if inames else ""))
                container = cnames[0]
            if container not in cnames + inames:
                raise bad_request(f"container {container} is not valid for pod {name}")
            previous = _truthy(q.get("previous")) and "previous" in q
            statuses = {s.get("name"): s for s in ((pod.get("status") or {}).get("containerStatuses") or [])
                        + ((pod.get("status") or {}).get("initContainerStatuses") or [])}
            st = statuses.get(container) or {}
            key = (ns, name, container)
            if previous:
                if key not in c.prev_logs:
                    raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                lines = list(c.prev_logs[key])
            else:
                if key not in c.logs:
                    waiting = (st.get("state") or {}).get("waiting") or {}
                    reason = waiting.get("reason") or "ContainerCreating"
                    msg = {"ImagePullBackOff": "trying and failing to pull image",
                           "ErrImagePull": "trying and failing to pull image"}.get(reason, reason)
                    raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {msg}')
                lines = list(c.logs[key])
        since_cut = None
        if q.get("sinceSeconds"):
            since_cut = time.time() - float(q["sinceSeconds"])
        elif q.get("sinceTime"):
            since_cut = parse_iso(q["sinceTime"])
        ts = _truthy(q.get("timestamps")) and "timestamps" in q
        if since_cut is not None:
            lines = [x for x in lines if x[0] >= since_cut]
        if q.get("tailLines") not in (None, ""):
            n = int(q["tailLines"])
            lines = lines[-n:] if n > 0 else []

        def fmt(entries) -> bytes:
            out = []
            for t, line in entries:
                out.append((_nano(t) + " " + line) if ts else line)
            return ("\n".join(out) + ("\n" if out else "")).encode()

        follow = _truthy(q.get("follow")) and "follow" in q and not previous
        data = fmt(lines)
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        if not follow:
            return self._send(200, data, "text/plain")
        self._start_stream("text/plain")
        try:
            if data:
                self._chunk(data)
            with c.lock:
                seen = len(c.logs.get(key, []))
            deadline = time.time() + self.server.log_follow_seconds
            while time.time() < deadline:
                with c.lock:
                    c.cond.wait(0.5)
                    pod = c.raw(pods, ns, name)
                    cur = c.logs.get(key)
                    if pod is None or cur is None or pod["metadata"]["uid"] != (pod or {}).get("metadata", {}).get(
                            "uid"):
                        break
                    new = cur[seen:]
                    seen = len(cur)
                    phase = (pod.get("status") or {}).get("phase")
                if new:
                    self._chunk(fmt(new))
                if phase in ("Succeeded", "Failed"):
                    break
            self._end_stream()
        except OSError:
            self.close_connection = True


def _nano(t: float) -> str:
    s = micro_iso(t)  # 2026-01-01T00:00:00.123456Z
    return s[:-1] + "000Z"


def _bisect_history(history: list, rv: int) -> int:
    lo, hi = 0, len(history)
    while lo < hi:
        mid = (lo + hi) // 2
        if history[mid][0] <= rv:
            lo = mid + 1
        else:
            hi = mid
    return lo


AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def _wants_aggregated(accept: str) -> bool:
    """The client lists the v2 aggregated discovery type among the types it accepts."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2" and \
                params.get("as") == "APIGroupDiscoveryList":
            return True
    return False


def _is_discovery(path: str) -> bool:
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        return len(parts) <= 2
    if parts[0] == "apis":
        return len(parts) <= 3
    return True


def _manager_from_agent(agent: str) -> str:
    m = agent.split("/", 1)[0].strip()
    return m[:128] or "unknown"


# ---------------------------------------------------------------- OpenAPI v3 stubs

def _gv_path(r: RS.Resource) -> str:
    return f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}"


def openapi_v3_index() -> dict:
    paths = {}
    for r in RS.RESOURCES:
        gvp = _gv_path(r)
        paths[gvp] = {"serverRelativeURL": f"/openapi/v3/{gvp}?hash=opsbook{abs(hash(gvp)) % 10**8}"}
    return {"paths": paths}


def openapi_v3_doc(gv_path: str) -> dict | None:
    """A minimal OpenAPI v3 document per group-version: one PATCH operation per kind, carrying the
    x-kubernetes-group-version-kind extension and the fieldValidation / dryRun parameters, so that kubectl
    knows the server validates fields and does dry runs. No schemas (see Known gaps)."""
    rs = [r for r in RS.RESOURCES if _gv_path(r) == gv_path]
    if not rs:
        return None
    paths = {}
    for r in rs:
        base = "/" + gv_path + ("/namespaces/{namespace}" if r.namespaced else "") + f"/{r.plural}/{{name}}"
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
        paths[base] = {
            "patch": {"operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
                      "x-kubernetes-group-version-kind": gvk, "parameters": params,
                      "responses": {"200": {"description": "OK"}}},
            "put": {"operationId": f"replace{r.kind}", "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk, "parameters": params,
                    "responses": {"200": {"description": "OK"}}},
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (opsbook test server)", "version": "v1.37.0"},
            "paths": paths, "components": {"schemas": {}}}


def serve(cluster: Cluster, port: int = 0, host: str = "127.0.0.1", log_follow_seconds: float = 30.0):
    srv = KubeServer((host, port), cluster, log_follow_seconds)
    t = threading.Thread(target=srv.serve_forever, name="kubeapi-http", daemon=True)
    t.start()
    return srv
