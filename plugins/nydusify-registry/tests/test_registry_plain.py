"""Blobs and manifests against a real plain-HTTP `docker-registry` on loopback."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from nydusify_core.errors import IntegrityError, NotFoundError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.protocols import Source, StorageBackend, Target
from nydusify_core.testing.backend_contract import BackendContract
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_core.types import BackendContext, EndpointOptions
from nydusify_registry.backend import RegistryBackend, RegistryBackendConfig
from nydusify_registry.client import ClientOptions, RegistryClient, RegistryNotFoundError, RetryPolicy
from nydusify_registry.source import RegistrySource
from nydusify_registry.target import RegistryTarget

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def blob_bytes(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


def make_image(target: Target, tag: str, layers: list[bytes]) -> tuple[Descriptor, bytes, list[Descriptor]]:
    """Push `layers`, a config and a manifest through a `Target`; returns the manifest."""
    layer_descs = []
    for data in layers:
        desc = Descriptor.for_bytes(mt.OCI_LAYER_GZIP, data)
        target.push_blob(desc, io.BytesIO(data))
        layer_descs.append(desc)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_desc = Descriptor.for_bytes(mt.OCI_CONFIG, config)
    target.push_blob(config_desc, io.BytesIO(config))
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc.to_json(), "layers": [d.to_json() for d in layer_descs]}
    ).encode()
    manifest_desc = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest)
    target.push_manifest(manifest_desc, manifest, tag=tag)
    return manifest_desc, manifest, layer_descs


@pytest.fixture
def client(registry_plain: RegistryServer) -> RegistryClient:
    c = RegistryClient(registry_plain.host, options=ClientOptions(retry=FAST_RETRY))
    yield c
    c.close()


@pytest.fixture
def repo() -> str:
    return unique_name("repo")


def test_ping_finds_the_api_over_plain_http_on_loopback(client: RegistryClient) -> None:
    client.ping()
    assert client.scheme == "http"  # https was tried and fell back, for this host only


def test_plain_http_option_never_tries_https(registry_plain: RegistryServer) -> None:
    with RegistryClient(registry_plain.host, options=ClientOptions(plain_http=True)) as c:
        assert c.scheme == "http"
        c.ping()


def test_monolithic_blob_round_trip(client: RegistryClient, repo: str) -> None:
    data = blob_bytes(5000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.blob_size(repo, digest) is None
    client.push_blob(repo, digest, len(data), data)
    assert client.blob_size(repo, digest) == len(data)
    assert client.get_blob(repo, digest, len(data)) == data
    with client.open_blob(repo, digest) as stream:
        assert stream.read() == data
    assert client.read_blob_range(repo, digest, 100, 50) == data[100:150]


def test_chunked_upload_from_a_file(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    data = blob_bytes(300_000, seed=1)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blob(repo, digest, len(data), path, chunk_size=64 * 1024)
    with client.open_blob(repo, digest, len(data)) as stream:
        assert stream.read() == data


def test_upload_from_a_callable_stream(client: RegistryClient, repo: str) -> None:
    data = blob_bytes(70_000, seed=2)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blob(repo, digest, len(data), lambda: io.BytesIO(data))
    assert client.has_blob(repo, digest)


def test_empty_blob(client: RegistryClient, repo: str) -> None:
    digest = "sha256:" + hashlib.sha256(b"").hexdigest()
    client.push_blob(repo, digest, 0, b"")
    assert client.blob_size(repo, digest) == 0
    assert client.get_blob(repo, digest, 0) == b""


def test_wrong_digest_is_refused_by_the_registry(client: RegistryClient, repo: str) -> None:
    digest = "sha256:" + "0" * 64
    with pytest.raises(Exception) as info:
        client.push_blob(repo, digest, 3, b"abc")
    assert "DIGEST_INVALID" in str(info.value)
    assert f"push blob {client.host}/{repo}@{digest}" in str(info.value)


def test_missing_blob_and_manifest_are_not_found_with_the_registry_code(client: RegistryClient, repo: str) -> None:
    with pytest.raises(RegistryNotFoundError) as info:
        client.get_manifest(repo, "nope")
    assert isinstance(info.value, NotFoundError)
    assert "fetch manifest" in str(info.value) and "MANIFEST_UNKNOWN" in str(info.value)
    with pytest.raises(NotFoundError, match="BLOB_UNKNOWN"):
        client.get_blob(repo, "sha256:" + "1" * 64)


def test_read_range_beyond_the_end_is_an_integrity_error(client: RegistryClient, repo: str) -> None:
    data = blob_bytes(100, seed=3)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blob(repo, digest, len(data), data)
    with pytest.raises(IntegrityError):
        client.read_blob_range(repo, digest, 90, 20)
    with pytest.raises(IntegrityError):
        client.read_blob_range(repo, digest, 200, 1)


def test_size_mismatch_is_detected_while_streaming(client: RegistryClient, repo: str) -> None:
    data = blob_bytes(1000, seed=4)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blob(repo, digest, len(data), data)
    with pytest.raises(IntegrityError):
        with client.open_blob(repo, digest, size=999) as stream:
            stream.read()


def test_cross_repository_mount(client: RegistryClient, repo: str) -> None:
    data = blob_bytes(2000, seed=5)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blob(repo, digest, len(data), data)
    other = unique_name("mounted")
    assert client.mount_blob(other, digest, repo) is True
    assert client.blob_size(other, digest) == len(data)
    assert client.mount_blob(unique_name("x"), "sha256:" + "2" * 64, repo) is False


def test_manifests_by_digest_and_tag(client: RegistryClient, repo: str) -> None:
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repo, config_digest, len(config), config)
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": 2}, "layers": []}
    ).encode()
    digest = client.put_manifest(repo, "v1", manifest, mt.OCI_MANIFEST)
    desc, data = client.get_manifest(repo, "v1")
    assert (desc.media_type, desc.digest, desc.size, data) == (mt.OCI_MANIFEST, digest, len(manifest), manifest)
    assert client.get_manifest(repo, digest)[1] == manifest
    assert client.head_manifest(repo, "v1") == desc
    assert client.head_manifest(repo, "absent") is None
    client.delete_manifest(repo, digest)
    assert client.head_manifest(repo, digest) is None


def test_docker_media_types_are_kept(client: RegistryClient, repo: str) -> None:
    config = b'{"os":"linux"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repo, config_digest, len(config), config)
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_digest, "size": len(config)}, "layers": []}
    ).encode()
    client.put_manifest(repo, "docker", manifest, mt.DOCKER_MANIFEST)
    assert client.get_manifest(repo, "docker")[0].media_type == mt.DOCKER_MANIFEST


def test_source_and_target_round_trip(registry_plain: RegistryServer, repo: str) -> None:
    ref = f"{registry_plain.host}/{repo}:v1"
    layers = [blob_bytes(10_000, seed=6), blob_bytes(20_000_000, seed=7)]  # the second is spooled to disk
    with RegistryTarget(ref, EndpointOptions(extra={"retry": FAST_RETRY})) as target:
        assert isinstance(target, Target)
        manifest_desc, manifest, layer_descs = make_image(target, "v1", layers)
        assert target.has_blob(layer_descs[0])
    with RegistrySource(ref) as source:
        assert isinstance(source, Source)
        root = source.resolve()
        assert root == Descriptor(mt.OCI_MANIFEST, manifest_desc.digest, len(manifest))
        assert source.fetch(root) == manifest
        for desc, data in zip(layer_descs, layers):
            with source.open_blob(desc) as stream:
                assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()
    with RegistrySource(f"{registry_plain.host}/{repo}@{manifest_desc.digest}") as pinned:
        assert pinned.resolve().digest == manifest_desc.digest


def test_target_refuses_a_stream_that_does_not_match_its_descriptor(registry_plain: RegistryServer, repo: str) -> None:
    with RegistryTarget(f"{registry_plain.host}/{repo}:v1") as target:
        desc = Descriptor.for_bytes(mt.OCI_LAYER_GZIP, b"promised")
        with pytest.raises(IntegrityError):
            target.push_blob(desc, io.BytesIO(b"delivered"))
        assert not target.has_blob(desc)


def test_target_skips_existing_blobs_and_mounts_from_a_known_repository(registry_plain: RegistryServer, repo: str) -> None:
    data = blob_bytes(4000, seed=8)
    desc = Descriptor.for_bytes(mt.OCI_LAYER_GZIP, data)
    with RegistryTarget(f"{registry_plain.host}/{repo}:src") as first:
        first.push_blob(desc, io.BytesIO(data))
        first.push_blob(desc, io.BytesIO(b""))  # present: the stream is not even read
    other = unique_name("dest")
    with RegistryTarget(f"{registry_plain.host}/{other}:v1", EndpointOptions(extra={"mount_from": [f"{registry_plain.host}/{repo}:src"]})) as second:
        second.push_blob(desc, io.BytesIO(b""))  # mounted, not uploaded
        assert second.has_blob(desc)
    annotated = desc.with_annotations({f"containerd.io/distribution.source.{registry_plain.host}": repo})
    third_repo = unique_name("dest")
    with RegistryTarget(f"{registry_plain.host}/{third_repo}:v1") as third:
        third.push_blob(annotated, io.BytesIO(b""))
        assert third.has_blob(desc)


def test_registry_plugin_is_found_by_the_plugin_manager(plugin_manager, registry_plain: RegistryServer) -> None:  # type: ignore[no-untyped-def]
    ref = f"{registry_plain.host}/{unique_name()}:v1"
    assert plugin_manager.detect_source(ref).name == "registry"
    assert plugin_manager.detect_target(ref).name == "registry"
    spec = plugin_manager.backend("registry")
    from nydusify_core.plugins import parse_backend_config

    config = parse_backend_config(spec, {})
    backend = spec.create(config, BackendContext(target_ref=ref, plugins=plugin_manager))
    assert isinstance(backend, StorageBackend) and backend.type == "registry"
    backend.close()


def test_backend_needs_a_target_reference() -> None:
    with pytest.raises(Exception, match="target reference"):
        RegistryBackend(RegistryBackendConfig(), BackendContext())


class TestRegistryBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, registry_plain: RegistryServer) -> StorageBackend:
        ref = f"{registry_plain.host}/{unique_name('contract')}:latest"
        backend = RegistryBackend(RegistryBackendConfig(chunk_size=1 << 20), BackendContext(target_ref=ref))
        yield backend
        backend.close()
