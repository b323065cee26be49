"""An Aliyun OSS-protocol server on loopback, for testing the `oss` backend with the real SDK.

It implements what oss2 2.19 sends for objects, multipart uploads, listings and buckets,
checks every request's OSS V1 signature (so a wrong secret fails as it would on OSS), keeps
objects as files in a temporary directory (each written whole, then renamed), returns
`x-oss-hash-crc64ecma` like OSS does, and can be told to fail the next N matching requests
(HTTP 500 or a dropped connection) so retry and abort paths can be tested.

Addressing is path-style (`/<bucket>/<key>`), which oss2 uses for an IP endpoint; `/` in
keys may come percent-encoded. CRC-64/ECMA comes from `crcmod` (a dependency of oss2),
imported only when a server starts.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import hashlib
import hmac
import http.server
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

__all__ = ["OssServer", "OssFault", "OssRequest", "oss_server", "oss_bucket", "oss_backend_config", "crc64_ecma"]

MIN_PART_SIZE = 100 * 1024  # OSS rejects smaller parts, except the last one
MAX_PART_NUMBER = 10000
MAX_XML_BODY = 4 << 20
COPY_BLOCK = 1 << 20
STORAGE_CLASS = "Standard"
OWNER_ID = "1234567890"

# Query parameters that are part of the V1 canonicalized resource (the ones oss2 signs).
SUBRESOURCES = frozenset(
    """acl uploads location cors logging website referer lifecycle delete append tagging
    objectMeta uploadId partNumber security-token position img style styleName replication
    replicationProgress replicationLocation cname bucketInfo comp qos live status vod startTime
    endTime symlink x-oss-process response-content-type response-content-language
    response-expires response-cache-control response-content-disposition
    response-content-encoding udf udfName udfImage udfId udfImageDesc udfApplication
    udfApplicationLog restore callback callback-var policy stat encryption versions versioning
    versionId objectInfo requestPayment x-oss-request-payer sequential inventory inventoryId
    continuation-token asyncFetch worm wormId wormExtend x-oss-traffic-limit qosInfo
    transferAcceleration metaQuery resourceGroup""".split()
)

_CRC64_POLY = 0x142F0E1EBA9EA3693
_CRC64_XOROUT = 0xFFFFFFFFFFFFFFFF


def crc64_ecma(init: bytes = b"") -> Any:
    """A CRC-64/ECMA (as in `x-oss-hash-crc64ecma`) accumulator with `update` and `crcValue`."""
    import crcmod  # lazily: only servers need it, and crcmod comes with oss2

    crc = crcmod.Crc(_CRC64_POLY, initCrc=0, rev=True, xorOut=_CRC64_XOROUT)
    if init:
        crc.update(init)
    return crc


class _OssError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class _Drop(Exception):
    """Close the connection without answering."""


@dataclasses.dataclass
class OssFault:
    """The next `count` requests matching every given filter fail.

    `mode` "error" answers `status` with an OSS error document; "drop" reads the request
    and closes the connection without a response. `hits` counts failures served so far.
    """

    op: str | None = None
    method: str | None = None
    bucket: str | None = None
    key: str | None = None
    count: int = 1
    mode: str = "error"
    status: int = 500
    code: str = "InternalError"
    hits: int = 0

    def matches(self, req: "OssRequest") -> bool:
        return (
            self.hits < self.count
            and (self.op is None or self.op == req.op)
            and (self.method is None or self.method == req.method)
            and (self.bucket is None or self.bucket == req.bucket)
            and (self.key is None or self.key in req.key)
        )

    @property
    def exhausted(self) -> bool:
        return self.hits >= self.count


@dataclasses.dataclass
class OssRequest:
    """One request as the server understood it; `status` is 0 for a dropped connection."""

    method: str
    op: str
    bucket: str
    key: str
    query: dict[str, str]
    status: int = 0


@dataclasses.dataclass
class _Object:
    path: Path
    size: int
    etag: str
    crc: int
    content_type: str
    mtime: float
    multipart: bool
    meta: dict[str, str]


@dataclasses.dataclass
class _Part:
    path: Path
    size: int
    etag: str
    crc: int
    mtime: float


@dataclasses.dataclass
class _Upload:
    bucket: str
    key: str
    upload_id: str
    initiated: float
    content_type: str
    meta: dict[str, str]
    parts: dict[int, _Part] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Bucket:
    name: str
    created: float
    objects: dict[str, _Object] = dataclasses.field(default_factory=dict)


def _http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def _iso8601(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def _quoted_etag(etag: str) -> str:
    return f'"{etag}"'


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


class OssServer:
    """A threaded OSS-protocol server on 127.0.0.1; `start()` it, `stop()` it.

    Credentials are `access_key_id` / `access_key_secret` (random unless given); requests
    without a valid V1 signature get `403`. `endpoint` is `http://127.0.0.1:<port>`.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        access_key_id: str = "nydusify-oss-test",
        access_key_secret: str | None = None,
        allow_anonymous: bool = False,
    ) -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="oss-server-"))
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret or secrets.token_urlsafe(24)
        self.allow_anonymous = allow_anonymous
        self.omit_crc = False  # True: answer like an OSS that sends no x-oss-hash-crc64ecma
        self.requests: list[OssRequest] = []
        self._buckets: dict[str, _Bucket] = {}
        self._uploads: dict[str, _Upload] = {}
        self._faults: list[OssFault] = []
        self._lock = threading.RLock()
        self._in_flight: dict[tuple[str | None, str], int] = {}
        self._peak: dict[tuple[str | None, str], int] = {}
        self._barriers: dict[str, tuple[threading.Barrier, list[int]]] = {}
        self._barrier_timeout = 0.0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> "OssServer":
        crc64_ecma()  # fail early and clearly when crcmod is missing
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.oss = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oss-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._abort_barriers()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "OssServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- test helpers ---------------------------------------------------------------

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name when none is given) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._buckets.setdefault(name, _Bucket(name, time.time()))
        return name

    def object_keys(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets[bucket].objects)

    def object_data(self, bucket: str, key: str) -> bytes:
        with self._lock:
            obj = self._buckets[bucket].objects[key]
        return obj.path.read_bytes()

    def pending_uploads(self, bucket: str | None = None) -> list[tuple[str, str, str]]:
        """(bucket, key, upload id) of every multipart upload neither completed nor aborted."""
        with self._lock:
            return sorted((u.bucket, u.key, u.upload_id) for u in self._uploads.values() if bucket in (None, u.bucket))

    def inject_failure(self, **fields: Any) -> OssFault:
        """Fail the next matching requests; see `OssFault` for the fields."""
        fault = OssFault(**fields)
        if fault.mode not in ("error", "drop"):
            raise ValueError(f"unknown fault mode {fault.mode!r}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._abort_barriers()

    def _abort_barriers(self) -> None:
        with self._lock:
            barriers = [barrier for barrier, _ in self._barriers.values()]
            self._barriers.clear()
        for barrier in barriers:
            barrier.abort()

    def rendezvous(self, op: str, parties: int, timeout: float = 30.0) -> None:
        """Hold the first `parties` requests of `op` until all of them are in flight at once.

        With a parallel client they meet and `peak_concurrency(op)` reaches `parties`; with
        a sequential one they are released after `timeout` and the peak stays at 1.
        """
        with self._lock:
            self._barriers[op] = (threading.Barrier(parties), [parties])
            self._barrier_timeout = timeout

    def peak_concurrency(self, op: str, bucket: str | None = None) -> int:
        """Most requests of `op` (on `bucket`, or on any) ever in flight at once."""
        with self._lock:
            return self._peak.get((bucket, op), 0)

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self._peak.clear()

    def ops(self, bucket: str | None = None) -> list[str]:
        """The operations served so far (in order), optionally for one bucket."""
        with self._lock:
            return [r.op for r in self.requests if bucket in (None, r.bucket)]

    # --- request plumbing (called by the handler) -------------------------------------

    def _take_fault(self, req: OssRequest) -> OssFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(req):
                    fault.hits += 1
                    return fault
        return None

    @contextlib.contextmanager
    def _track(self, op: str, bucket: str) -> Iterator[None]:
        counters = ((None, op), (bucket, op))
        with self._lock:
            for counter in counters:
                self._in_flight[counter] = self._in_flight.get(counter, 0) + 1
                self._peak[counter] = max(self._peak.get(counter, 0), self._in_flight[counter])
            barrier, entry = self._barriers.get(op, (None, [0]))
            if barrier is not None and entry[0] > 0:
                entry[0] -= 1
                if entry[0] == 0:
                    del self._barriers[op]
            else:
                barrier = None
        try:
            if barrier is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(self._barrier_timeout)
            yield
        finally:
            with self._lock:
                for counter in counters:
                    self._in_flight[counter] -= 1

    def _bucket(self, name: str) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            raise _OssError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=name)
        return bucket

    def _object(self, bucket: str, key: str) -> _Object:
        with self._lock:
            obj = self._bucket(bucket).objects.get(key)
        if obj is None:
            raise _OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return obj

    def _upload(self, bucket: str, key: str, upload_id: str) -> _Upload:
        with self._lock:
            self._bucket(bucket)
            upload = self._uploads.get(upload_id)
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise _OssError(404, "NoSuchUpload", "The specified upload does not exist.", UploadId=upload_id)
        return upload

    def _store_object(self, bucket: str, key: str, obj: _Object) -> None:
        with self._lock:
            objects = self._bucket(bucket).objects
            old = objects.get(key)
            objects[key] = obj
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                old.path.unlink()

    def _new_object_path(self) -> Path:
        return self.root / "objects" / uuid.uuid4().hex

    def _expected_signature(self, string_to_sign: str) -> str:
        mac = hmac.new(self.access_key_secret.encode(), string_to_sign.encode("utf-8"), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    oss: OssServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up is normal in fault tests; nothing to report


def _string_to_sign(method: str, headers: Any, date: str, bucket: str, key: str, query: dict[str, str]) -> str:
    oss_headers = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-oss-"))
    canon_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    resource = f"/{bucket}/{key}" if bucket else "/"
    sub = sorted((k, v) for k, v in query.items() if k in SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    return "\n".join([method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""), date, canon_headers + resource])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    sys_version = ""
    timeout = 60
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # --- framing --------------------------------------------------------------------

    def _body_chunks(self) -> Iterator[bytes]:
        self._body_consumed = True  # at most once: a second read would wait for bytes never sent
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    block = self.rfile.read(min(remaining, COPY_BLOCK))
                    if not block:
                        raise _Drop()
                    remaining -= len(block)
                    yield block
                self.rfile.readline(8)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                block = self.rfile.read(min(remaining, COPY_BLOCK))
                if not block:
                    raise _Drop()
                remaining -= len(block)
                yield block

    def _read_small_body(self) -> bytes:
        out = bytearray()
        for block in self._body_chunks():
            out += block
            if len(out) > MAX_XML_BODY:
                raise _OssError(400, "InvalidArgument", "request body too large")
        return bytes(out)

    def _drain(self) -> None:
        if not self._body_consumed:
            for _ in self._body_chunks():
                pass

    def _store_body(self, dest_dir: Path) -> tuple[Path, int, str, int]:
        """Stream the body to a new file in `dest_dir`: (path, size, md5 hex upper, crc64)."""
        md5, crc, size = hashlib.md5(), crc64_ecma(), 0
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in self._body_chunks():
                    out.write(block)
                    md5.update(block)
                    crc.update(block)
                    size += len(block)
            expected_md5 = self.headers.get("Content-MD5")
            if expected_md5 and base64.b64encode(md5.digest()).decode() != expected_md5:
                raise _OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
            final = Path(tmp).with_name(uuid.uuid4().hex)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return final, size, md5.hexdigest().upper(), crc.crcValue

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("x-oss-request-id", self._request_id)
        self.send_header("Date", _http_date(time.time()))
        for k, v in (headers or {}).items():
            if k == "x-oss-hash-crc64ecma" and self.server.oss.omit_crc:
                continue
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        if body and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/xml")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self._record.status = status

    def _send_error(self, err: _OssError) -> None:
        root = ET.Element("Error")
        _sub(root, "Code", err.code)
        _sub(root, "Message", err.message)
        _sub(root, "RequestId", self._request_id)
        _sub(root, "HostId", "127.0.0.1")
        for k, v in err.extra.items():
            _sub(root, k, v)
        body = _xml(root)
        headers = {"x-oss-ec": "0000-00000000"}
        if self.command == "HEAD":
            headers["x-oss-err"] = base64.b64encode(body).decode()
            headers["Content-Length"] = "0"
            body = b""
        if not self._body_consumed:  # read it, so the client gets to see the answer
            self._drain()
        self._send(err.status, body, headers)

    # --- dispatch -------------------------------------------------------------------

    def _dispatch(self) -> None:
        oss = self.server.oss
        self._request_id = secrets.token_hex(12).upper()
        self._body_consumed = self.command in ("GET", "HEAD")
        raw_path, _, raw_query = self.path.partition("?")
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        parts = raw_path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        op = _operation(self.command, bucket, key, query)
        self._record = OssRequest(self.command, op, bucket, key, query)
        with oss._lock:
            oss.requests.append(self._record)
        try:
            with oss._track(op, bucket):
                fault = oss._take_fault(self._record)
                if fault is not None:
                    self._drain()
                    if fault.mode == "drop":
                        raise _Drop()
                    raise _OssError(fault.status, fault.code, "injected failure")
                self._authenticate(bucket, key, query)
                handler: Callable[[str, str, dict[str, str]], None] = getattr(self, f"_op_{op}")
                handler(bucket, key, query)
        except _Drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except _OssError as err:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a server bug: answer 500 rather than hang the client
            self._send_error(_OssError(500, "InternalError", f"test server error: {type(exc).__name__}: {exc}"))

    def _authenticate(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        auth = self.headers.get("Authorization")
        if auth is None and "Signature" in query:
            key_id, provided = query.get("OSSAccessKeyId", ""), query["Signature"]
            date = query.get("Expires", "")
            if not date.isdigit() or int(date) < time.time():
                raise _OssError(403, "AccessDenied", "Request has expired.")
            signed_query = {k: v for k, v in query.items() if k not in ("OSSAccessKeyId", "Signature", "Expires")}
        elif auth is None:
            if oss.allow_anonymous:
                return
            raise _OssError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
        else:
            if not auth.startswith("OSS ") or ":" not in auth:
                raise _OssError(400, "InvalidArgument", "Authorization header is invalid.")
            key_id, _, provided = auth[4:].partition(":")
            date = self.headers.get("x-oss-date") or self.headers.get("Date") or ""
            signed_query = query
        if key_id != oss.access_key_id:
            raise _OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.", OSSAccessKeyId=key_id)
        to_sign = _string_to_sign(self.command, self.headers, date, bucket, key, signed_query)
        if not hmac.compare_digest(oss._expected_signature(to_sign), provided):
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
                OSSAccessKeyId=key_id,
                SignatureProvided=provided,
                StringToSign=to_sign,
            )

    # --- service and buckets ---------------------------------------------------------

    def _op_ListBuckets(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        root = ET.Element("ListAllMyBucketsResult")
        owner = _sub(root, "Owner")
        _sub(owner, "ID", OWNER_ID)
        _sub(owner, "DisplayName", OWNER_ID)
        buckets = _sub(root, "Buckets")
        with oss._lock:
            items = sorted(oss._buckets.values(), key=lambda b: b.name)
        for b in items:
            node = _sub(buckets, "Bucket")
            _sub(node, "Name", b.name)
            _sub(node, "Location", "oss-test")
            _sub(node, "CreationDate", _iso8601(b.created))
            _sub(node, "ExtranetEndpoint", "127.0.0.1")
            _sub(node, "IntranetEndpoint", "127.0.0.1")
            _sub(node, "StorageClass", STORAGE_CLASS)
        self._send(200, _xml(root))

    def _op_PutBucket(self, bucket: str, key: str, query: dict[str, str]) -> None:
        self._read_small_body()
        self.server.oss.create_bucket(bucket)
        self._send(200, headers={"Location": f"/{bucket}"})

    def _op_DeleteBucket(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        with oss._lock:
            b = oss._bucket(bucket)
            if b.objects or any(u.bucket == bucket for u in oss._uploads.values()):
                raise _OssError(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.")
            del oss._buckets[bucket]
        self._send(204)

    def _op_GetBucketInfo(self, bucket: str, key: str, query: dict[str, str]) -> None:
        with self.server.oss._lock:
            b = self.server.oss._bucket(bucket)
        root = ET.Element("BucketInfo")
        node = _sub(root, "Bucket")
        for tag, text in (
            ("CreationDate", _iso8601(b.created)),
            ("ExtranetEndpoint", "127.0.0.1"),
            ("IntranetEndpoint", "127.0.0.1"),
            ("Location", "oss-test"),
            ("Name", b.name),
            ("StorageClass", STORAGE_CLASS),
        ):
            _sub(node, tag, text)
        owner = _sub(node, "Owner")
        _sub(owner, "DisplayName", OWNER_ID)
        _sub(owner, "ID", OWNER_ID)
        _sub(_sub(node, "AccessControlList"), "Grant", "private")
        self._send(200, _xml(root))

    def _op_ListObjects(self, bucket: str, key: str, query: dict[str, str]) -> None:
        v2 = query.get("list-type") == "2"
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        url = query.get("encoding-type") == "url"
        try:
            max_keys = min(int(query.get("max-keys", "100")), 1000)
        except ValueError:
            raise _OssError(400, "InvalidArgument", "max-keys is not an integer") from None
        if v2:
            token = query.get("continuation-token", "")
            after = _decode_token(token) if token else query.get("start-after", "")
        else:
            after = query.get("marker", "")
        with self.server.oss._lock:
            objects = dict(self.server.oss._bucket(bucket).objects)
        contents: list[tuple[str, _Object]] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        for name in sorted(objects):
            if not name.startswith(prefix) or name <= after:
                continue
            common = ""
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    common = name[: cut + len(delimiter)]
            if common and prefixes and prefixes[-1] == common:
                continue
            if common and common <= after:
                continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if common:
                prefixes.append(common)
                last = common
            else:
                contents.append((name, objects[name]))
                last = name

        enc = (lambda s: urllib.parse.quote(s, safe="")) if url else (lambda s: s)
        root = ET.Element("ListBucketResult")
        _sub(root, "Name", bucket)
        _sub(root, "Prefix", enc(prefix))
        if v2:
            if "continuation-token" in query:
                _sub(root, "ContinuationToken", query["continuation-token"])
            if "start-after" in query:
                _sub(root, "StartAfter", enc(query["start-after"]))
        else:
            _sub(root, "Marker", enc(after))
        _sub(root, "MaxKeys", max_keys)
        _sub(root, "Delimiter", enc(delimiter))
        if url:
            _sub(root, "EncodingType", "url")
        _sub(root, "IsTruncated", "true" if truncated else "false")
        if truncated:
            if v2:
                _sub(root, "NextContinuationToken", _encode_token(last))
            else:
                _sub(root, "NextMarker", enc(last))
        if v2:
            _sub(root, "KeyCount", len(contents) + len(prefixes))
        for name, obj in contents:
            node = _sub(root, "Contents")
            _sub(node, "Key", enc(name))
            _sub(node, "LastModified", _iso8601(obj.mtime))
            _sub(node, "ETag", _quoted_etag(obj.etag))
            _sub(node, "Type", "Multipart" if obj.multipart else "Normal")
            _sub(node, "Size", obj.size)
            _sub(node, "StorageClass", STORAGE_CLASS)
            if not v2 or query.get("fetch-owner") == "true":
                owner = _sub(node, "Owner")
                _sub(owner, "ID", OWNER_ID)
                _sub(owner, "DisplayName", OWNER_ID)
        for p in prefixes:
            _sub(_sub(root, "CommonPrefixes"), "Prefix", enc(p))
        self._send(200, _xml(root))

    def _op_ListMultipartUploads(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        prefix = query.get("prefix", "")
        url = query.get("encoding-type") == "url"
        enc = (lambda s: urllib.parse.quote(s, safe="")) if url else (lambda s: s)
        with oss._lock:
            oss._bucket(bucket)
            uploads = sorted(
                (u for u in oss._uploads.values() if u.bucket == bucket and u.key.startswith(prefix)),
                key=lambda u: (u.key, u.initiated),
            )
        root = ET.Element("ListMultipartUploadsResult")
        _sub(root, "Bucket", bucket)
        _sub(root, "KeyMarker", "")
        _sub(root, "UploadIdMarker", "")
        _sub(root, "NextKeyMarker", "")
        _sub(root, "NextUploadIdMarker", "")
        _sub(root, "Delimiter", "")
        _sub(root, "Prefix", enc(prefix))
        _sub(root, "MaxUploads", 1000)
        if url:
            _sub(root, "EncodingType", "url")
        _sub(root, "IsTruncated", "false")
        for u in uploads:
            node = _sub(root, "Upload")
            _sub(node, "Key", enc(u.key))
            _sub(node, "UploadId", u.upload_id)
            _sub(node, "Initiated", _iso8601(u.initiated))
        self._send(200, _xml(root))

    # --- objects --------------------------------------------------------------------

    def _object_headers(self, obj: _Object) -> dict[str, str]:
        headers = {
            "ETag": _quoted_etag(obj.etag),
            "Last-Modified": _http_date(obj.mtime),
            "Content-Type": obj.content_type,
            "Accept-Ranges": "bytes",
            "x-oss-object-type": "Multipart" if obj.multipart else "Normal",
            "x-oss-storage-class": STORAGE_CLASS,
            "x-oss-hash-crc64ecma": str(obj.crc),
        }
        headers.update(obj.meta)
        return headers

    def _meta_from_request(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-oss-meta-")}

    def _op_PutObject(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        with oss._lock:
            oss._bucket(bucket)
        path, size, etag, crc = self._store_body(oss.root / "objects")
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        obj = _Object(path, size, etag, crc, content_type, time.time(), False, self._meta_from_request())
        try:
            oss._store_object(bucket, key, obj)
        except BaseException:
            path.unlink()
            raise
        md5_b64 = base64.b64encode(bytes.fromhex(etag)).decode()
        self._send(200, headers={"ETag": _quoted_etag(etag), "Content-MD5": md5_b64, "x-oss-hash-crc64ecma": str(crc)})

    def _op_HeadObject(self, bucket: str, key: str, query: dict[str, str]) -> None:
        obj = self.server.oss._object(bucket, key)
        headers = self._object_headers(obj)
        headers["Content-Length"] = str(obj.size)
        self._send(200, headers=headers)

    def _op_GetObject(self, bucket: str, key: str, query: dict[str, str]) -> None:
        obj = self.server.oss._object(bucket, key)
        headers = self._object_headers(obj)
        standard = self.headers.get("x-oss-range-behavior", "").lower() == "standard"
        span = _parse_range(self.headers.get("Range"), obj.size, standard)
        status, (start, end) = (206, span) if span is not None else (200, (0, obj.size - 1))
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        try:
            f = open(obj.path, "rb")
        except FileNotFoundError:  # replaced while we looked: the caller sees a server error
            raise _OssError(500, "InternalError", "object changed during read") from None
        with f:
            self._send(status, headers=headers)
            f.seek(start)
            remaining = length
            while remaining:
                block = f.read(min(remaining, COPY_BLOCK))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    def _op_DeleteObject(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        with oss._lock:
            obj = oss._bucket(bucket).objects.pop(key, None)
        if obj is not None:
            with contextlib.suppress(FileNotFoundError):
                obj.path.unlink()
        self._send(204)

    # --- multipart ------------------------------------------------------------------

    def _op_InitiateMultipartUpload(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        self._read_small_body()
        upload_id = uuid.uuid4().hex.upper()
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        with oss._lock:
            oss._bucket(bucket)
            oss._uploads[upload_id] = _Upload(bucket, key, upload_id, time.time(), content_type, self._meta_from_request())
        (oss.root / "uploads" / upload_id).mkdir()
        root = ET.Element("InitiateMultipartUploadResult")
        _sub(root, "Bucket", bucket)
        _sub(root, "Key", key)
        _sub(root, "UploadId", upload_id)
        self._send(200, _xml(root))

    def _op_UploadPart(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        upload = oss._upload(bucket, key, query["uploadId"])
        try:
            number = int(query["partNumber"])
        except ValueError:
            number = 0
        if not 1 <= number <= MAX_PART_NUMBER:
            raise _OssError(400, "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}.")
        path, size, etag, crc = self._store_body(oss.root / "uploads" / upload.upload_id)
        with oss._lock:
            if upload.upload_id not in oss._uploads:  # aborted meanwhile
                path.unlink()
                raise _OssError(404, "NoSuchUpload", "The specified upload does not exist.")
            old = upload.parts.get(number)
            upload.parts[number] = _Part(path, size, etag, crc, time.time())
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                old.path.unlink()
        self._send(200, headers={"ETag": _quoted_etag(etag), "x-oss-hash-crc64ecma": str(crc)})

    def _op_ListParts(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        upload = oss._upload(bucket, key, query["uploadId"])
        try:
            marker = int(query.get("part-number-marker") or 0)
            max_parts = min(int(query.get("max-parts") or 1000), 1000)
        except ValueError:
            raise _OssError(400, "InvalidArgument", "invalid part-number-marker or max-parts") from None
        with oss._lock:
            numbers = sorted(n for n in upload.parts if n > marker)
            parts = [(n, upload.parts[n]) for n in numbers[:max_parts]]
        truncated = len(numbers) > max_parts
        root = ET.Element("ListPartsResult")
        _sub(root, "Bucket", bucket)
        _sub(root, "Key", key)
        _sub(root, "UploadId", upload.upload_id)
        _sub(root, "PartNumberMarker", marker)
        _sub(root, "NextPartNumberMarker", parts[-1][0] if parts else marker)
        _sub(root, "MaxParts", max_parts)
        _sub(root, "IsTruncated", "true" if truncated else "false")
        for n, part in parts:
            node = _sub(root, "Part")
            _sub(node, "PartNumber", n)
            _sub(node, "LastModified", _iso8601(part.mtime))
            _sub(node, "ETag", _quoted_etag(part.etag))
            _sub(node, "HashCrc64ecma", part.crc)
            _sub(node, "Size", part.size)
        self._send(200, _xml(root))

    def _op_CompleteMultipartUpload(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        upload = oss._upload(bucket, key, query["uploadId"])
        body = self._read_small_body()
        with oss._lock:
            available = dict(upload.parts)
        if self.headers.get("x-oss-complete-all", "").lower() == "yes":
            chosen = sorted(available.items())
        else:
            chosen = self._parse_complete(body, available)
        if not chosen:
            raise _OssError(400, "InvalidPart", "There must be at least one part.")
        for n, part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise _OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.", PartNumber=str(n))
        md5s, crc, size = b"", crc64_ecma(), 0
        fd, tmp = tempfile.mkstemp(dir=oss.root / "objects", prefix=".complete-")
        try:
            with os.fdopen(fd, "wb") as out:
                for _, part in chosen:
                    md5s += bytes.fromhex(part.etag)
                    with open(part.path, "rb") as src:
                        while block := src.read(COPY_BLOCK):
                            out.write(block)
                            crc.update(block)
                            size += len(block)
            final = oss._new_object_path()
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        etag = f"{hashlib.md5(md5s).hexdigest().upper()}-{len(chosen)}"
        obj = _Object(final, size, etag, crc.crcValue, upload.content_type, time.time(), True, upload.meta)
        with oss._lock:
            if oss._uploads.pop(upload.upload_id, None) is None:
                final.unlink()
                raise _OssError(404, "NoSuchUpload", "The specified upload does not exist.")
        oss._store_object(bucket, key, obj)
        shutil.rmtree(oss.root / "uploads" / upload.upload_id, ignore_errors=True)
        root = ET.Element("CompleteMultipartUploadResult")
        _sub(root, "Location", f"{oss.endpoint}/{bucket}/{urllib.parse.quote(key, safe='')}")
        _sub(root, "Bucket", bucket)
        _sub(root, "Key", key)
        _sub(root, "ETag", _quoted_etag(etag))
        self._send(200, _xml(root), {"ETag": _quoted_etag(etag), "x-oss-hash-crc64ecma": str(obj.crc)})

    @staticmethod
    def _parse_complete(body: bytes, available: dict[int, _Part]) -> list[tuple[int, _Part]]:
        try:
            root = ET.fromstring(body)
            requested = [(int(p.findtext("PartNumber", "")), (p.findtext("ETag") or "").strip('"')) for p in root.findall("Part")]
        except (ET.ParseError, ValueError):
            raise _OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        chosen: list[tuple[int, _Part]] = []
        for n, etag in requested:
            if chosen and n <= chosen[-1][0]:
                raise _OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
            part = available.get(n)
            if part is None or part.etag != etag.upper():
                raise _OssError(400, "InvalidPart", "One or more of the specified parts could not be found.", PartNumber=str(n))
            chosen.append((n, part))
        return chosen

    def _op_AbortMultipartUpload(self, bucket: str, key: str, query: dict[str, str]) -> None:
        oss = self.server.oss
        upload = oss._upload(bucket, key, query["uploadId"])
        with oss._lock:
            oss._uploads.pop(upload.upload_id, None)
        shutil.rmtree(oss.root / "uploads" / upload.upload_id, ignore_errors=True)
        self._send(204)

    def _op_Unsupported(self, bucket: str, key: str, query: dict[str, str]) -> None:
        raise _OssError(501, "NotImplemented", f"{self.command} {self.path} is not implemented by the test server")


def _operation(method: str, bucket: str, key: str, query: dict[str, str]) -> str:
    """The OSS API name of a request, from its method, path shape and subresources."""
    if not bucket:
        return "ListBuckets" if method == "GET" else "Unsupported"
    if not key:
        table = {
            "PUT": "PutBucket",
            "DELETE": "DeleteBucket",
            "GET": "GetBucketInfo" if "bucketInfo" in query else ("ListMultipartUploads" if "uploads" in query else "ListObjects"),
        }
        return table.get(method, "Unsupported")
    if "uploadId" in query:
        table = {"PUT": "UploadPart", "GET": "ListParts", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}
        if method == "PUT" and "partNumber" not in query:
            return "Unsupported"
        return table.get(method, "Unsupported")
    if "uploads" in query:
        return "InitiateMultipartUpload" if method == "POST" else "Unsupported"
    table = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}
    if any(k in SUBRESOURCES for k in query):
        return "Unsupported"
    return table.get(method, "Unsupported")


def _parse_range(header: str | None, size: int, standard: bool) -> tuple[int, int] | None:
    """(start, end) inclusive for a 206, or None for the whole object (200).

    OSS by default ignores an invalid or out-of-bounds range and returns everything; with
    `x-oss-range-behavior: standard` an end past the object is clamped and a start past it
    is `416 InvalidRange`.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return None
            return (max(0, size - n), size - 1) if size else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start > end and last:
        return None
    if start >= size:
        if standard:
            raise _OssError(416, "InvalidRange", "The requested range cannot be satisfied.", ActualObjectSize=str(size))
        return None
    if end >= size:
        if not standard:
            return None
        end = size - 1
    return start, end


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise _OssError(400, "InvalidArgument", "invalid continuation-token") from None


@pytest.fixture(scope="session")
def oss_server(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[OssServer]:
    """One OSS-protocol server on loopback for the whole session (always stopped).

    Its `endpoint`, `access_key_id` and `access_key_secret` configure a client; use
    `oss_bucket` (or `create_bucket()`) for a fresh bucket per test. Needs the kit's
    `loopback_no_proxy` fixture (oss2 honours proxy variables).
    """
    server = OssServer(tmp_path_factory.mktemp("oss-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def oss_bucket(oss_server: OssServer) -> Iterator[str]:
    """A fresh, empty bucket on `oss_server`; the test's leftover faults are cleared after it."""
    name = oss_server.create_bucket()
    try:
        yield name
    finally:
        oss_server.clear_faults()


@pytest.fixture
def oss_backend_config(oss_server: OssServer, oss_bucket: str) -> dict[str, str]:
    """`--backend-config` of the `oss` backend for a fresh bucket, objects under BACKEND_OBJECT_PREFIX."""
    from nydusify_core.testing.servers import BACKEND_OBJECT_PREFIX

    return {
        "endpoint": oss_server.endpoint, "bucket_name": oss_bucket, "object_prefix": BACKEND_OBJECT_PREFIX,
        "access_key_id": oss_server.access_key_id, "access_key_secret": oss_server.access_key_secret,
    }
