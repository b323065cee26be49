"""Registry authorization as containerd's docker authorizer does it: anonymous first, then
Basic or Bearer from the `WWW-Authenticate` challenge.

Bearer tokens are fetched with an OAuth2 POST when there are credentials (falling back to a
GET with Basic auth for token services that do not support POST) and anonymously with a
GET otherwise; they are cached per scope set until shortly before they expire. Error
messages say which permission (pull or push) or which step (token fetch) failed, and never
carry a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import requests

from nydusify_core.errors import AuthError
from nydusify_core.log import register_secret
from nydusify_core.types import Credentials

log = logging.getLogger(__name__)

CLIENT_ID = "nydusify"
DEFAULT_TOKEN_LIFETIME = 60  # seconds; the token spec's default and minimum
EXPIRY_MARGIN = 0.1  # refresh when less than this fraction of the lifetime is left
MAX_TOKEN_RESPONSE = 1 << 20
# token services known not to support the OAuth POST answer one of these (containerd's list)
OAUTH_FALLBACK_STATUS = frozenset({400, 401, 404, 405})

class TokenError(AuthError):
    """The token service refused or failed to issue a token."""


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: `Bearer realm="...",service="..."`."""

    scheme: str  # lowercased: "bearer", "basic"
    params: Mapping[str, str] = field(default_factory=dict)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse every challenge in a `WWW-Authenticate` value (RFC 7235 auth-params).

    Unparseable trailing garbage is ignored rather than fatal: the header comes from a
    server we do not control, and what matters is finding a usable scheme.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    scheme: str | None = None
    params: dict[str, str] = {}

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    def token() -> str:
        nonlocal i
        start = i
        while i < n and header[i] not in ' \t,="':
            i += 1
        return header[start:i]

    while i < n:
        skip(" \t,")
        if i >= n:
            break
        word = token()
        if not word:
            i += 1  # stray '=' or '"': skip it
            continue
        skip(" \t")
        if i < n and header[i] == "=" and scheme is not None and not header.startswith("==", i):
            i += 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(header[i])
                    i += 1
                i += 1  # closing quote
                value = "".join(chars)
            else:
                value = token()
            params[word.lower()] = value
            continue
        if i < n and header[i] == "=":  # token68 form (e.g. Basic abc==): not used by registries
            while i < n and header[i] == "=":
                i += 1
            continue
        if scheme is not None:
            challenges.append(Challenge(scheme, params))
        scheme, params = word.lower(), {}
    if scheme is not None:
        challenges.append(Challenge(scheme, params))
    return challenges


def repository_scope(path: str, actions: Iterable[str]) -> str:
    """`repository:library/nginx:pull,push`: the scope of a repository operation."""
    return f"repository:{path}:{','.join(sorted(set(actions), key=_ACTION_ORDER.get))}"


_ACTION_ORDER = {"pull": 0, "push": 1, "delete": 2, "*": 3}


def _merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Union of scopes, with actions of the same resource merged, in a stable order."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for part in scope.split(" "):
            if not part:
                continue
            resource, _, actions = part.rpartition(":")
            if not resource:
                resource, actions = part, ""
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(
        f"{resource}:{','.join(sorted(actions, key=lambda a: _ACTION_ORDER.get(a, 9)))}" for resource, actions in sorted(merged.items())
    )


