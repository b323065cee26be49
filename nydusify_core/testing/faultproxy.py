"""A fault-injecting HTTP proxy on loopback, for testing clients' retries.

`FaultProxy(upstream)` forwards every request to a plain-HTTP server (`host:port`, e.g. a
kit registry) and, for a bounded number of matching requests, injects a fault instead:
an error status (optionally with `Retry-After`), a connection closed before any answer,
or a response whose body is cut off halfway. It records every request it saw. It also works as a forward proxy for plain-HTTP
URLs (`HTTP_PROXY=http://<proxy.host>`): absolute-form requests go to `upstream` too.

    with FaultProxy(registry_plain.host) as proxy:
        proxy.fail(503, times=2, method="GET", path="/blobs/")
        ...  # point the client at proxy.host
        assert proxy.count("GET", "/blobs/") == 3
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "SeenRequest"]

LOOPBACK = "127.0.0.1"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"})
UPSTREAM_TIMEOUT = 60.0


@dataclass
class Fault:
    """Inject `kind` into the next `times` requests matching `method` and `path` (a regex
    searched in the request path+query; None matches all)."""

    kind: str  # "status", "drop" (close without answering), "drop-body" (cut the body)
    times: int
    status: int = 500
    retry_after: str | None = None
    method: str | None = None
    path: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and (self.method is None or self.method == method)
            and (self.path is None or re.search(self.path, path) is not None)
        )


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    fault: str = ""  # the fault injected into it, "" when forwarded untouched
    absolute_form: bool = False  # sent as to a forward proxy (`GET http://host/path`)


class FaultProxy:
    """A threaded proxy on 127.0.0.1; start with `start()` or a `with` block."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def host(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        server = ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ---

    def fail(self, status: int, times: int = 1, *, method: str | None = None, path: str | None = None, retry_after: str | None = None) -> Fault:
        return self._add(Fault("status", times, status=status, retry_after=retry_after, method=method, path=path))

    def drop(self, times: int = 1, *, method: str | None = None, path: str | None = None) -> Fault:
        """Read the request, then close the connection without answering."""
        return self._add(Fault("drop", times, method=method, path=path))

    def drop_body(self, times: int = 1, *, method: str | None = None, path: str | None = None) -> Fault:
        """Forward the request, send the upstream headers and half the body, then close."""
        return self._add(Fault("drop-body", times, method=method, path=path))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for r in self.seen if (method is None or r.method == method) and (path is None or re.search(path, r.path))
            )

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self.seen.append(request)


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            absolute = self.path.startswith(("http://", "https://"))
            if absolute:  # forward-proxy form: keep only path and query
                split = urlsplit(self.path)
                self.path = split.path + (f"?{split.query}" if split.query else "")
            fault = proxy._take(self.command, self.path)
            headers = {k: v for k, v in self.headers.items()}
            proxy._record(SeenRequest(self.command, self.path, headers, fault.kind if fault else "", absolute))
            if fault is not None and fault.kind == "status":
                payload = b'{"errors":[{"code":"INJECTED","message":"fault injected by the test proxy"}]}'
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if fault.retry_after is not None:
                    self.send_header("Retry-After", fault.retry_after)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            if fault is not None and fault.kind == "drop":
                self._abort()
                return
            status, headers, data = self._forward(body)
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            declared = next((v for k, v in headers if k.lower() == "content-length"), None)
            if self.command == "HEAD" and declared is not None:
                self.send_header("Content-Length", declared)
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is not None and fault.kind == "drop-body":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._abort()
                return
            self.wfile.write(data)

        def _abort(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(proxy.upstream, timeout=UPSTREAM_TIMEOUT)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "proxy-authorization"}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT", "PATCH") else None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            finally:
                conn.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

    return Handler
