"""The HTTP plumbing every part of the server's request handler shares: bodies (JSON, YAML, protobuf,
chunked), replies with the Warning headers a request collected, and chunked streams (watch, logs)."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from .server import KubeServer


def query_params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "")


class HandlerBase(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opsbook-kubeapi/1"
    server: KubeServer
    q: dict[str, str]  # the query parameters of the request being handled
    body: bytes

    def log_message(self, format, *args):  # noqa: A002
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

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

