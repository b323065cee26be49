"""Storage backend `oss`: Nydus blobs as objects `object_prefix + blob id` in an OSS bucket.

Uploads are all-or-nothing: small files go up in one PutObject, larger ones as a multipart
upload whose parts are sent in parallel and which is aborted on any failure, so a later
`exists` never sees half a blob. After every upload the object's `x-oss-hash-crc64ecma`
is compared with the CRC-64/ECMA computed locally while the parts were read.
"""

from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import oss2
from oss2 import exceptions as oss_errors

from nydusify_core.objectstore import KeyedObjectBackend
from nydusify_core.errors import AuthError, BackendError, IntegrityError, NotFoundError, NydusifyError, UsageError
from nydusify_core.log import redact
from nydusify_core.types import BackendContext, Credentials

from nydusify_oss.config import OssConfig, env_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1 << 20
CONVERT_PART_SIZE = 500 * MiB  # upstream convert path (snapshotter backend)
PACK_PART_SIZE = 200 * MiB  # upstream pack path (nydusify pkg/backend/oss.go)
MIN_PART_SIZE = 100 * 1024  # OSS rejects smaller parts, except the last
MAX_PARTS = 10000
DEFAULT_WORKERS = 4
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 1.0  # seconds; doubles per retry (1, 2, 4 ...)
READ_BLOCK = MiB
RANGE_HEADERS = {"x-oss-range-behavior": "standard"}  # 416 instead of the whole object

_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "SecurityTokenExpired", "InvalidSecurityToken"})


class _CrcMismatch(Exception):
    """Server and client disagree about the bytes of one request: worth another attempt."""


