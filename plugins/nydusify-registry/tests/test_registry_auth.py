"""Authentication and TLS against real registries: Basic (htpasswd), Bearer tokens with
pull/push scopes, a TLS registry with its own CA; credentials from a Docker config."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Iterator

import pytest

from nydusify_core.errors import AuthError
from nydusify_core.testing.servers import READONLY_USER, RegistryServer, unique_name
from nydusify_core.types import Credentials, EndpointOptions
from nydusify_registry.auth import Challenge, parse_www_authenticate, repository_scope
from nydusify_registry.client import ClientOptions, RegistryAuthError, RegistryClient, RegistryError, RetryPolicy
from nydusify_registry.source import RegistrySource

FAST = ClientOptions(retry=RetryPolicy(attempts=2, backoff=0.01))
DATA = b"some layer bytes" * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of every logger, down to DEBUG (urllib3 included)."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def assert_secret_free(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


# --- challenge parsing ------------------------------------------------------------------


def test_bearer_challenge_with_quoted_params() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    assert parse_www_authenticate(header) == [
        Challenge("bearer", {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"})
    ]


def test_several_challenges_and_escapes() -> None:
    header = 'Basic realm="a \\"quoted\\" realm", Bearer realm=https://t.example/token,error="insufficient_scope"'
    assert parse_www_authenticate(header) == [
        Challenge("basic", {"realm": 'a "quoted" realm'}),
        Challenge("bearer", {"realm": "https://t.example/token", "error": "insufficient_scope"}),
    ]


def test_garbage_challenges_do_not_crash() -> None:
    for header in ("", ",,,", '="x"', "Bearer", 'Bearer realm="unterminated', "Negotiate abc=="):
        parse_www_authenticate(header)
    assert parse_www_authenticate("Bearer") == [Challenge("bearer", {})]


def test_scopes_list_actions_in_a_stable_order() -> None:
    assert repository_scope("lib/app", ["push", "pull"]) == "repository:lib/app:pull,push"


# --- basic auth ---------------------------------------------------------------------------


def test_basic_auth_push_and_pull(registry_basic_auth: RegistryServer, all_logs: pytest.LogCaptureFixture) -> None:
    repo = unique_name()
    creds = Credentials(registry_basic_auth.username, registry_basic_auth.password)
    with RegistryClient(registry_basic_auth.host, credentials=creds, options=FAST) as client:
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        assert client.get_blob(repo, DIGEST) == DATA
    assert_secret_free([registry_basic_auth.password], all_logs.text)


def test_basic_auth_wrong_password_says_so_without_the_password(registry_basic_auth: RegistryServer, all_logs: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-password-123"
    with RegistryClient(registry_basic_auth.host, credentials=Credentials(registry_basic_auth.username, wrong), options=FAST) as client:
        with pytest.raises(RegistryAuthError) as info:
            client.push_blob(unique_name(), DIGEST, len(DATA), DATA)
    message = str(info.value)
    assert "push blob" in message and f"user {registry_basic_auth.username!r}" in message and "push" in message
    assert isinstance(info.value, AuthError)
    assert_secret_free([wrong, base64.b64encode(f"{registry_basic_auth.username}:{wrong}".encode()).decode()], message, all_logs.text)


def test_basic_auth_without_credentials_asks_for_a_login(registry_basic_auth: RegistryServer) -> None:
    with RegistryClient(registry_basic_auth.host, credentials=None, options=FAST) as client:
        with pytest.raises(RegistryAuthError, match=f"no credentials were found.*docker login {registry_basic_auth.host}"):
            client.blob_size(unique_name(), DIGEST)


# --- credentials from a docker config ---------------------------------------------------

def test_source_reads_basic_credentials_from_the_docker_config(registry_basic_auth: RegistryServer, docker_config_dir: Path) -> None:
    auth = base64.b64encode(f"{registry_basic_auth.username}:{registry_basic_auth.password}".encode()).decode()
    (docker_config_dir / "config.json").write_text(json.dumps({"auths": {registry_basic_auth.host: {"auth": auth}}}))
    repo = unique_name()
    with RegistryClient(registry_basic_auth.host, credentials=Credentials(registry_basic_auth.username, registry_basic_auth.password)) as c:
        c.push_blob(repo, DIGEST, len(DATA), DATA)
    from nydusify_core.oci.descriptor import Descriptor

    with RegistrySource(f"{registry_basic_auth.host}/{repo}:x") as source:  # no credentials given: docker config
        assert source.fetch(Descriptor("application/octet-stream", DIGEST, len(DATA))) == DATA


def test_credential_helper_through_the_plugin_manager(registry_basic_auth: RegistryServer, credential_helper, plugin_manager) -> None:  # type: ignore[no-untyped-def]
    credential_helper("kit", registry_basic_auth.host, registry_basic_auth.username, registry_basic_auth.password)
    repo = unique_name()
    ref = f"{registry_basic_auth.host}/{repo}:v1"
    target = plugin_manager.target("registry").open(ref, EndpointOptions(extra={"plugins": plugin_manager}))
    from nydusify_core.oci.descriptor import Descriptor
    import io

    desc = Descriptor("application/octet-stream", DIGEST, len(DATA))
    target.push_blob(desc, io.BytesIO(DATA))
    assert target.has_blob(desc)
    target.close()


# --- TLS ----------------------------------------------------------------------------------


def test_tls_verified_with_the_registry_ca(registry_tls: RegistryServer) -> None:
    with RegistryClient(registry_tls.host, options=ClientOptions(ca_file=str(registry_tls.ca_path))) as client:
        client.ping()
        assert client.scheme == "https"
        repo = unique_name()
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        assert client.get_blob(repo, DIGEST) == DATA


def test_tls_unknown_ca_fails_clearly_and_never_downgrades(registry_tls: RegistryServer) -> None:
    with RegistryClient(registry_tls.host, options=FAST) as client:
        with pytest.raises(RegistryError) as info:
            client.ping()
        assert client.scheme == "https"
    message = str(info.value)
    assert "certificate verify failed" in message and "-insecure" in message and registry_tls.host in message


def test_tls_insecure_skips_verification_and_stays_on_https(registry_tls: RegistryServer) -> None:
    with RegistryClient(registry_tls.host, options=ClientOptions(insecure=True)) as client:
        client.ping()
        assert client.scheme == "https"


def test_requests_ca_bundle_cannot_override_tls_choices(registry_tls: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the env var points at the right CA, but the client was not told to trust it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(registry_tls.ca_path))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(registry_tls.ca_path))
    with RegistryClient(registry_tls.host, options=FAST) as client:
        with pytest.raises(RegistryError, match="certificate verify failed"):
            client.ping()
    # ... and a bogus bundle in the env does not break an insecure or explicitly trusted client
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    with RegistryClient(registry_tls.host, options=ClientOptions(insecure=True)) as client:
        client.ping()
    with RegistryClient(registry_tls.host, options=ClientOptions(ca_file=str(registry_tls.ca_path))) as client:
        client.ping()


def test_https_to_a_plain_registry_falls_back_only_when_allowed(registry_plain: RegistryServer) -> None:
    host = registry_plain.host.replace("127.0.0.1", "localhost")
    with RegistryClient(registry_plain.host, options=ClientOptions(insecure=True)) as client:
        client.ping()
        assert client.scheme == "http"
    # a fallback is per client (per host): a new client starts with https again
    with RegistryClient(host, options=FAST) as other:
        assert other.scheme == "https"
        other.ping()
        assert other.scheme == "http"


# --- bearer tokens --------------------------------------------------------------------------


def _token_client(server: RegistryServer, username: str | None = None, password: str | None = None) -> RegistryClient:
    creds = Credentials(username or server.username, password or server.password) if username != "" else None
    return RegistryClient(server.host, credentials=creds, options=FAST)


def test_token_auth_push_and_pull_with_one_token_per_scope(registry_token_auth: RegistryServer, all_logs: pytest.LogCaptureFixture) -> None:
    repo = unique_name()
    tokens = registry_token_auth.token_server
    before = len(tokens.grants)
    with _token_client(registry_token_auth) as client:
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        for _ in range(3):
            assert client.has_blob(repo, DIGEST)
            assert client.get_blob(repo, DIGEST) == DATA
    grants = tokens.grants[before:]
    scopes = sorted({g.requested for g in grants})
    assert len(grants) == len(scopes) == 2  # pull,push for the upload; pull for the reads
    assert_secret_free([registry_token_auth.password], all_logs.text)


def test_identity_token_is_exchanged_with_oauth(registry_token_auth: RegistryServer) -> None:
    refresh = registry_token_auth.token_server.new_refresh_token(registry_token_auth.username)
    with RegistryClient(registry_token_auth.host, credentials=Credentials(token=refresh), options=FAST) as client:
        repo = unique_name()
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        assert client.has_blob(repo, DIGEST)


def test_pull_only_user_can_pull_but_push_names_the_missing_permission(registry_token_auth: RegistryServer, all_logs: pytest.LogCaptureFixture) -> None:
    repo = unique_name()
    with _token_client(registry_token_auth) as writer:
        writer.push_blob(repo, DIGEST, len(DATA), DATA)
    other = b"another blob"
    other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
    with _token_client(registry_token_auth, READONLY_USER, registry_token_auth.password) as reader:
        assert reader.get_blob(repo, DIGEST) == DATA
        with pytest.raises(RegistryAuthError) as info:
            reader.push_blob(repo, other_digest, len(other), other)
    message = str(info.value)
    assert f"denied push to {repo}" in message and f"user {READONLY_USER!r}" in message and f"push on {repo}" in message
    assert "\n" not in message
    assert_secret_free([registry_token_auth.password], message, all_logs.text)


def test_wrong_password_is_a_token_fetch_failure(registry_token_auth: RegistryServer, all_logs: pytest.LogCaptureFixture) -> None:
    wrong = "not-the-password-42"
    with _token_client(registry_token_auth, registry_token_auth.username, wrong) as client:
        with pytest.raises(RegistryAuthError) as info:
            client.blob_size(unique_name(), DIGEST)
    message = str(info.value)
    assert "token service" in message and "refused user" in message and "check blob" in message
    assert_secret_free([wrong], message, all_logs.text)


def test_anonymous_token_request_is_refused_with_a_login_hint(registry_token_auth: RegistryServer) -> None:
    with _token_client(registry_token_auth, "") as client:
        with pytest.raises(RegistryAuthError, match=f"refused anonymous access.*docker login {registry_token_auth.host}"):
            client.blob_size(unique_name(), DIGEST)
