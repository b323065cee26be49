"""Bearer token handling against the kit's real token service: caching per scope with
expiry, and the OAuth POST -> GET fallback for token services without POST."""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from nydusify_core.errors import AuthError
from nydusify_core.testing.faultproxy import FaultProxy
from nydusify_core.testing.servers import RegistryServer
from nydusify_core.testing.tokenserver import TOKEN_LIFETIME
from nydusify_core.types import Credentials
from nydusify_registry.auth import Authorizer, repository_scope

PULL = (repository_scope("lib/app", ["pull"]),)
PUSH = (repository_scope("lib/app", ["pull", "push"]),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


def challenged(server: RegistryServer, session: requests.Session, clock: Clock, creds: Credentials | None, realm: str | None = None) -> Authorizer:
    """An authorizer that has seen the registry's real 401 challenge (its realm optionally
    rewritten to go through a proxy)."""
    auth = Authorizer(server.host, creds, session.request, clock=clock)
    response = session.get(f"{server.url}/v2/", timeout=10)
    assert response.status_code == 401
    if realm is not None:
        header = response.headers["WWW-Authenticate"].replace(server.token_server.realm, realm)
        response.headers["WWW-Authenticate"] = header
    auth.on_unauthorized(response, (), had_authorization=False)
    return auth


def test_token_is_cached_per_scope_until_shortly_before_it_expires(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    clock = Clock()
    grants = registry_token_auth.token_server.grants
    auth = challenged(registry_token_auth, session, clock, Credentials(registry_token_auth.username, registry_token_auth.password))
    before = len(grants)
    first = auth.authorization(PULL)
    assert first and first.startswith("Bearer ")
    assert auth.authorization(PULL) == first and len(grants) == before + 1
    assert auth.authorization(PUSH) != first and len(grants) == before + 2  # another scope, another token
    clock.now += TOKEN_LIFETIME * 0.5
    assert auth.authorization(PULL) == first and len(grants) == before + 2
    clock.now += TOKEN_LIFETIME * 0.45  # within the refresh margin: fetched again
    auth.authorization(PULL)
    assert len(grants) == before + 3


def test_invalidate_forces_a_new_token(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    grants = registry_token_auth.token_server.grants
    auth = challenged(registry_token_auth, session, Clock(), Credentials(registry_token_auth.username, registry_token_auth.password))
    auth.authorization(PULL)
    before = len(grants)
    auth.invalidate(PULL)
    auth.authorization(PULL)
    assert len(grants) == before + 1


def test_oauth_post_falls_back_to_get_when_the_service_lacks_post(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    with FaultProxy(registry_token_auth.token_server.host) as proxy:
        proxy.fail(404, times=1, method="POST")
        auth = challenged(
            registry_token_auth, session, Clock(), Credentials(registry_token_auth.username, registry_token_auth.password),
            realm=f"http://{proxy.host}/token",
        )
        assert auth.authorization(PULL)
        assert [(r.method, r.fault) for r in proxy.seen] == [("POST", "status"), ("GET", "")]
        assert "Authorization" in proxy.seen[1].headers  # the GET carries Basic credentials


def test_identity_token_cannot_fall_back_to_get(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    with FaultProxy(registry_token_auth.token_server.host) as proxy:
        proxy.fail(404, times=1, method="POST")
        auth = challenged(registry_token_auth, session, Clock(), Credentials(token="some-refresh-token"), realm=f"http://{proxy.host}/token")
        with pytest.raises(AuthError, match=r"token fetch from token service .* failed .*HTTP 404"):
            auth.authorization(PULL)
        assert "some-refresh-token" not in str(proxy.seen[0].path)


def test_unreachable_token_service_is_named(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = challenged(registry_token_auth, session, Clock(), None, realm=f"http://127.0.0.1:{port}/token")
    with pytest.raises(AuthError, match=f"cannot reach token service 127.0.0.1:{port} for registry {registry_token_auth.host}"):
        auth.authorization(PULL)


def test_invalid_realm_is_rejected(registry_token_auth: RegistryServer, session: requests.Session) -> None:
    auth = challenged(registry_token_auth, session, Clock(), None, realm="file:///etc/passwd")
    with pytest.raises(AuthError, match="invalid token service realm"):
        auth.authorization(PULL)