def _granted_access(token: str) -> list[Mapping[str, Any]] | None:
    """The `access` claim of a JWT registry token, if the token is a JWT (unverified: used
    only to word an error message)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, json.JSONDecodeError):
        return None
    access = claims.get("access") if isinstance(claims, dict) else None
    return access if isinstance(access, list) else None


@dataclass
class _Token:
    value: str
    expires_at: float


class Authorizer:
    """Per-registry-host authorization state: the host's challenge and cached tokens.

    `request(method, url, **kwargs)` sends a request with the client's TLS, proxy and
    timeout settings (used to reach the token service).
    """

    def __init__(
        self,
        host: str,
        credentials: Credentials | None | Callable[[], Credentials | None],
        request: Callable[..., requests.Response],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._credentials_source = credentials
        self._resolved = False
        self._credentials: Credentials | None = None
        self._request = request
        self._clock = clock
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()

    # --- credentials ----------------------------------------------------------------

    @property
    def credentials(self) -> Credentials | None:
        if not self._resolved:
            source = self._credentials_source
            creds = source() if callable(source) else source
            if creds is not None:
                register_secret(creds.password)
                register_secret(creds.token)
            self._credentials, self._resolved = creds, True
        return self._credentials

    def _who(self) -> str:
        creds = self.credentials
        if creds is None or not (creds.password or creds.token):
            return "anonymous access"
        if creds.username:
            return f"user {creds.username!r}"
        return "the identity token"

    # --- the request path -------------------------------------------------------------

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def authorization(self, scopes: Sequence[str]) -> str | None:
        """The `Authorization` value to send for an operation needing `scopes`; None
        until the registry has challenged us (the first request is anonymous)."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials
            if creds is None or not creds.username:
                return None
            raw = f"{creds.username}:{creds.password}".encode()
            value = base64.b64encode(raw).decode()
            register_secret(value)
            return "Basic " + value
        if challenge.scheme == "bearer":
            return "Bearer " + self._token(tuple(scopes))
        return None

    def on_unauthorized(self, response: requests.Response, scopes: Sequence[str], *, had_authorization: bool) -> None:
        """Learn from a 401. Returns when a retry with new authorization may succeed;
        raises `AuthError` (a one-line reason) when it cannot."""
        header = response.headers.get("WWW-Authenticate", "")
        challenges = parse_www_authenticate(header)
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            raise AuthError(f"registry {self.host} requires authentication but offered no usable challenge ({_schemes(challenges)})")
        chosen = next((c for c in usable if c.scheme == "bearer"), usable[0])
        if had_authorization:
            raise AuthError(self.denial(scopes, response.status_code, chosen))
        if chosen.scheme == "basic" and (self.credentials is None or not self.credentials.username):
            raise AuthError(f"registry {self.host} requires a login and no credentials were found for it (docker login {self.host})")
        self._challenge = chosen

    def denial(self, scopes: Sequence[str], status: int, challenge: Challenge | None = None) -> str:
        """Word a refusal after authorization was sent: which permission is missing."""
        challenge = challenge or self._challenge
        actions = _requested(scopes)
        want = "push" if "push" in actions else "pull"
        repos = ", ".join(sorted({s.split(":")[1] for s in _merge_scopes(scopes) if s.startswith("repository:")})) or "?"
        if challenge is None or challenge.scheme == "basic":
            return f"registry {self.host} refused {self._who()} for {want} to {repos} (HTTP {status}): wrong credentials or no {want} permission"
        error = challenge.params.get("error", "")
        token = self._tokens.get(self._key(scopes))
        granted = _granted_access(token.value) if token else None
        if granted is not None:
            have: dict[str, set[str]] = {}
            for entry in granted:
                if isinstance(entry, dict) and entry.get("type") == "repository":
                    have.setdefault(str(entry.get("name")), set()).update(str(a) for a in entry.get("actions") or ())
            missing = [
                f"{action} on {repo}"
                for repo, acts in _requested_by_repo(scopes).items()
                for action in acts
                if action not in have.get(repo, set()) and "*" not in have.get(repo, set())
            ]
            if missing:
                return (
                    f"registry {self.host} denied {want} to {repos}: the token service granted {self._who()} no "
                    f"{', '.join(missing)} (missing permission, or the repository does not exist)"
                )
        detail = f" ({error})" if error else ""
        return f"registry {self.host} refused the token of {self._who()} for {want} to {repos} (HTTP {status}){detail}: missing {want} permission?"

    # --- tokens -----------------------------------------------------------------------

    def _key(self, scopes: Sequence[str]) -> tuple[str, ...]:
        """The scopes a token is fetched (and cached) for: the operation's own, or, for
        requests without any (ping), what the challenge asked for."""
        if scopes:
            return _merge_scopes(scopes)
        challenge = self._challenge
        scope = challenge.params.get("scope", "") if challenge else ""
        return _merge_scopes([scope] if scope else [])

    def _token(self, scopes: tuple[str, ...]) -> str:
        key = self._key(scopes)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.expires_at:
                return cached.value
        value, lifetime = self._fetch_token(key)
        register_secret(value)
        with self._lock:
            self._tokens[key] = _Token(value, self._clock() + lifetime * (1 - EXPIRY_MARGIN))
        return value

    def invalidate(self, scopes: Sequence[str]) -> None:
        """Forget the token for `scopes` (e.g. after the registry rejected it as expired)."""
        with self._lock:
            self._tokens.pop(self._key(scopes), None)

    def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        challenge = self._challenge
        assert challenge is not None
        realm = challenge.params.get("realm", "")
        split = urlsplit(realm)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise TokenError(f"registry {self.host} named an invalid token service realm {realm!r}")
        service = challenge.params.get("service", "")
        creds = self.credentials
        where = f"token service {split.netloc}"
        what = " ".join(scopes) or "(no scope)"
        secret = (creds.password or creds.token) if creds else ""
        if creds is not None and secret:
            form = {"grant_type": "password", "service": service, "client_id": CLIENT_ID, "scope": " ".join(scopes)}
            if creds.username and creds.password:
                form.update(username=creds.username, password=creds.password)
            else:
                form.update(grant_type="refresh_token", refresh_token=creds.token)
            response = self._send_token_request("POST", realm, where, data=form)
            status = response.status_code
            fallback = status in OAUTH_FALLBACK_STATUS and not (status == 405 and not creds.username)
            if status == 200:
                return self._parse_token(response, where)
            response.close()
            if not (fallback and creds.username and creds.password):
                raise self._token_refused(where, what, status)
            log.debug("%s does not support OAuth POST (HTTP %d); falling back to GET", where, status)
        params: list[tuple[str, str]] = [("service", service)] if service else []
        params += [("scope", s) for s in scopes]
        headers = {}
        if creds is not None and creds.username and creds.password:
            value = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            register_secret(value)
            headers["Authorization"] = "Basic " + value
        response = self._send_token_request("GET", realm, where, params=params, headers=headers)
        if response.status_code != 200:
            response.close()
            raise self._token_refused(where, what, response.status_code)
        return self._parse_token(response, where)

    def _send_token_request(self, method: str, url: str, where: str, **kwargs: Any) -> requests.Response:
        try:
            return self._request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise TokenError(f"cannot reach {where} for registry {self.host}: {type(exc).__name__}") from None

    def _token_refused(self, where: str, what: str, status: int) -> TokenError:
        if status in (401, 403):
            if self._who() == "anonymous access":
                return TokenError(f"{where} refused anonymous access to {what} (HTTP {status}); no credentials were found for {self.host} (docker login {self.host})")
            return TokenError(f"{where} refused {self._who()} for {what} (HTTP {status}): wrong credentials?")
        return TokenError(f"token fetch from {where} failed for {what}: HTTP {status}")

    def _parse_token(self, response: requests.Response, where: str) -> tuple[str, float]:
        body = response.content[:MAX_TOKEN_RESPONSE]
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise TokenError(f"{where} answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise TokenError(f"{where} answered with JSON that is not an object")
        value = data.get("access_token") or data.get("token")
        if not isinstance(value, str) or not value:
            raise TokenError(f"{where} answered without a token")
        register_secret(value)
        refresh = data.get("refresh_token")
        if isinstance(refresh, str):
            register_secret(refresh)
        lifetime = data.get("expires_in")
        if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime < DEFAULT_TOKEN_LIFETIME:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return value, float(lifetime)


def _schemes(challenges: Sequence[Challenge]) -> str:
    return ", ".join(c.scheme for c in challenges) or "none"


def _requested(scopes: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for acts in _requested_by_repo(scopes).values():
        out.update(acts)
    return out


def _requested_by_repo(scopes: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for scope in _merge_scopes(scopes):
        kind, _, rest = scope.partition(":")
        if kind != "repository":
            continue
        name, _, actions = rest.rpartition(":")
        out[name] = [a for a in actions.split(",") if a]
    return out


__all__ = ["Authorizer", "Challenge", "TokenError", "parse_www_authenticate", "repository_scope"]