class _FileSlice:
    """`size` bytes of a file from `offset`, as a request body; CRC-64 computed while read.

    Each attempt gets its own slice, so a retried part is re-read from disk and memory
    stays bounded by one read block per worker.
    """

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.offset, self.size, self.pos = offset, size, 0
        self.crc = oss2.utils.Crc64()

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self.offset + self.pos)
        if not data:
            raise IntegrityError(f"file shrank while uploading it (expected {self.size} bytes at offset {self.offset})")
        self.pos += len(data)
        self.crc.update(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "_FileSlice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ObjectStream(io.RawIOBase):
    """A GET response as a readable binary stream; the SDK checks the CRC at its end."""

    def __init__(self, result: Any, describe: Callable[[BaseException], NydusifyError]) -> None:
        self._result, self._describe = result, describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._result.read(len(buffer))
        except oss_errors.InconsistentError:
            raise IntegrityError("OSS object changed in transit: CRC-64 mismatch while reading") from None
        except (oss_errors.OssError, OSError, ValueError) as exc:
            raise self._describe(exc) from None
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._result.resp.response.close()
        super().close()


class OssBackend(KeyedObjectBackend):
    """`StorageBackend` on Aliyun OSS through oss2 (V1 signatures).

    Tuning that is not part of the user's JSON: `part_size` (default: upstream's convert
    part size; `PACK_PART_SIZE` for pack), `workers` (parallel parts), `max_attempts` and
    `backoff` (bounded retries of every request, doubling the pause each time).
    """

    type = "oss"

    def __init__(
        self,
        config: OssConfig,
        context: BackendContext | None = None,
        *,
        part_size: int = CONVERT_PART_SIZE,
        workers: int = DEFAULT_WORKERS,
        max_attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        connect_timeout: float = 60.0,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise UsageError(f"oss backend: part size {part_size} is below the OSS minimum of {MIN_PART_SIZE} bytes")
        if workers < 1 or max_attempts < 1 or backoff < 0:
            raise UsageError("oss backend: workers and max_attempts must be at least 1, backoff not negative")
        self.config = config
        self.object_prefix = config.object_prefix
        self.part_size, self.workers = part_size, workers
        self.max_attempts, self.backoff = max_attempts, backoff
        self.endpoint = config.endpoint_url
        self.bucket_name = config.bucket_name
        creds = _credentials(config, context)
        auth = oss2.Auth(creds.username, creds.password) if creds else oss2.AnonymousAuth()
        self._session = oss2.Session(pool_size=workers + 2)
        common = dict(session=self._session, connect_timeout=connect_timeout)
        # writes check CRCs themselves (per part and whole object); reads let the SDK check
        self._writer = oss2.Bucket(auth, self.endpoint, self.bucket_name, enable_crc=False, **common)
        self._reader = oss2.Bucket(auth, self.endpoint, self.bucket_name, enable_crc=True, **common)

    # --- keys and URLs --------------------------------------------------------------

    def object_url(self, key: str) -> str:
        return f"oss://{self.bucket_name}/{key}"

    # --- StorageBackend -------------------------------------------------------------

    def size(self, blob_id: str) -> int:
        key = self.key_for(blob_id)
        return int(self._retry("head", key, lambda: self._reader.head_object(key)).content_length)

    def open_object(self, key: str) -> IO[bytes]:
        """A stream of the object at `key` (CRC-64 checked by the SDK at its end)."""
        result = self._retry("get", key, lambda: self._reader.get_object(key))
        raw = _ObjectStream(result, lambda exc: self._error(exc, "read", key))
        return io.BufferedReader(raw, READ_BLOCK)

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range {offset}+{length}")
        key = self.key_for(blob_id)
        if length == 0:
            if offset > self.size(blob_id):
                raise IntegrityError(f"blob {blob_id}: offset {offset} is beyond its end")
            return b""
        try:
            data = self._retry("ranged get", key, lambda: self._get_range(key, offset, length))
        except _RangeNotSatisfiable:
            data = b""
        if len(data) != length:
            raise IntegrityError(f"blob {blob_id}: range {offset}+{length} is beyond its end")
        return data

    def _delete_object(self, key: str) -> None:
        self._retry("delete", key, lambda: self._writer.delete_object(key))

    def close(self) -> None:
        self._session.session.close()

    # --- objects by key (pack --backend-push) ----------------------------------------

    def object_exists(self, key: str) -> bool:
        try:
            self._retry("head", key, lambda: self._reader.head_object(key))
        except NotFoundError:
            return False
        return True

    def put_object(self, key: str, path: Path | str) -> str:
        """Upload the file at `path` to `key` (overwriting), all or nothing; return its URL."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise IntegrityError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if size <= self.part_size:
                local, remote = self._retry("put", key, lambda: self._put_whole(key, path, size))
            else:
                local, remote = self._put_multipart(key, path, size)
            if remote is not None and remote != local:
                raise IntegrityError(
                    f"{self.object_url(key)}: CRC-64 of the uploaded object ({remote}) differs from the local file's ({local})",
                    expected=str(local),
                    got=str(remote),
                )
        except IntegrityError:
            self._discard(key)
            raise
        if remote is None:
            log.warning("OSS returned no x-oss-hash-crc64ecma for %s; its content is not verified", self.object_url(key))
        return self.object_url(key)

    # --- uploads --------------------------------------------------------------------

    def _put_whole(self, key: str, path: Path, size: int) -> tuple[int, int | None]:
        with _FileSlice(path, 0, size) as body:
            result = self._writer.put_object(key, body)
        if result.crc is not None and result.crc != body.crc.crc:
            raise _CrcMismatch("the object")
        return body.crc.crc, result.crc

    def _put_multipart(self, key: str, path: Path, size: int) -> tuple[int, int | None]:
        count = -(-size // self.part_size)
        if count > MAX_PARTS:
            raise UsageError(f"{path} needs {count} parts of {self.part_size} bytes; OSS allows {MAX_PARTS}: use a larger part size")
        upload_id = self._retry("initiate multipart upload", key, lambda: self._writer.init_multipart_upload(key)).upload_id
        try:
            parts = self._upload_parts(key, upload_id, path, size, count)
            remote = self._complete(key, upload_id, parts, size)
        except BaseException:
            self._abort(key, upload_id)
            raise
        combine = oss2.utils.Crc64()
        local = 0
        for part in parts:
            local = combine.combine(local, part.part_crc, part.size)
        return local, remote

    def _upload_parts(self, key: str, upload_id: str, path: Path, size: int, count: int) -> list[oss2.models.PartInfo]:
        def upload(number: int) -> oss2.models.PartInfo:
            offset = (number - 1) * self.part_size
            part_size = min(self.part_size, size - offset)

            def attempt() -> oss2.models.PartInfo:
                with _FileSlice(path, offset, part_size) as body:
                    result = self._writer.upload_part(key, upload_id, number, body)
                if result.crc is not None and result.crc != body.crc.crc:
                    raise _CrcMismatch(f"part {number}")
                return oss2.models.PartInfo(number, result.etag, size=part_size, part_crc=body.crc.crc)

            return self._retry(f"upload part {number} of", key, attempt)

        with ThreadPoolExecutor(max_workers=min(self.workers, count), thread_name_prefix="oss-part") as pool:
            futures = [pool.submit(upload, n) for n in range(1, count + 1)]
            try:
                parts = [f.result() for f in as_completed(futures)]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return sorted(parts, key=lambda p: p.part_number)

    def _complete(self, key: str, upload_id: str, parts: list[oss2.models.PartInfo], size: int) -> int | None:
        attempts = 0

        def attempt() -> int | None:
            nonlocal attempts
            attempts += 1
            try:
                return self._writer.complete_multipart_upload(key, upload_id, parts).crc
            except oss_errors.NoSuchUpload:
                if attempts == 1:
                    raise
                # an earlier attempt completed it but its answer was lost
                head = self._reader.head_object(key)
                if head.content_length != size:
                    raise
                return head.server_crc

        return self._retry("complete multipart upload", key, attempt)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._retry("abort multipart upload", key, lambda: self._writer.abort_multipart_upload(key, upload_id))
        except NotFoundError:
            pass
        except NydusifyError as exc:
            log.warning("could not abort multipart upload %s of %s (%s); it is not an object, but its parts use space until a lifecycle rule removes them", upload_id, self.object_url(key), exc)

    def _discard(self, key: str) -> None:
        """Remove an object found corrupt after its upload; never let that hide the cause."""
        try:
            self._retry("delete", key, lambda: self._writer.delete_object(key))
        except NydusifyError as exc:
            log.warning("could not remove corrupt object %s: %s", self.object_url(key), exc)

    # --- reads ----------------------------------------------------------------------

    def _get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            result = self._reader.get_object(key, byte_range=(offset, offset + length - 1), headers=RANGE_HEADERS)
        except oss_errors.ServerError as exc:
            if exc.status == 416:
                raise _RangeNotSatisfiable() from None
            raise
        try:
            if result.status != 206 and not (offset == 0 and result.content_length == length):
                raise BackendError(f"{self.object_url(key)}: the server ignored the requested range")
            return result.read()
        finally:
            result.resp.response.close()

    # --- retries and errors ---------------------------------------------------------

    def _retry(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run `fn`, again after a pause when OSS or the network failed transiently."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except (_RangeNotSatisfiable, NydusifyError):
                raise
            except Exception as exc:
                if attempt == self.max_attempts or not _transient(exc):
                    raise self._error(exc, what, key) from None
                pause = self.backoff * (2 ** (attempt - 1))
                log.info("OSS %s %s failed (%s); retry %d/%d in %.1fs", what, self.object_url(key), _short(exc), attempt, self.max_attempts - 1, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _error(self, exc: BaseException, what: str, key: str) -> NydusifyError:
        where = self.object_url(key)
        if isinstance(exc, NydusifyError):
            return exc
        if isinstance(exc, _CrcMismatch):
            return IntegrityError(f"OSS {what} {where}: CRC-64 of {exc} differs between client and server")
        if isinstance(exc, oss_errors.RequestError):
            return BackendError(redact(f"OSS {what} {where}: cannot reach {self.endpoint}: {_short(exc)}"))
        if isinstance(exc, oss_errors.InconsistentError):
            return IntegrityError(f"OSS {what} {where}: CRC-64 mismatch between client and server")
        if isinstance(exc, oss_errors.OssError):
            status, code = exc.status, exc.code
            if status == 403 or code in _AUTH_CODES:
                return AuthError(
                    f"OSS refused {what} {where} ({status} {code or 'Forbidden'}): "
                    "check access_key_id / access_key_secret and the bucket's permissions"
                )
            if code == "NoSuchBucket":  # a configuration error, not an absent blob
                return BackendError(f"OSS bucket {self.bucket_name!r} does not exist at {self.endpoint}")
            if status == 404:
                return NotFoundError(f"{where} not found")
            return BackendError(redact(f"OSS {what} {where} failed: HTTP {status} {code} {exc.message}".rstrip()))
        if isinstance(exc, OSError):
            return IntegrityError(f"OSS {what} {where}: {exc.strerror or exc}")
        return BackendError(redact(f"OSS {what} {where} failed: {type(exc).__name__}: {exc}"))


class _RangeNotSatisfiable(Exception):
    pass


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (oss_errors.RequestError, oss_errors.InconsistentError, _CrcMismatch)):
        return True
    if isinstance(exc, oss_errors.OssError):
        return exc.status >= 500 or exc.status in (408, 429) or exc.code == "RequestTimeout"
    return isinstance(exc, (ConnectionError, TimeoutError))


def _short(exc: BaseException) -> str:
    if isinstance(exc, oss_errors.RequestError):
        inner = getattr(exc, "exception", None)
        return type(inner).__name__ if inner is not None else "connection error"
    if isinstance(exc, oss_errors.OssError):
        return f"HTTP {exc.status} {exc.code}".rstrip()
    return type(exc).__name__


def _credentials(config: OssConfig, context: BackendContext | None) -> Credentials | None:
    """From the config when both keys are there, else from plugins (the environment)."""
    if config.access_key_id:
        return Credentials(username=config.access_key_id, password=config.access_key_secret)
    plugins = context.plugins if context is not None else None
    creds = plugins.resolve_credentials("oss", config.endpoint_url) if plugins is not None else env_credentials()
    if creds is None or not (creds.username and creds.password):
        log.debug("no OSS credentials found: anonymous requests")
        return None
    return creds
