"""A client of the OCI distribution API for one registry host, over `requests`.

Verbs follow python-dxf (blob existence, pull with streaming verification, push with
existence check left to the caller, mount, delete, manifests), errors follow the registry's
`errors` JSON. Transport rules:

* TLS is verified with the system CAs (or `ca_file`) unless `insecure`; the choice is passed
  to every request, and the session ignores the environment, so `REQUESTS_CA_BUNDLE` or
  `CURL_CA_BUNDLE` cannot silently change it. A host's docker/containerd ``certs.d``
  directory adds CA roots and a client certificate for that host only (`tlsconfig`).
* `plain_http` forces HTTP. Without it, HTTPS is tried first and, only for an `insecure` or
  loopback registry, a TLS handshake that meets a plain-HTTP server (or a refused
  connection) switches *this client's host* to HTTP for good; other hosts are unaffected.
  A TLS server that refuses the handshake with an alert (say, no client certificate) is no
  plain-HTTP server: that error is reported, not hidden behind a fallback.
* Proxies come from the environment (`HTTPS_PROXY`, `NO_PROXY`...), never for loopback.
* 5xx, 429 and dropped connections are retried with capped exponential back-off (honouring
  `Retry-After`); bodies are re-created from their source for each attempt. Blob downloads
  resume with `Range` after a dropped connection; chunked uploads resume from the offset the
  registry reports, and any upload restarts from scratch when that is not possible.
"""

from __future__ import annotations

import json
import io
import logging
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions

from nydusify_core.errors import AuthError, IntegrityError, UsageError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor, check_digest, sha256_digest
from nydusify_core.oci.verify import verified_reader
from nydusify_core.types import Credentials

from nydusify_registry.auth import Authorizer, repository_scope
from nydusify_registry.bodies import Body, discard, open_at, open_body, read_upto, sized
from nydusify_registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from nydusify_registry.reference import is_loopback_host
from nydusify_registry.tlsconfig import certs_dirs, host_tls, trust_bundle
from nydusify_registry.transport import (
    DEFAULT_CHUNK_SIZE,
    RETRY_STATUS,
    USER_AGENT,
    ClientOptions,
    RetryPolicy,
    Transient,
    challenge_error,
    code_suffix,
    describe,
    is_certificate_error,
    is_refused,
    is_tls_alert,
    registry_error,
    system_ca_bundle,
    with_query,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "USER_AGENT",
    "ClientOptions",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFoundError",
    "RetryPolicy",
    "system_ca_bundle",
]

log = logging.getLogger(__name__)

