"""A small Docker-registry token server on loopback (the `auth.token` side of distribution).

It answers `GET /token?service=..&scope=..` (Basic credentials) and the OAuth2 form
`POST /token` (`grant_type=password` or `refresh_token`), grants the intersection of the
requested actions and what the user may do, and returns an ES256 JWT whose `x5c` header
carries the signing certificate; the registry trusts it through `rootcertbundle`.
It keeps a log of what it granted so tests can check how often a client asked.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nydusify_core.testing.certs import SigningKey, make_signing_key

__all__ = ["TokenServer", "TokenGrant", "ALL_ACTIONS"]

ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})
TOKEN_LIFETIME = 300  # seconds; the registry allows 60 s of clock skew on top


@dataclass(frozen=True)
class TokenGrant:
    """One issued token: who asked, what was requested, what was granted."""

    account: str | None
    requested: tuple[str, ...]
    granted: tuple[dict[str, Any], ...]


@dataclass
class _User:
    password: str
    actions: frozenset[str]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """Threaded token endpoint; `realm` goes into the registry's `auth.token.realm`."""

    def __init__(self, workdir: Path, *, service: str = "nydusify-test-registry",
                 issuer: str = "nydusify-test-token-server") -> None:
        self.service = service
        self.issuer = issuer
        self.signing_key: SigningKey = make_signing_key(workdir)
        self.grants: list[TokenGrant] = []
        self._users: dict[str, _User] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> account
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    @property
    def rootcertbundle(self) -> Path:
        return self.signing_key.cert_path

    def add_user(self, username: str, password: str, actions: frozenset[str] | set[str] = ALL_ACTIONS) -> None:
        """Allow `username` the given repository actions (e.g. {"pull"} for a read-only user)."""
        with self._lock:
            self._users[username] = _User(password, frozenset(actions))

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    # -- token logic -------------------------------------------------------------------------

    def check_password(self, username: str, password: str) -> bool:
        with self._lock:
            user = self._users.get(username)
        return user is not None and secrets.compare_digest(user.password, password)

    def issue(self, account: str, scopes: list[str]) -> dict[str, Any]:
        """The JSON body of a successful token response for an authenticated `account`."""
        with self._lock:
            allowed = self._users[account].actions
        access = []
        for scope in scopes:
            parsed = _parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            granted = sorted(wanted & allowed) if "*" not in allowed else sorted(wanted)
            access.append({"type": kind, "name": name, "actions": granted})
        token = self._sign(account, access)
        with self._lock:
            self.grants.append(TokenGrant(account, tuple(scopes), tuple(access)))
        now = time.time()
        return {
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }

    def new_refresh_token(self, account: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = account
        return token

    def account_for_refresh_token(self, token: str) -> str | None:
        with self._lock:
            return self._refresh.get(token)

    def _sign(self, account: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.signing_key.cert_der_b64]}
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        ).encode("ascii")
        der = self.signing_key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
        r, s = decode_dss_signature(der)
        return signing_input.decode("ascii") + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _parse_scope(scope: str) -> tuple[str, str, frozenset[str]] | None:
    """`repository:some/name:pull,push` -> ("repository", "some/name", {"pull", "push"})."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return kind, name, frozenset(a for a in actions.split(",") if a)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # tests read `server.grants`, not stderr

        def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _unauthorized(self) -> None:
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad or missing credentials"}]},
                        {"WWW-Authenticate": 'Basic realm="nydusify-test-token-server"'})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            if url.path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            query = parse_qs(url.query)
            if query.get("service", [server.service]) != [server.service]:
                self._reply(400, {"errors": [{"code": "INVALID_SERVICE"}]})
                return
            creds = _basic_credentials(self.headers.get("Authorization"))
            if creds is None or not server.check_password(*creds):
                self._unauthorized()
                return
            body = server.issue(creds[0], query.get("scope", []))
            if query.get("offline_token") == ["true"]:
                body["refresh_token"] = server.new_refresh_token(creds[0])
            self._reply(200, body)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if urlsplit(self.path).path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if form.get("service", [server.service]) != [server.service]:
                self._reply(400, {"error": "invalid_request"})
                return
            grant_type = form.get("grant_type", [""])[0]
            account: str | None = None
            if grant_type == "password":
                user, password = form.get("username", [""])[0], form.get("password", [""])[0]
                account = user if server.check_password(user, password) else None
            elif grant_type == "refresh_token":
                account = server.account_for_refresh_token(form.get("refresh_token", [""])[0])
            if account is None:
                self._reply(401, {"error": "invalid_grant"})
                return
            scopes = [s for joined in form.get("scope", []) for s in joined.split(" ") if s]
            body = server.issue(account, scopes)
            if form.get("access_type") == ["offline"]:
                body["refresh_token"] = server.new_refresh_token(account)
            self._reply(200, body)

    return Handler
