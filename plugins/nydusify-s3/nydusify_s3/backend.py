"""Storage backend `s3`: Nydus blobs as objects `object_prefix + blob id` in an S3 bucket.

Path-style addressing (`<scheme>://<endpoint>/<bucket>/<key>`), as upstream. Uploads go
through the SDK's transfer manager: one PutObject up to the part size, else a multipart
upload with parallel parts that the SDK aborts on failure, so a later HeadObject never
sees half a blob; the final size is checked. Every request is retried a bounded number of
times by botocore's standard retry mode.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)

from nydusify_core.objectstore import KeyedObjectBackend
from nydusify_core.errors import AuthError, BackendError, IntegrityError, NotFoundError, NydusifyError, UsageError
from nydusify_core.log import redact, register_secret
from nydusify_core.types import BackendContext, Credentials

from nydusify_s3.config import S3Config

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1 << 20
CONVERT_PART_SIZE = 500 * MiB  # upstream convert path (snapshotter backend)
PACK_PART_SIZE = 200 * MiB  # upstream pack path (nydusify pkg/backend/s3.go)
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts, except the last
MAX_PARTS = 10000
DEFAULT_WORKERS = 4
DEFAULT_ATTEMPTS = 3  # total, first one included
CHECKSUM = "CRC32"  # as upstream; the SDK computes it and S3 verifies it
READ_BLOCK = MiB

_AUTH_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "ExpiredToken", "InvalidToken", "InvalidClientTokenId", "403"}
)


class _BodyStream(io.RawIOBase):
    """A GetObject body as a readable binary stream."""

    def __init__(self, body: Any, describe: Callable[[BaseException], NydusifyError]) -> None:
        self._body, self._describe = body, describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, OSError) as exc:
            raise self._describe(exc) from None
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Backend(KeyedObjectBackend):
    """`StorageBackend` on S3 through boto3.

    Tuning that is not part of the user's JSON: `part_size` (default: upstream's convert
    part size; `PACK_PART_SIZE` for pack), `workers` (parallel parts), `max_attempts`
    (total attempts per request, botocore standard retry mode).
    """

    type = "s3"

    def __init__(
        self,
        config: S3Config,
        context: BackendContext | None = None,
        *,
        part_size: int = CONVERT_PART_SIZE,
        workers: int = DEFAULT_WORKERS,
        max_attempts: int = DEFAULT_ATTEMPTS,
        connect_timeout: float = 60.0,
        read_timeout: float = 300.0,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise UsageError(f"s3 backend: part size {part_size} is below the S3 minimum of {MIN_PART_SIZE} bytes")
        if workers < 1 or max_attempts < 1:
            raise UsageError("s3 backend: workers and max_attempts must be at least 1")
        self.config = config
        self.object_prefix = config.object_prefix
        self.part_size, self.workers, self.max_attempts = part_size, workers, max_attempts
        self.bucket_name = config.bucket_name
        self.endpoint_url = config.endpoint_url
        creds = _credentials(config, context)
        botocore_config = Config(
            region_name=config.region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=workers + 2,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=config.region,
            aws_access_key_id=creds.username if creds else None,
            aws_secret_access_key=creds.password if creds else None,
            aws_session_token=(creds.token or None) if creds else None,
            config=botocore_config,
        )

    def _transfer(self) -> TransferConfig:
        """Built per upload from the current `part_size` (pack sets its own after creation)."""
        return TransferConfig(
            multipart_threshold=self.part_size + 1,  # a file of one part size is one PutObject
            multipart_chunksize=self.part_size,
            max_concurrency=self.workers,
            use_threads=True,
        )

    # --- keys and URLs --------------------------------------------------------------

    def object_url(self, key: str) -> str:
        return f"{self.endpoint_url}/{self.bucket_name}/{key}"

    # --- StorageBackend -------------------------------------------------------------

    def size(self, blob_id: str) -> int:
        key = self.key_for(blob_id)
        return int(self._call("head", key, lambda: self._client.head_object(Bucket=self.bucket_name, Key=key))["ContentLength"])

    def open_object(self, key: str) -> IO[bytes]:
        """A stream of the object at `key` (checksum-verified when S3 stored one)."""
        response = self._call("get", key, lambda: self._client.get_object(Bucket=self.bucket_name, Key=key, ChecksumMode="ENABLED"))
        raw = _BodyStream(response["Body"], lambda exc: self._error(exc, "read", key))
        return io.BufferedReader(raw, READ_BLOCK)

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range {offset}+{length}")
        key = self.key_for(blob_id)
        if length == 0:
            if offset > self.size(blob_id):
                raise IntegrityError(f"blob {blob_id}: offset {offset} is beyond its end")
            return b""
        data = b""
        for attempt in range(1, self.max_attempts + 1):
            try:
                data = self._get_range(key, offset, length)
                break
            except ClientError as exc:
                if _status(exc) == 416:
                    break
                raise self._error(exc, "ranged get", key) from None
            except (ResponseStreamingError, IncompleteReadError) as exc:  # the body broke off: botocore does not retry that
                if attempt == self.max_attempts:
                    raise self._error(exc, "ranged get", key) from None
            except BotoCoreError as exc:
                raise self._error(exc, "ranged get", key) from None
        if len(data) != length:
            raise IntegrityError(f"blob {blob_id}: range {offset}+{length} is beyond its end")
        return data

    def _delete_object(self, key: str) -> None:
        self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket_name, Key=key))

    def close(self) -> None:
        self._client.close()

    # --- objects by key (pack --backend-push) ----------------------------------------

    def object_exists(self, key: str) -> bool:
        """HeadObject: 404 means absent; any other failure is an error."""
        try:
            self._call("head", key, lambda: self._client.head_object(Bucket=self.bucket_name, Key=key))
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
        if -(-size // self.part_size) > MAX_PARTS:
            raise UsageError(f"{path} needs more than {MAX_PARTS} parts of {self.part_size} bytes: use a larger part size")

        def upload() -> None:
            with create_transfer_manager(self._client, self._transfer()) as manager:
                manager.upload(str(path), self.bucket_name, key, extra_args={"ChecksumAlgorithm": CHECKSUM}).result()

        self._call("upload", key, upload)
        stored = self._call("head", key, lambda: self._client.head_object(Bucket=self.bucket_name, Key=key))["ContentLength"]
        if stored != size:
            self._discard(key)
            raise IntegrityError(
                f"{self.object_url(key)}: stored object has {stored} bytes, the local file {size}; object removed",
                expected=str(size),
                got=str(stored),
            )
        return self.object_url(key)

    # --- helpers --------------------------------------------------------------------

    def _get_range(self, key: str, offset: int, length: int) -> bytes:
        response = self._client.get_object(Bucket=self.bucket_name, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        body = response["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def _discard(self, key: str) -> None:
        try:
            self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket_name, Key=key))
        except NydusifyError as exc:
            log.warning("could not remove bad object %s: %s", self.object_url(key), exc)

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run one SDK operation (already retried inside botocore); translate its failure."""
        try:
            return fn()
        except NydusifyError:
            raise
        except Exception as exc:
            raise self._error(exc, what, key) from None

    def _error(self, exc: BaseException, what: str, key: str) -> NydusifyError:
        where = self.object_url(key)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AuthError(
                "no S3 credentials: set access_key_id and access_key_secret in the backend config, "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a shared credentials profile"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, message, status = str(error.get("Code", "")), str(error.get("Message", "")), _status(exc)
            if status == 403 or code in _AUTH_CODES:
                label = code if code and code != "403" else "Forbidden"
                return AuthError(f"S3 refused {what} {where} (403 {label}): check access_key_id / access_key_secret, region and the bucket's permissions")
            if code == "NoSuchBucket":
                return BackendError(f"S3 bucket {self.bucket_name!r} does not exist at {self.endpoint_url}")
            if status == 404 or code in ("NoSuchKey", "404"):
                return NotFoundError(f"{where} not found")
            return BackendError(redact(f"S3 {what} {where} failed: HTTP {status} {code} {message}".rstrip()))
        if isinstance(exc, BotoCoreError):
            return BackendError(redact(f"S3 {what} {where}: {exc}"))
        if isinstance(exc, OSError):
            return IntegrityError(f"S3 {what} {where}: {exc.strerror or exc}")
        return BackendError(redact(f"S3 {what} {where} failed: {type(exc).__name__}: {exc}"))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _credentials(config: S3Config, context: BackendContext | None) -> Credentials | None:
    """Static keys from the config, else from plugins; None means boto3's default chain."""
    if config.access_key_id:
        return Credentials(username=config.access_key_id, password=config.access_key_secret)
    plugins = context.plugins if context is not None else None
    creds = plugins.resolve_credentials("s3", config.endpoint_url) if plugins is not None else None
    if creds is not None and creds.username and creds.password:
        register_secret(creds.password)
        register_secret(creds.token)
        return creds
    return None
