"""The test kit's loopback servers behave like the real services clients will meet."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from nydusify_core.testing.servers import (
    READONLY_USER,
    RegistryServer,
    S3Server,
    ServerStartError,
    start_registry,
    unique_name,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- a minimal OCI distribution client, written against the spec ---------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', params))


class Client:
    """Plain requests against one registry; answers Bearer challenges when given credentials."""

    def __init__(self, registry: RegistryServer, auth: tuple[str, str] | None = None) -> None:
        self.registry = registry
        self.session = registry.session(authenticated=False)
        self.auth = auth
        self.tokens_fetched = 0

    def request(self, method: str, path_or_url: str, **kwargs: object) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.registry.url + path_or_url
        response = self.session.request(method, url, auth=self._basic(), timeout=10, **kwargs)  # type: ignore[arg-type]
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.startswith("Bearer ") and self.auth:
            _, params = parse_challenge(challenge)
            token = self.session.get(
                params["realm"], params={"service": params["service"], "scope": params["scope"]},
                auth=self.auth, timeout=10,
            )
            token.raise_for_status()
            self.tokens_fetched += 1
            headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
            headers["Authorization"] = "Bearer " + token.json()["token"]
            response = self.session.request(method, url, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
        return response

    def _basic(self) -> tuple[str, str] | None:
        return self.auth if self.registry.auth == "basic" else None

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if "://" not in location:
            location = self.registry.url + location
        put = self.request("PUT", location, params={"digest": digest}, data=data,
                           headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == digest
        return digest

    def push_manifest(self, repo: str, tag: str, layer: bytes) -> tuple[str, bytes]:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.push_blob(repo, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.push_blob(repo, layer), "size": len(layer)}],
        }).encode()
        put = self.request("PUT", f"/v2/{repo}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
        return put.headers["Docker-Content-Digest"], manifest


def round_trip_blob(client: Client, data: bytes = b"nydus blob bytes\n" * 64) -> None:
    repo = unique_name("kit/blob")
    digest = client.push_blob(repo, data)
    head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(data)
    get = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert get.status_code == 200
    assert get.content == data


# -- plain ----------------------------------------------------------------------------------------


def test_plain_registry_serves_the_v2_api_anonymously(registry_plain: RegistryServer) -> None:
    response = registry_plain.session().get(f"{registry_plain.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_plain_registry_round_trips_a_blob(registry_plain: RegistryServer) -> None:
    round_trip_blob(Client(registry_plain))


def test_plain_registry_round_trips_a_manifest_by_tag_and_digest(registry_plain: RegistryServer) -> None:
    client = Client(registry_plain)
    repo = unique_name("kit/manifest")
    digest, manifest = client.push_manifest(repo, "v1", b"layer bytes")
    for reference in ("v1", digest):
        get = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert get.status_code == 200
        assert get.content == manifest
        assert get.headers["Docker-Content-Digest"] == sha256(manifest)


def test_plain_registry_allows_deleting_a_manifest(registry_plain: RegistryServer) -> None:
    client = Client(registry_plain)
    repo = unique_name("kit/delete")
    digest, _ = client.push_manifest(repo, "v1", b"short-lived layer")
    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert client.request("GET", f"/v2/{repo}/manifests/{digest}").status_code == 404


def test_loopback_bypasses_proxies_from_the_environment(
    registry_plain: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens on discard
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert requests.get(f"{registry_plain.url}/v2/", timeout=10).status_code == 200


# -- basic auth -----------------------------------------------------------------------------------


def test_basic_auth_registry_refuses_anonymous_clients(registry_basic_auth: RegistryServer) -> None:
    response = registry_basic_auth.session(authenticated=False).get(f"{registry_basic_auth.url}/v2/")
    assert response.status_code == 401
    assert parse_challenge(response.headers["WWW-Authenticate"])[0] == "Basic"


def test_basic_auth_registry_refuses_a_wrong_password(registry_basic_auth: RegistryServer) -> None:
    session = registry_basic_auth.session(authenticated=False)
    response = session.get(f"{registry_basic_auth.url}/v2/", auth=(registry_basic_auth.username, "wrong"))
    assert response.status_code == 401


def test_basic_auth_registry_round_trips_a_blob_with_the_credentials(registry_basic_auth: RegistryServer) -> None:
    assert registry_basic_auth.credentials is not None
    round_trip_blob(Client(registry_basic_auth, registry_basic_auth.credentials))


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_registry_round_trips_a_blob_when_the_client_trusts_its_ca(registry_tls: RegistryServer) -> None:
    assert registry_tls.url.startswith("https://127.0.0.1:")
    assert registry_tls.ca_path is not None and registry_tls.ca_path.is_file()
    round_trip_blob(Client(registry_tls))


def test_tls_registry_fails_verification_without_its_ca(registry_tls: RegistryServer) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{registry_tls.url}/v2/", verify=True, timeout=10)


def test_tls_session_ignores_requests_ca_bundle(registry_tls: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE override Session.verify; the kit's session must not
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(Path(requests.certs.where())))
    assert registry_tls.session().get(f"{registry_tls.url}/v2/").status_code == 200


# -- token auth -----------------------------------------------------------------------------------


def test_token_registry_challenges_with_a_bearer_realm(registry_token_auth: RegistryServer) -> None:
    repo = unique_name("kit/token")
    response = registry_token_auth.session().get(f"{registry_token_auth.url}/v2/{repo}/tags/list")
    assert response.status_code == 401
    scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert registry_token_auth.token_server is not None
    assert params["realm"] == registry_token_auth.token_server.realm
    assert params["service"] == registry_token_auth.token_server.service
    assert params["scope"] == f"repository:{repo}:pull"


def test_token_server_refuses_wrong_credentials(registry_token_auth: RegistryServer) -> None:
    assert registry_token_auth.token_server is not None
    response = requests.Session().get(
        registry_token_auth.token_server.realm,
        params={"service": registry_token_auth.token_server.service, "scope": "repository:x:pull"},
        auth=(registry_token_auth.username, "wrong"), timeout=10,
    )
    assert response.status_code == 401


def test_token_registry_round_trips_a_blob_through_the_challenge_flow(registry_token_auth: RegistryServer) -> None:
    assert registry_token_auth.credentials is not None
    client = Client(registry_token_auth, registry_token_auth.credentials)
    round_trip_blob(client)
    assert client.tokens_fetched >= 3  # every request answered a challenge: no anonymous access


def test_token_registry_round_trips_a_manifest(registry_token_auth: RegistryServer) -> None:
    assert registry_token_auth.credentials is not None
    client = Client(registry_token_auth, registry_token_auth.credentials)
    repo = unique_name("kit/token-manifest")
    digest, manifest = client.push_manifest(repo, "latest", b"token layer")
    get = client.request("GET", f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert get.status_code == 200
    assert get.content == manifest


def test_token_registry_refuses_push_by_a_pull_only_user(registry_token_auth: RegistryServer) -> None:
    assert registry_token_auth.password is not None
    client = Client(registry_token_auth, (READONLY_USER, registry_token_auth.password))
    response = client.request("POST", f"/v2/{unique_name('kit/readonly')}/blobs/uploads/")
    assert response.status_code == 401
    grant = registry_token_auth.token_server.grants[-1]  # type: ignore[union-attr]
    assert grant.account == READONLY_USER
    assert grant.granted[0]["actions"] == ["pull"]


def test_token_server_answers_the_oauth2_password_and_refresh_grants(registry_token_auth: RegistryServer) -> None:
    token_server = registry_token_auth.token_server
    assert token_server is not None
    repo = unique_name("kit/oauth")
    form = {"service": token_server.service, "scope": f"repository:{repo}:pull", "client_id": "kit-test"}
    session = registry_token_auth.session(authenticated=False)
    first = session.post(token_server.realm, data={**form, "grant_type": "password", "access_type": "offline",
                                                   "username": registry_token_auth.username,
                                                   "password": registry_token_auth.password})
    assert first.status_code == 200
    refreshed = session.post(token_server.realm, data={**form, "grant_type": "refresh_token",
                                                       "refresh_token": first.json()["refresh_token"]})
    assert refreshed.status_code == 200
    tags = session.get(f"{registry_token_auth.url}/v2/{repo}/tags/list",
                       headers={"Authorization": "Bearer " + refreshed.json()["access_token"]})
    assert tags.status_code == 404  # authorized; the repository just does not exist yet


# -- extra registries -----------------------------------------------------------------------------


def test_registry_factory_applies_config_overrides(registry_factory) -> None:  # type: ignore[no-untyped-def]
    readonly = registry_factory(config={"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    response = readonly.session().post(f"{readonly.url}/v2/{unique_name('kit/ro')}/blobs/uploads/")
    assert response.status_code == 405


def test_a_stopped_registry_refuses_connections(registry_factory) -> None:  # type: ignore[no-untyped-def]
    server = registry_factory()
    server.stop()
    assert not server.running()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_a_registry_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="no-such-driver"):
        start_registry(tmp_path, config={"storage": {"no-such-driver": {}}})


# -- S3 -------------------------------------------------------------------------------------------


def test_s3_round_trips_an_object(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="blobs/one", Body=b"0123456789")
    assert s3.head_object(Bucket=s3_bucket, Key="blobs/one")["ContentLength"] == 10
    assert s3.get_object(Bucket=s3_bucket, Key="blobs/one")["Body"].read() == b"0123456789"
    s3.delete_object(Bucket=s3_bucket, Key="blobs/one")
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=s3_bucket, Key="blobs/one")
    assert missing.value.response["Error"]["Code"] == "404"


def test_s3_serves_ranged_gets(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="blob", Body=b"0123456789")
    part = s3.get_object(Bucket=s3_bucket, Key="blob", Range="bytes=3-6")
    assert part["Body"].read() == b"3456"
    assert part["ContentRange"] == "bytes 3-6/10"


def test_s3_rejects_a_request_signed_with_a_wrong_secret(s3_server: S3Server, s3_bucket: str) -> None:
    forged = s3_server.client(secret_access_key="not-" + s3_server.secret_access_key)
    with pytest.raises(ClientError) as refused:
        forged.put_object(Bucket=s3_bucket, Key="forged", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_s3_rejects_an_unknown_access_key(s3_server: S3Server, s3_bucket: str) -> None:
    stranger = s3_server.client(access_key_id="AKIANOTAREALKEY00000", secret_access_key="x")
    with pytest.raises(ClientError) as refused:
        stranger.list_objects_v2(Bucket=s3_bucket)
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