MANIFEST_MEDIA_TYPES = (mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
MAX_MANIFEST_SIZE = 4 << 20  # the distribution spec's recommended limit
NOT_FOUND_CODES = frozenset({"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"})
AUTH_CODES = frozenset({"UNAUTHORIZED", "DENIED"})


class RegistryClient:
    """The distribution API of one registry host (`host[:port]`).

    `credentials` is a `Credentials`, None (anonymous), or a callable asked once, when the
    registry first asks for authentication. `sleep` is injectable for tests.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None | Callable[[], Credentials | None] = None,
        options: ClientOptions | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not host or "/" in host:
            raise UsageError(f"invalid registry host {host!r}")
        self.host = host
        self.options = options or ClientOptions()
        if self.options.retry.attempts < 1:
            raise UsageError("retry attempts must be at least 1")
        self.session = session or requests.Session()
        # the environment must not override TLS choices (REQUESTS_CA_BUNDLE) nor add
        # credentials (.netrc); proxies are taken from it explicitly in `_proxies`.
        self.session.trust_env = False
        self.session.headers["User-Agent"] = self.options.user_agent
        self.scheme = "http" if self.options.plain_http else "https"
        self._may_downgrade = not self.options.plain_http and (self.options.insecure or is_loopback_host(host))
        self._verify: str | bool = False if self.options.insecure else (self.options.ca_file or system_ca_bundle())
        self._tls: dict[str, tuple[str | bool, tuple[str, str] | None]] = {}
        self._tls_for(self.base_url)  # a broken certs.d directory is reported up front
        self._sleep = sleep
        if self.options.insecure and not self.options.plain_http:
            log.warning("registry %s: TLS certificate verification is disabled (insecure)", host)
        self.authorizer = Authorizer(host, credentials, self._send_raw)

    # ------------------------------------------------------------------ transport --

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def _proxies(self, url: str) -> dict[str, str]:
        host = urlsplit(url).netloc
        if is_loopback_host(host):
            return {}
        return dict(requests.utils.get_environ_proxies(url))

    def _tls_for(self, url: str) -> tuple[str | bool, tuple[str, str] | None]:
        """(verify, client cert) for the URL's host: the base trust plus its certs.d entries."""
        netloc = urlsplit(url).netloc
        found = self._tls.get(netloc)
        if found is None:
            tls = host_tls(netloc)
            verify = self._verify if self._verify is False else trust_bundle(self._verify, tls.ca_files)
            if tls.ca_files or tls.client_cert:
                log.debug("registry %s: TLS settings from %s", netloc, ", ".join(map(str, [*tls.ca_files, *(tls.client_cert or ())])))
            found = self._tls[netloc] = (verify, tls.client_cert)
        return found

    def _send_raw(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request with this client's TLS, proxy and timeout settings."""
        kwargs.setdefault("timeout", (self.options.connect_timeout, self.options.read_timeout))
        kwargs.setdefault("allow_redirects", True)
        verify, cert = self._tls_for(url)
        if cert is not None:
            kwargs.setdefault("cert", cert)
        if verify is not False:
            return self.session.request(method, url, verify=verify, proxies=self._proxies(url), **kwargs)
        # insecure is the user's explicit choice, logged once; urllib3 would warn per request.
        # A process-wide filter, not catch_warnings(): that one saves and restores the global
        # filter list, so threads leaving it (layers stream in parallel) drop each other's
        # filter mid-request. Re-inserted per request (filterwarnings deduplicates), since
        # callers such as test runners may reset the filters at any time.
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        return self.session.request(method, url, verify=False, proxies=self._proxies(url), **kwargs)

    def _send(self, method: str, url: str, body: Body | None, **kwargs: Any) -> requests.Response:
        """Send once, switching this host to plain HTTP when allowed and the HTTPS attempt
        met a plain-HTTP server or a refused connection."""
        try:
            return self._send_once(method, url, body, **kwargs)
        except requests.exceptions.SSLError as exc:
            if not self._downgradable(url) or is_certificate_error(exc) or is_tls_alert(exc):
                raise
            reason = "TLS handshake failed"
        except requests.exceptions.ConnectionError as exc:
            if not self._downgradable(url) or not is_refused(exc):
                raise
            reason = "connection refused"
        log.warning("registry %s: HTTPS failed (%s); using plain HTTP for this host", self.host, reason)
        self.scheme = "http"
        url = urlunsplit(("http",) + tuple(urlsplit(url))[1:])
        return self._send_once(method, url, body, **kwargs)

    def _send_once(self, method: str, url: str, body: Body | None, **kwargs: Any) -> requests.Response:
        data = open_body(body)
        try:
            return self._send_raw(method, url, data=data, **kwargs)
        finally:
            if data is not None and not isinstance(data, bytes) and hasattr(data, "close"):
                data.close()

    def _downgradable(self, url: str) -> bool:
        split = urlsplit(url)
        return self._may_downgrade and self.scheme == "https" and split.scheme == "https" and split.netloc == self.host

    def request(
        self,
        method: str,
        path: str,
        *,
        step: str,
        ref: str,
        scopes: Iterable[str],
        body: Body | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """Send with authorization and (when `retry`) bounded retries of transient failures.

        Returns the response whatever its status (except 401, handled here); transport
        failures raise `RegistryError`, or `Transient` when `retry` is False.
        """
        scopes = tuple(scopes)
        policy = self.options.retry
        attempt = 0
        refreshed = False
        while True:
            send_headers = dict(headers or {})
            try:
                authorization = self.authorizer.authorization(scopes)
            except AuthError as exc:
                raise RegistryAuthError(f"{step} {ref}: {exc}", step=step, ref=ref) from None
            if authorization:
                send_headers["Authorization"] = authorization
            url = self._url(path)
            try:
                response = self._send(method, url, body, headers=send_headers, params=params, stream=stream)
            except requests.RequestException as exc:
                transient = Transient(f"cannot reach registry {self.host}: {describe(exc)}")
                if isinstance(exc, requests.exceptions.SSLError) or (isinstance(exc, requests.exceptions.ConnectionError) and is_refused(exc)):
                    raise self._unreachable(step, ref, describe(exc)) from None
            else:
                if response.status_code == 401:
                    response.close()
                    challenge = self.authorizer.challenge
                    stale = authorization is not None and challenge is not None and challenge.scheme == "bearer"
                    if stale and not refreshed and challenge_error(response) != "insufficient_scope":
                        self.authorizer.invalidate(scopes)  # maybe an expired token: fetch a fresh one once
                        refreshed = True
                        continue
                    try:
                        self.authorizer.on_unauthorized(response, scopes, had_authorization=authorization is not None)
                    except AuthError as exc:
                        raise RegistryAuthError(f"{step} {ref}: {exc}", step=step, ref=ref, status=401) from None
                    continue
                if response.status_code not in RETRY_STATUS:
                    return response
                transient = Transient(
                    f"registry {self.host} answered HTTP {response.status_code}{code_suffix(response)}",
                    response.headers.get("Retry-After"),
                    response.status_code,
                )
                response.close()
            if not retry:
                raise transient
            if attempt + 1 >= policy.attempts:
                raise self._gave_up(step, ref, transient, attempt + 1)
            delay = policy.delay(attempt, transient.retry_after)
            log.info("%s %s: %s; retrying in %.1f s (attempt %d of %d)", step, ref, transient.reason, delay, attempt + 2, policy.attempts)
            self._sleep(delay)
            attempt += 1

    def _gave_up(self, step: str, ref: str, transient: Transient, tries: int) -> RegistryError:
        suffix = f" (after {tries} attempts)" if tries > 1 else ""
        return RegistryError(f"{step} {ref}: {transient.reason}{suffix}", step=step, ref=ref, status=transient.status)

    def _unreachable(self, step: str, ref: str, reason: str) -> RegistryError:
        hint = ""
        dirs = certs_dirs()
        if "BAD_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
            where = f" in {dirs[0] / self.host}/" if dirs else ""
            hint = f" (does the registry require a client certificate? put client.cert and client.key{where})"
        elif "certificate" in reason.lower():
            where = f"in {dirs[0] / self.host}/ca.crt" if dirs else "with ca_file"
            hint = f" (trust the registry's CA {where}, or skip verification with --source-insecure/--target-insecure)"
        elif self.scheme == "https" and not self._may_downgrade and "refused" in reason:
            hint = " (is it a plain-HTTP registry? use --plain-http or --insecure)"
        return RegistryError(f"{step} {ref}: cannot reach registry {self.host}: {reason}{hint}", step=step, ref=ref)

    def error(self, step: str, ref: str, response: requests.Response, scopes: Iterable[str] = ()) -> RegistryError:
        """The error for an unexpected answer: status, the registry's code and message."""
        status = response.status_code
        code, message = registry_error(response)
        text = f"{step} {ref}: registry {self.host} answered HTTP {status}"
        if code:
            text += f" {code}"
        if message:
            text += f": {message}"
        if status == 404 or code in NOT_FOUND_CODES:
            return RegistryNotFoundError(text, step=step, ref=ref, status=status, code=code)
        if status in (401, 403) or code in AUTH_CODES:
            scopes = tuple(scopes)
            if scopes:
                text += f" ({self.authorizer.denial(scopes, status)})"
            return RegistryAuthError(text, step=step, ref=ref, status=status, code=code)
        return RegistryError(text, step=step, ref=ref, status=status, code=code)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------- API --

    def _label(self, repo: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{reference}"

    def ping(self) -> None:
        """`GET /v2/`: checks the registry is reachable and speaks the API (401 is fine)."""
        ref = self.host
        response = self.request("GET", "/v2/", step="ping", ref=ref, scopes=())
        response.close()
        if response.status_code != 200:
            raise self.error("ping", ref, response)

    # --- blobs ---

    def blob_size(self, repo: str, digest: str) -> int | None:
        """Size of a blob from `HEAD`, or None when the repository lacks it."""
        check_digest(digest)
        ref = self._label(repo, digest)
        scopes = (repository_scope(repo, ["pull"]),)
        response = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", step="check blob", ref=ref, scopes=scopes)
        response.close()
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error("check blob", ref, response, scopes)
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RegistryError(f"check blob {ref}: registry {self.host} gave no size", step="check blob", ref=ref)
        return int(length)

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.blob_size(repo, digest) is not None

    def _get_blob(self, repo: str, digest: str, ref: str, step: str, headers: Mapping[str, str] | None = None) -> requests.Response:
        scopes = (repository_scope(repo, ["pull"]),)
        send = {"Accept-Encoding": "identity", **(headers or {})}
        response = self.request("GET", f"/v2/{repo}/blobs/{digest}", step=step, ref=ref, scopes=scopes, headers=send, stream=True)
        if response.status_code not in (200, 206):
            error = self.error(step, ref, response, scopes)
            response.close()
            raise error
        return response

    def open_blob(self, repo: str, digest: str, size: int | None = None) -> IO[bytes]:
        """A stream of the blob that verifies digest (and `size`) at EOF and resumes with
        `Range` after dropped connections."""
        check_digest(digest)
        ref = self._label(repo, digest)
        response = self._get_blob(repo, digest, ref, "fetch blob")
        raw = _ResumingStream(self, repo, digest, ref, response)
        return verified_reader(raw, digest, size, what=f"blob {ref}")

    def get_blob(self, repo: str, digest: str, size: int | None = None, *, limit: int = MAX_MANIFEST_SIZE * 4) -> bytes:
        """A small blob (config) in memory, verified; refuses more than `limit` bytes."""
        if size is not None and size > limit:
            raise UsageError(f"blob {digest} of {size} bytes is too large to read into memory")
        with self.open_blob(repo, digest, size) as stream:
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise IntegrityError(f"blob {self._label(repo, digest)} is larger than {limit} bytes")
            stream.read()  # reach EOF so the digest is checked
        return data

    def read_blob_range(self, repo: str, digest: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (HTTP Range); `IntegrityError` when short."""
        check_digest(digest)
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range {offset}+{length}")
        ref = self._label(repo, digest)
        if length == 0:
            return b""
        step = "read blob range"
        scopes = (repository_scope(repo, ["pull"]),)
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={offset}-{offset + length - 1}"}
        policy = self.options.retry
        for attempt in range(policy.attempts):
            response = self.request("GET", f"/v2/{repo}/blobs/{digest}", step=step, ref=ref, scopes=scopes, headers=headers, stream=True)
            try:
                if response.status_code == 416:
                    raise IntegrityError(f"blob {ref}: range {offset}+{length} is beyond its end")
                if response.status_code == 206:
                    data = read_upto(response.raw, length + 1)
                elif response.status_code == 200:  # the registry ignored Range
                    discard(response.raw, offset)
                    data = read_upto(response.raw, length)
                else:
                    raise self.error(step, ref, response, scopes)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                reason = describe(exc)
                if attempt + 1 >= policy.attempts:
                    raise RegistryError(f"{step} {ref}: {reason} (after {attempt + 1} attempts)", step=step, ref=ref) from None
                self._sleep(policy.delay(attempt))
                continue
            finally:
                response.close()
            if len(data) != length:
                raise IntegrityError(f"blob {ref}: range {offset}+{length} is beyond its end (got {len(data)} bytes)")
            return data
        raise AssertionError("unreachable")

    def push_blob(self, repo: str, digest: str, size: int, body: Body, *, chunk_size: int | None = None) -> None:
        """Upload a blob: monolithic (POST + PUT) up to `chunk_size`, chunked (POST +
        PATCH... + PUT) above. `body` is bytes, a file path, or a callable returning a new
        stream from the start on each call, so retries can re-send it."""
        check_digest(digest)
        if size < 0:
            raise UsageError(f"invalid blob size {size}")
        if isinstance(body, Path) and not body.is_file():
            raise FileNotFoundError(f"no such file: {body}")
        ref = self._label(repo, digest)
        chunk = self.options.chunk_size if chunk_size is None else chunk_size
        policy = self.options.retry
        for attempt in range(policy.attempts):
            try:
                if chunk and size > chunk:
                    self._upload_chunked(repo, digest, size, body, chunk, ref)
                else:
                    self._upload_monolithic(repo, digest, size, body, ref)
                return
            except Transient as exc:
                if attempt + 1 >= policy.attempts:
                    raise self._gave_up("push blob", ref, exc, attempt + 1) from None
                delay = policy.delay(attempt, exc.retry_after)
                log.info("push blob %s: %s; restarting the upload in %.1f s", ref, exc.reason, delay)
                self._sleep(delay)

    def _start_upload(self, repo: str, ref: str, params: Mapping[str, str] | None = None, scopes: tuple[str, ...] = ()) -> requests.Response:
        scopes = scopes or (repository_scope(repo, ["pull", "push"]),)
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/", step="push blob", ref=ref, scopes=scopes, params=params, body=b"", retry=False)
        return response

    def _upload_location(self, response: requests.Response, ref: str, step: str = "push blob") -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{step} {ref}: registry {self.host} gave no upload location", step=step, ref=ref)
        return urljoin(response.url or self.base_url + "/", location)

    def _upload_monolithic(self, repo: str, digest: str, size: int, body: Body, ref: str) -> None:
        scopes = (repository_scope(repo, ["pull", "push"]),)
        response = self._start_upload(repo, ref)
        response.close()
        if response.status_code != 202:
            raise self.error("push blob", ref, response, scopes)
        location = self._upload_location(response, ref)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = self.request("PUT", with_query(location, digest=digest), step="push blob", ref=ref, scopes=scopes, body=sized(body, size), headers=headers, retry=False)
        response.close()
        if response.status_code != 201:
            raise self.error("push blob", ref, response, scopes)

    def _upload_chunked(self, repo: str, digest: str, size: int, body: Body, chunk: int, ref: str) -> None:
        scopes = (repository_scope(repo, ["pull", "push"]),)
        response = self._start_upload(repo, ref)
        response.close()
        if response.status_code != 202:
            raise self.error("push blob", ref, response, scopes)
        location = self._upload_location(response, ref)
        offset = 0
        resumes = 0
        with open_at(body, 0) as stream:
            while offset < size:
                n = min(chunk, size - offset)
                data = stream.read(n)
                if len(data) != n:
                    raise IntegrityError(f"push blob {ref}: the source ended at {offset + len(data)} of {size} bytes")
                headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}
                try:
                    response = self.request("PATCH", location, step="push blob", ref=ref, scopes=scopes, body=data, headers=headers, retry=False)
                except Transient as exc:
                    resumes += 1
                    if resumes >= self.options.retry.attempts:
                        raise
                    self._sleep(self.options.retry.delay(resumes - 1, exc.retry_after))
                    location, offset = self._upload_status(location, ref, scopes)
                    if not stream.seekable():
                        raise Transient(f"cannot resume a non-seekable upload source at byte {offset}")
                    stream.seek(offset)
                    log.info("push blob %s: resuming the upload at byte %d", ref, offset)
                    continue
                response.close()
                if response.status_code != 202:
                    raise self.error("push blob", ref, response, scopes)
                location = self._upload_location(response, ref)
                offset += n
        response = self.request("PUT", with_query(location, digest=digest), step="push blob", ref=ref, scopes=scopes, body=b"", headers={"Content-Length": "0"}, retry=False)
        response.close()
        if response.status_code != 201:
            raise self.error("push blob", ref, response, scopes)

    def _upload_status(self, location: str, ref: str, scopes: tuple[str, ...]) -> tuple[str, int]:
        """Where an interrupted upload stands (`GET` on its location: `Range: 0-N`)."""
        response = self.request("GET", location, step="push blob", ref=ref, scopes=scopes, retry=False)
        response.close()
        if response.status_code != 204:
            raise Transient(f"upload session lost (HTTP {response.status_code})")
        received = response.headers.get("Range", "")
        start, _, end = received.partition("-")
        # inclusive end; distribution says "0-0" for an empty upload too, so read that as 0
        offset = int(end) + 1 if start == "0" and end.isdigit() and end != "0" else 0
        return self._upload_location(response, ref) if response.headers.get("Location") else location, offset

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount (`?mount=&from=`); False when the registry declined."""
        check_digest(digest)
        ref = self._label(repo, digest)
        scopes = (repository_scope(repo, ["pull", "push"]), repository_scope(from_repo, ["pull"]))
        response = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", step="mount blob", ref=ref, scopes=scopes, params={"mount": digest, "from": from_repo}, body=b""
        )
        response.close()
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # an upload session was opened instead: cancel it
            try:
                location = self._upload_location(response, ref, "mount blob")
                self.request("DELETE", location, step="mount blob", ref=ref, scopes=scopes, retry=False).close()
            except (RegistryError, Transient):
                pass
            return False
        raise self.error("mount blob", ref, response, scopes)

    def delete_blob(self, repo: str, digest: str) -> None:
        check_digest(digest)
        ref = self._label(repo, digest)
        scopes = (repository_scope(repo, ["delete"]),)
        response = self.request("DELETE", f"/v2/{repo}/blobs/{digest}", step="delete blob", ref=ref, scopes=scopes)
        response.close()
        if response.status_code not in (200, 202, 204):
            raise self.error("delete blob", ref, response, scopes)

    # --- manifests ---

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        """Descriptor of a manifest from `HEAD`, or None when absent."""
        ref = self._label(repo, reference)
        scopes = (repository_scope(repo, ["pull"]),)
        response = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", step="check manifest", ref=ref, scopes=scopes, headers={"Accept": MANIFEST_ACCEPT})
        response.close()
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error("check manifest", ref, response, scopes)
        digest = response.headers.get("Docker-Content-Digest", "")
        length = response.headers.get("Content-Length", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not digest.startswith("sha256:") or not length.isdigit() or media_type not in MANIFEST_MEDIA_TYPES:
            return self.get_manifest(repo, reference)[0]  # the registry did not say enough
        return Descriptor(media_type=media_type, digest=check_digest(digest), size=int(length))

    def get_manifest(self, repo: str, reference: str) -> tuple[Descriptor, bytes]:
        """A manifest or index by tag or digest, with its descriptor; digest-verified."""
        ref = self._label(repo, reference)
        step = "fetch manifest"
        scopes = (repository_scope(repo, ["pull"]),)
        response, data = self._fetch_bounded(step, ref, f"/v2/{repo}/manifests/{reference}", scopes, {"Accept": MANIFEST_ACCEPT}, MAX_MANIFEST_SIZE)
        if len(data) > MAX_MANIFEST_SIZE:
            raise IntegrityError(f"manifest {ref} is larger than {MAX_MANIFEST_SIZE} bytes")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise IntegrityError(f"manifest {ref} digest mismatch: got {digest}", expected=reference, got=digest)
        claimed = response.headers.get("Docker-Content-Digest", "")
        if claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(f"manifest {ref}: registry claims {claimed} but the content is {digest}", expected=claimed, got=digest)
        media_type = _manifest_media_type(response.headers.get("Content-Type", ""), data, ref)
        return Descriptor(media_type=media_type, digest=digest, size=len(data)), data

    def _fetch_bounded(
        self, step: str, ref: str, path: str, scopes: tuple[str, ...], headers: Mapping[str, str], limit: int
    ) -> tuple[requests.Response, bytes]:
        """GET a small document, reading at most `limit + 1` bytes; a connection dropped
        in the body is retried like any transient failure."""
        policy = self.options.retry
        for attempt in range(policy.attempts):
            response = self.request("GET", path, step=step, ref=ref, scopes=scopes, headers=headers, stream=True)
            try:
                if response.status_code != 200:
                    raise self.error(step, ref, response, scopes)
                return response, read_upto(response.raw, limit + 1, decode=True)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                reason = describe(exc)
                if attempt + 1 >= policy.attempts:
                    raise RegistryError(f"{step} {ref}: {reason} (after {attempt + 1} attempts)", step=step, ref=ref) from None
                self._sleep(policy.delay(attempt))
            finally:
                response.close()
        raise AssertionError("unreachable")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag or its digest; returns its digest."""
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and reference != digest:
            raise IntegrityError(f"manifest for {repo} does not have digest {reference}", expected=reference, got=digest)
        ref = self._label(repo, reference)
        scopes = (repository_scope(repo, ["pull", "push"]),)
        response = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", step="push manifest", ref=ref, scopes=scopes, body=data, headers={"Content-Type": media_type}
        )
        response.close()
        if response.status_code not in (200, 201):
            raise self.error("push manifest", ref, response, scopes)
        claimed = response.headers.get("Docker-Content-Digest", "")
        if claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(f"push manifest {ref}: registry stored {claimed}, expected {digest}", expected=digest, got=claimed)
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        check_digest(digest)
        ref = self._label(repo, digest)
        scopes = (repository_scope(repo, ["delete"]),)
        response = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", step="delete manifest", ref=ref, scopes=scopes)
        response.close()
        if response.status_code not in (200, 202, 204):
            raise self.error("delete manifest", ref, response, scopes)


# ------------------------------------------------------------------------ helpers --


class _ResumingStream(io.RawIOBase):
    """The body of a blob GET; after a dropped connection it re-requests from the current
    offset (`Range: bytes=N-`), at most `attempts - 1` times per blob."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, ref: str, response: requests.Response) -> None:
        self._client, self._repo, self._digest, self._ref = client, repo, digest, ref
        self._response = response
        self._pos = 0
        self._resumes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                data = self._response.raw.read(len(buffer), decode_content=False)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                self._resume(describe(exc))
                continue
            n = len(data)
            buffer[:n] = data
            self._pos += n
            return n

    def _resume(self, reason: str) -> None:
        policy = self._client.options.retry
        self._response.close()
        self._resumes += 1
        if self._resumes >= policy.attempts:
            raise RegistryError(f"fetch blob {self._ref}: {reason} (after {self._resumes} attempts)", step="fetch blob", ref=self._ref)
        self._client._sleep(policy.delay(self._resumes - 1))
        log.info("fetch blob %s: %s; resuming at byte %d", self._ref, reason, self._pos)
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else None
        response = self._client._get_blob(self._repo, self._digest, self._ref, "fetch blob", headers)
        if response.status_code == 200 and self._pos:
            discard(response.raw, self._pos)
        elif response.status_code == 206:
            start = response.headers.get("Content-Range", "").replace("bytes ", "").split("-")[0]
            if start != str(self._pos):
                response.close()
                raise RegistryError(f"fetch blob {self._ref}: registry resumed at the wrong offset", step="fetch blob", ref=self._ref)
        self._response = response

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            super().close()


def _manifest_media_type(content_type: str, data: bytes, ref: str) -> str:
    media_type = content_type.split(";")[0].strip()
    if media_type in MANIFEST_MEDIA_TYPES or media_type in mt.SCHEMA1_TYPES:
        return media_type
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"manifest {ref} is not JSON") from None
    if isinstance(obj, dict):
        declared = obj.get("mediaType")
        if isinstance(declared, str) and declared:
            return declared
        return mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    raise IntegrityError(f"manifest {ref} is not a JSON object")


