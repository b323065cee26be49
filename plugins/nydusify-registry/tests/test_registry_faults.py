"""Retries and resumption through a fault-injecting proxy in front of a real registry:
transient faults are survived, persistent ones fail with one clear line."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterator

import pytest

from nydusify_core.testing.faultproxy import FaultProxy
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_registry.client import ClientOptions, RegistryClient, RegistryError, RetryPolicy

POLICY = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.02, max_retry_after=5.0)
DATA = (hashlib.sha256(b"seed").digest() * 8192)[:200_000]
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def proxy(registry_plain: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry_plain.host) as p:
        yield p


@pytest.fixture
def sleeps() -> list[float]:
    """Delays the client asked for (recorded instead of slept)."""
    return []


@pytest.fixture
def client(proxy: FaultProxy, sleeps: list[float]) -> Iterator[RegistryClient]:
    c = RegistryClient(proxy.host, options=ClientOptions(plain_http=True, retry=POLICY, chunk_size=64 * 1024), sleep=sleeps.append)
    yield c
    c.close()


@pytest.fixture
def stored(registry_plain: RegistryServer) -> str:
    """A repository that already holds DATA (pushed directly, not through the proxy)."""
    repo = unique_name()
    with RegistryClient(registry_plain.host, options=ClientOptions(plain_http=True)) as direct:
        direct.push_blob(repo, DIGEST, len(DATA), DATA)
    return repo


def test_5xx_on_a_read_is_retried(client: RegistryClient, proxy: FaultProxy, stored: str, sleeps: list[float]) -> None:
    proxy.fail(500, times=2, method="HEAD")
    assert client.blob_size(stored, DIGEST) == len(DATA)
    assert proxy.count("HEAD") == 3
    assert sleeps == [0.01, 0.02]  # exponential, capped at max_backoff


def test_429_honours_retry_after_capped(client: RegistryClient, proxy: FaultProxy, stored: str, sleeps: list[float]) -> None:
    proxy.fail(429, times=1, method="GET", retry_after="2")
    proxy.fail(429, times=1, method="GET", retry_after="3600")
    assert client.get_blob(stored, DIGEST) == DATA
    assert sleeps == [2.0, 5.0]


def test_persistent_5xx_fails_with_one_clear_line(client: RegistryClient, proxy: FaultProxy, stored: str) -> None:
    proxy.fail(503, times=100, method="GET")
    with pytest.raises(RegistryError) as info:
        client.get_blob(stored, DIGEST)
    message = str(info.value)
    assert message == f"fetch blob {proxy.host}/{stored}@{DIGEST}: registry {proxy.host} answered HTTP 503 INJECTED: fault injected by the test proxy (after 4 attempts)"
    assert info.value.status == 503
    assert proxy.count("GET") == 4


def test_download_resumes_after_a_dropped_connection(client: RegistryClient, proxy: FaultProxy, stored: str) -> None:
    proxy.drop_body(times=2, method="GET", path="/blobs/")
    with client.open_blob(stored, DIGEST, len(DATA)) as stream:
        assert stream.read() == DATA
    ranges = [r.headers.get("Range") for r in proxy.seen if r.method == "GET"]
    assert ranges[0] is None and all(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranges[1:])
    assert len(ranges) == 3


def test_download_dropped_every_time_fails_clearly(client: RegistryClient, proxy: FaultProxy, stored: str) -> None:
    proxy.drop_body(times=100, method="GET", path="/blobs/")
    with pytest.raises(RegistryError) as info:
        with client.open_blob(stored, DIGEST, len(DATA)) as stream:
            stream.read()
    assert str(info.value) == f"fetch blob {proxy.host}/{stored}@{DIGEST}: connection dropped in the middle of the body (after 4 attempts)"


def test_range_read_is_retried_after_a_drop(client: RegistryClient, proxy: FaultProxy, stored: str) -> None:
    proxy.drop_body(times=1, method="GET")
    assert client.read_blob_range(stored, DIGEST, 1000, 5000) == DATA[1000:6000]


def test_manifest_fetch_is_retried_after_a_drop(client: RegistryClient, proxy: FaultProxy, stored: str) -> None:
    import json

    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": len(DATA)}, "layers": []}).encode()
    digest = client.put_manifest(stored, "v1", manifest, "application/vnd.oci.image.manifest.v1+json")
    proxy.drop_body(times=1, method="GET", path="/manifests/")
    proxy.drop(times=1, method="GET", path="/manifests/")
    desc, data = client.get_manifest(stored, "v1")
    assert data == manifest and desc.digest == digest


def test_monolithic_upload_restarts_after_a_dropped_put(client: RegistryClient, proxy: FaultProxy, tmp_path: Path) -> None:
    repo = unique_name()
    small = DATA[:50_000]
    digest = "sha256:" + hashlib.sha256(small).hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(small)
    proxy.drop(times=1, method="PUT")
    proxy.fail(502, times=1, method="POST")
    client.push_blob(repo, digest, len(small), path)
    assert client.blob_size(repo, digest) == len(small)
    puts = [r for r in proxy.seen if r.method == "PUT"]
    assert len(puts) == 2 and all(r.headers.get("Content-Length") == str(len(small)) for r in puts)  # the body was re-sent whole


def test_chunked_upload_resumes_where_the_registry_stopped(client: RegistryClient, proxy: FaultProxy, tmp_path: Path) -> None:
    repo = unique_name()
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    proxy.drop(times=1, method="PATCH")  # the chunk is read by the proxy but never reaches the registry
    proxy.fail(500, times=1, method="PATCH")
    client.push_blob(repo, DIGEST, len(DATA), path)
    with client.open_blob(repo, DIGEST, len(DATA)) as stream:
        assert stream.read() == DATA
    assert proxy.count("GET", "/uploads/") == 2  # the upload's status was asked after each failure
    assert proxy.count("POST", "/uploads/") == 1  # ... and the upload was not restarted


def test_persistent_upload_failure_is_one_line(client: RegistryClient, proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    proxy.drop(times=100, method="PUT")
    small = b"x" * 1000
    digest = "sha256:" + hashlib.sha256(small).hexdigest()
    repo = unique_name()
    with caplog.at_level(logging.INFO, logger="nydusify_registry"):
        with pytest.raises(RegistryError) as info:
            client.push_blob(repo, digest, len(small), small)
    message = str(info.value)
    assert message.startswith(f"push blob {proxy.host}/{repo}@{digest}: ") and message.endswith("(after 4 attempts)")
    assert "\n" not in message and "_state" not in message
    assert proxy.count("POST") == 4
    assert "restarting the upload" in caplog.text


def test_refused_connection_is_not_retried_and_says_so(sleeps: list[float]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket closes
    with RegistryClient(f"127.0.0.1:{port}", options=ClientOptions(plain_http=True, retry=POLICY), sleep=sleeps.append) as c:
        with pytest.raises(RegistryError, match=f"ping 127.0.0.1:{port}: cannot reach registry 127.0.0.1:{port}: connection refused"):
            c.ping()
    assert sleeps == []


# --- proxies from the environment ---------------------------------------------------------


def test_proxy_from_the_environment_is_used_for_remote_hosts(proxy: FaultProxy, stored: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `registry.invalid` never resolves: only the proxy (which forwards to the registry) can answer
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
    for var in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    with RegistryClient("registry.invalid:5000", options=ClientOptions(plain_http=True, retry=POLICY)) as c:
        assert c.blob_size(stored, DIGEST) == len(DATA)
    assert proxy.seen and all(r.absolute_form for r in proxy.seen)


def test_no_proxy_and_loopback_bypass_the_proxy(registry_plain: RegistryServer, proxy: FaultProxy, stored: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy.host}")
    for var in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    with RegistryClient(registry_plain.host, options=ClientOptions(retry=POLICY)) as c:  # loopback: never proxied
        assert c.blob_size(stored, DIGEST) == len(DATA)
    monkeypatch.setenv("NO_PROXY", "registry.invalid")
    with RegistryClient("registry.invalid:5000", options=ClientOptions(plain_http=True, retry=RetryPolicy(attempts=1))) as c:
        with pytest.raises(RegistryError, match="cannot reach|host name not resolved|connection failed"):
            c.blob_size(stored, DIGEST)
    assert proxy.seen == []
