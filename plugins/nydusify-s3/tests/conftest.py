"""`s3_proxy`: a loopback HTTP proxy in front of the kit's moto S3 server that can fail requests.

moto has no fault injection, so the proxy relays every request unchanged (the Host header
included, so SigV4 signatures still verify) and answers the next N requests of a given S3
operation with HTTP 500 or by dropping the connection. It also records the operations it
saw and how many of each were in flight at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.server
import socket
import threading
import urllib.parse
from typing import Any, Iterator

import pytest

from nydusify_core.testing.servers import S3Server

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "content-length"})


@dataclasses.dataclass
class Fault:
    op: str
    count: int = 1
    mode: str = "error"  # or "drop"
    status: int = 500
    code: str = "InternalError"
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.hits >= self.count


def s3_operation(method: str, path: str, query: dict[str, str]) -> str:
    key = path.lstrip("/").partition("/")[2]
    if "uploadId" in query:
        return {"PUT": "UploadPart", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(method, "?")
    if "uploads" in query:
        return "CreateMultipartUpload" if key else "ListMultipartUploads"
    if not key:
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(method, "?")
    return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, "?")


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.ops: list[str] = []
        self.paths: list[str] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._barrier: tuple[str, threading.Barrier, list[int]] | None = None
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.proxy = self  # type: ignore[attr-defined]
        self._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        if self._barrier is not None:
            self._barrier[1].abort()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def inject_failure(self, op: str, **fields: Any) -> Fault:
        fault = Fault(op, **fields)
        with self._lock:
            self._faults.append(fault)
        return fault

    def rendezvous(self, op: str, parties: int, timeout: float = 30.0) -> None:
        """Hold the first `parties` requests of `op` until all are in flight at once."""
        self._barrier = (op, threading.Barrier(parties, timeout=timeout), [parties])

    def peak_concurrency(self, op: str) -> int:
        with self._lock:
            return self._peak.get(op, 0)

    def _enter(self, op: str) -> Fault | None:
        with self._lock:
            self.ops.append(op)
            self._in_flight[op] = self._in_flight.get(op, 0) + 1
            self._peak[op] = max(self._peak.get(op, 0), self._in_flight[op])
            barrier = None
            if self._barrier is not None and self._barrier[0] == op and self._barrier[2][0] > 0:
                self._barrier[2][0] -= 1
                barrier = self._barrier[1]
            fault = next((f for f in self._faults if f.op == op and not f.exhausted), None)
            if fault is not None:
                fault.hits += 1
        if barrier is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return fault

    def _leave(self, op: str) -> None:
        with self._lock:
            self._in_flight[op] -= 1


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        path, _, query = self.path.partition("?")
        op = s3_operation(self.command, path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True)))
        proxy.paths.append(path)
        fault = proxy._enter(op)
        try:
            if fault is not None and fault.mode == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None:
                xml = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{fault.code}</Code><Message>injected</Message></Error>"
                self._reply(fault.status, [("Content-Type", "application/xml")], xml.encode())
                return
            self._forward(body)
        finally:
            proxy._leave(op)

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_HEADERS:
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
            if self.command == "HEAD":
                headers.append(("Content-Length", response.getheader("Content-Length") or "0"))
            self._reply(response.status, headers, data)
        finally:
            conn.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A fresh fault-injecting proxy to `s3_server`; point a client at `s3_proxy.host`."""
    proxy = FaultProxy(s3_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.stop()
