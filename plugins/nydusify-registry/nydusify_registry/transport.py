"""Transport settings and failure handling shared by the registry client: retry policy,
TLS defaults, the registry's error JSON, and short secret-free descriptions of failures."""

from __future__ import annotations

import email.utils
import json
import os
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions

from nydusify_core import __version__ as core_version

from nydusify_registry.config import DEFAULT_CHUNK_SIZE

USER_AGENT = f"nydusify/{core_version}"
MAX_ERROR_BODY = 64 << 10
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried."""

    attempts: int = 5  # tries in total, at least 1
    backoff: float = 0.5  # first delay in seconds, doubled each time
    max_backoff: float = 10.0
    max_retry_after: float = 30.0  # cap on a server's Retry-After

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 0)."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        after = parse_retry_after(retry_after)
        if after is not None:
            return max(0.0, min(after, self.max_retry_after))
        return base


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()


@dataclass(frozen=True)
class ClientOptions:
    """Transport settings of a `RegistryClient`."""

    insecure: bool = False  # skip TLS verification; allow falling back to HTTP
    plain_http: bool = False  # always HTTP
    ca_file: str | None = None  # CA bundle for this registry instead of the system CAs
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 30.0
    read_timeout: float = 300.0
    chunk_size: int = DEFAULT_CHUNK_SIZE  # blobs larger than this are uploaded in chunks; 0: never
    user_agent: str = USER_AGENT


def system_ca_bundle() -> str | bool:
    """The system's CA bundle (what OpenSSL uses, honouring SSL_CERT_FILE/SSL_CERT_DIR)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


class Transient(Exception):
    """A failure worth retrying; carries the one-line reason and a server's Retry-After."""

    def __init__(self, reason: str, retry_after: str | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.status = reason, retry_after, status


def with_query(url: str, **params: str) -> str:
    split = urlsplit(url)
    query = split.query + ("&" if split.query else "") + urlencode(params)
    return urlunsplit((split.scheme, split.netloc, split.path, query, split.fragment))


def registry_error(response: requests.Response) -> tuple[str, str]:
    """(code, message) of the first entry of the registry's `errors` JSON, if any."""
    try:
        body = response.raw.read(MAX_ERROR_BODY, decode_content=True) if response.raw is not None and not response._content_consumed else response.content
    except Exception:  # the body is only decoration for the message
        body = b""
    if not body and getattr(response, "_content", None):
        body = response._content or b""
    try:
        data = json.loads(body[:MAX_ERROR_BODY] or b"null")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "", ""
    first = errors[0]
    codes = [str(e.get("code", "")) for e in errors if isinstance(e, dict)]
    message = str(first.get("message", ""))[:300]
    return "/".join(c for c in codes if c), message


def code_suffix(response: requests.Response) -> str:
    code, message = registry_error(response)
    out = f" {code}" if code else ""
    return out + (f": {message}" if message else "")


def challenge_error(response: requests.Response) -> str:
    header = response.headers.get("WWW-Authenticate", "")
    marker = 'error="'
    start = header.find(marker)
    if start < 0:
        return ""
    end = header.find('"', start + len(marker))
    return header[start + len(marker) : end]


def exception_chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        stack.extend([current.__cause__, current.__context__])
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return out


def is_certificate_error(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e) for e in exception_chain(exc))


def is_tls_alert(exc: BaseException) -> bool:
    """The server spoke TLS and refused the handshake (e.g. no client certificate): it is
    not a plain-HTTP server, so falling back to HTTP would only hide the reason."""
    return any(isinstance(e, ssl.SSLError) and "ALERT" in str(e.reason or "") for e in exception_chain(exc))


def is_refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e) for e in exception_chain(exc))


def describe(exc: BaseException) -> str:
    """A short, secret-free reason for a transport failure (no URLs: they may carry
    upload state)."""
    chain = exception_chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verify failed: {e.verify_message}"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS error: {e.reason or type(e).__name__}"
    # most specific first (urllib3's NewConnectionError is also a ConnectTimeoutError)
    checks: list[tuple[Callable[[BaseException], bool], str]] = [
        (lambda e: isinstance(e, ConnectionRefusedError), "connection refused"),
        (lambda e: isinstance(e, ConnectionResetError), "connection reset by peer"),
        (lambda e: isinstance(e, urllib3.exceptions.IncompleteRead), "connection dropped in the middle of the body"),
        (lambda e: "Remote end closed" in str(e), "connection closed by the server without a response"),
        (lambda e: isinstance(e, urllib3.exceptions.NameResolutionError), "host name not resolved"),
        (lambda e: isinstance(e, (TimeoutError, urllib3.exceptions.TimeoutError, requests.exceptions.Timeout)), "timed out"),
    ]
    for check, text in checks:
        if any(check(e) for e in chain):
            return text
    for e in chain:
        if isinstance(e, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError)):
            return "connection dropped"
    return f"connection failed ({type(exc).__name__})"
