"""`convert` registry -> registry against real `docker-registry` servers: test images are
pushed with skopeo, converted, pulled back through the registry source plugin and their
files compared with the source rootfs (umoci's unpack of the same image)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import NydusifyError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.faultproxy import FaultProxy
from nydusify_core.testing.images import BuiltImage, expected_rootfs, push_image
from nydusify_core.testing.nydus import open_nydus_registry, pull_to_layout, unpack_nydus_image
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_core.testing.trees import diff_trees, snapshot

# what a Nydus image does not keep by design (as in tests/test_convert.py)
IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}
UPLOADS = r"/blobs/uploads/"


def compare_with_source(image: BuiltImage, ref: str, work: Path, *, platform: str | None = None, **endpoint) -> None:
    nydus = open_nydus_registry(ref, work, platform=platform, **endpoint)
    unpacked = unpack_nydus_image(nydus, work / "unpacked")
    diffs = diff_trees(snapshot(expected_rootfs(image, platform=platform)), snapshot(unpacked), ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def run(source: str, target: str, work: Path, **kw) -> dict:
    return convert(ConvertOptions(source=source, target=target, work_dir=work / "convert", **kw)).to_json()


def manifest_digest(server: RegistryServer, repo: str, ref: str) -> str | None:
    """What `repo:ref` points at, read straight from the server (None: no such tag)."""
    accept = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])
    response = server.session().head(f"{server.url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept}, timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


@pytest.fixture
def repo() -> str:
    return unique_name("conv")


# --- plain registry ---------------------------------------------------------------------


def test_synthetic_oci_image_converts_registry_to_registry(registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    result = run(f"{registry_plain.host}/{repo}:v1", f"{registry_plain.host}/{repo}:v1-nydus", tmp_path, plain_http=True)
    assert manifest_digest(registry_plain, repo, "v1-nydus") == result["digest"]
    nydus = open_nydus_registry(f"{registry_plain.host}/{repo}:v1-nydus", tmp_path / "pull", plain_http=True)
    assert nydus.manifest.media_type == mt.OCI_MANIFEST
    assert [layer.media_type for layer in nydus.manifest.layers[:-1]] == [mt.NYDUS_BLOB] * (len(nydus.manifest.layers) - 1)
    assert nydus.manifest.layers[-1].annotations[mt.ANNOTATION_NYDUS_BOOTSTRAP] == "true"
    compare_with_source(synthetic_image, f"{registry_plain.host}/{repo}:v1-nydus", tmp_path / "cmp", plain_http=True)


def test_docker_v2s2_source_gives_a_docker_nydus_manifest(registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:docker", format="v2s2")
    target = f"{registry_plain.host}/{repo}:docker-nydus"
    run(f"{registry_plain.host}/{repo}:docker", target, tmp_path, plain_http=True)
    nydus = open_nydus_registry(target, tmp_path / "pull", plain_http=True)
    assert nydus.manifest.media_type == mt.DOCKER_MANIFEST
    assert nydus.manifest.layers[-1].media_type == mt.DOCKER_LAYER_GZIP
    compare_with_source(synthetic_image, target, tmp_path / "cmp", plain_http=True)


def test_all_platforms_push_an_index_of_nydus_manifests(registry_plain: RegistryServer, multiarch_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(multiarch_image, registry_plain.host, f"{repo}:multi")
    target = f"{registry_plain.host}/{repo}:multi-nydus"
    result = run(f"{registry_plain.host}/{repo}:multi", target, tmp_path, plain_http=True, all_platforms=True)
    assert result["media_type"] in mt.INDEX_TYPES
    assert manifest_digest(registry_plain, repo, "multi-nydus") == result["digest"]
    for platform in ("linux/amd64", "linux/arm64/v8"):
        compare_with_source(multiarch_image, target, tmp_path / platform.replace("/", "-"), platform=platform, plain_http=True)


def test_merge_platform_index_references_only_pushed_content(registry_plain: RegistryServer, multiarch_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(multiarch_image, registry_plain.host, f"{repo}:multi")
    target = f"{registry_plain.host}/{repo}:merged"
    run(f"{registry_plain.host}/{repo}:multi", target, tmp_path, plain_http=True, all_platforms=True, merge_platform=True)
    # pulling copies every manifest, config and layer the index reaches: none may be missing
    root = pull_to_layout(target, tmp_path / "layout", plain_http=True)
    index = json.loads((tmp_path / "layout" / "blobs" / "sha256" / root.hex).read_text())
    kinds = [(m.get("artifactType", "oci"), m["platform"]["architecture"]) for m in index["manifests"]]
    assert kinds == [("oci", "amd64"), ("oci", "arm64"), (mt.NYDUS_MANIFEST_ARTIFACT, "amd64"), (mt.NYDUS_MANIFEST_ARTIFACT, "arm64")]
    compare_with_source(multiarch_image, target, tmp_path / "cmp", platform="linux/arm64/v8", plain_http=True)


@pytest.mark.slow
def test_debian_like_image_converts_registry_to_registry(registry_plain: RegistryServer, debian_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(debian_image, registry_plain.host, f"{repo}:bookworm")
    target = f"{registry_plain.host}/{repo}:bookworm-nydus"
    run(f"{registry_plain.host}/{repo}:bookworm", target, tmp_path, plain_http=True)
    compare_with_source(debian_image, target, tmp_path / "cmp", plain_http=True)


def test_layers_already_in_the_target_are_not_uploaded_again(registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    with FaultProxy(registry_plain.host) as proxy:
        source, target = f"{proxy.host}/{repo}:v1", f"{proxy.host}/{repo}:v1-nydus"
        first = run(source, target, tmp_path / "1", plain_http=True)
        uploads = proxy.count("POST", UPLOADS)
        assert uploads >= len(first["blobs"]) + 2  # data blobs, bootstrap layer, config
        proxy.clear()
        second = run(source, f"{proxy.host}/{repo}:again", tmp_path / "2", plain_http=True)
        assert second["digest"] == first["digest"]  # the build is deterministic
        assert proxy.count("POST", UPLOADS) == 0
        assert proxy.count("PATCH", UPLOADS) == 0 and proxy.count("PUT", UPLOADS) == 0
        assert proxy.count("HEAD", r"/blobs/sha256:") >= len(first["blobs"])


# --- push order under persistent faults ---------------------------------------------------


def test_persistent_manifest_put_failure_leaves_no_tag(registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    with FaultProxy(registry_plain.host) as proxy:
        proxy.fail(500, times=1000, method="PUT", path=r"/manifests/")
        with pytest.raises(NydusifyError) as info:
            run(f"{proxy.host}/{repo}:v1", f"{proxy.host}/{repo}:v1-nydus", tmp_path, plain_http=True)
    message = str(info.value)
    assert "\n" not in message and "manifest" in message and "500" in message
    assert manifest_digest(registry_plain, repo, "v1-nydus") is None


def test_persistent_blob_upload_failure_keeps_the_previous_complete_image(registry_plain: RegistryServer, synthetic_image: BuiltImage, multiarch_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    push_image(multiarch_image, registry_plain.host, f"{repo}:v2")
    previous = run(f"{registry_plain.host}/{repo}:v1", f"{registry_plain.host}/{repo}:nydus", tmp_path / "1", plain_http=True)
    with FaultProxy(registry_plain.host) as proxy:
        proxy.fail(503, times=1000, method="PUT", path=UPLOADS)
        with pytest.raises(NydusifyError) as info:
            run(f"{proxy.host}/{repo}:v2", f"{proxy.host}/{repo}:nydus", tmp_path / "2", plain_http=True, all_platforms=True)
        assert proxy.count("PUT", r"/manifests/nydus$") == 0  # the tag was never moved
    message = str(info.value)
    assert "\n" not in message and "503" in message
    assert manifest_digest(registry_plain, repo, "nydus") == previous["digest"]
    compare_with_source(synthetic_image, f"{registry_plain.host}/{repo}:nydus", tmp_path / "cmp", plain_http=True)


@pytest.mark.parametrize("fault", ["500", "429", "drop"])
def test_transient_faults_during_blob_upload_are_survived(fault: str, registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    with FaultProxy(registry_plain.host) as proxy:
        if fault == "drop":
            proxy.drop(times=2, method="PUT", path=UPLOADS)
            proxy.drop(times=1, method="POST", path=UPLOADS)
        else:
            proxy.fail(int(fault), times=2, method="PUT", path=UPLOADS, retry_after="0" if fault == "429" else None)
            proxy.fail(int(fault), times=1, method="POST", path=UPLOADS, retry_after="0" if fault == "429" else None)
        run(f"{proxy.host}/{repo}:v1", f"{proxy.host}/{repo}:v1-nydus", tmp_path, plain_http=True)
        assert sum(f.hits for f in proxy.faults) == 3
    compare_with_source(synthetic_image, f"{registry_plain.host}/{repo}:v1-nydus", tmp_path / "cmp", plain_http=True)


# --- authentication and TLS --------------------------------------------------------------

def write_auths(directory: Path, server: RegistryServer) -> None:
    assert server.credentials is not None
    auth = base64.b64encode(":".join(server.credentials).encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))


def test_basic_auth_from_the_docker_config(registry_basic_auth: RegistryServer, synthetic_image: BuiltImage, docker_config_dir: Path, repo: str, tmp_path: Path) -> None:
    write_auths(docker_config_dir, registry_basic_auth)
    push_image(synthetic_image, registry_basic_auth.host, f"{repo}:v1", creds=registry_basic_auth.credentials)
    target = f"{registry_basic_auth.host}/{repo}:v1-nydus"
    run(f"{registry_basic_auth.host}/{repo}:v1", target, tmp_path, plain_http=True)
    compare_with_source(synthetic_image, target, tmp_path / "cmp", plain_http=True)


def test_basic_auth_through_a_credential_helper(registry_basic_auth: RegistryServer, synthetic_image: BuiltImage, credential_helper, repo: str, tmp_path: Path) -> None:
    assert registry_basic_auth.credentials is not None
    credential_helper("nydustest", registry_basic_auth.host, *registry_basic_auth.credentials)
    push_image(synthetic_image, registry_basic_auth.host, f"{repo}:v1", creds=registry_basic_auth.credentials)
    target = f"{registry_basic_auth.host}/{repo}:v1-nydus"
    run(f"{registry_basic_auth.host}/{repo}:v1", target, tmp_path, plain_http=True)
    compare_with_source(synthetic_image, target, tmp_path / "cmp", plain_http=True)


def test_tls_registry_with_insecure_flags(registry_tls: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_tls.host, f"{repo}:v1")
    target = f"{registry_tls.host}/{repo}:v1-nydus"
    run(f"{registry_tls.host}/{repo}:v1", target, tmp_path, source_insecure=True, target_insecure=True)
    compare_with_source(synthetic_image, target, tmp_path / "cmp", insecure=True)


def test_tls_registry_verified_with_its_ca(registry_tls: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    push_image(synthetic_image, registry_tls.host, f"{repo}:v1")
    target = f"{registry_tls.host}/{repo}:v1-nydus"
    with pytest.raises(NydusifyError) as info:  # an unknown CA is refused, with a hint
        run(f"{registry_tls.host}/{repo}:v1", target, tmp_path / "refused")
    assert "\n" not in str(info.value) and "insecure" in str(info.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(registry_tls.ca_path))  # the system CA bundle, as OpenSSL finds it
    run(f"{registry_tls.host}/{repo}:v1", target, tmp_path)
    assert manifest_digest(registry_tls, repo, "v1-nydus") is not None
    compare_with_source(synthetic_image, target, tmp_path / "cmp", extra={"ca_file": str(registry_tls.ca_path)})


def test_bearer_token_registry(registry_token_auth: RegistryServer, synthetic_image: BuiltImage, docker_config_dir: Path, repo: str, tmp_path: Path) -> None:
    write_auths(docker_config_dir, registry_token_auth)
    push_image(synthetic_image, registry_token_auth.host, f"{repo}:v1", creds=registry_token_auth.credentials)
    target = f"{registry_token_auth.host}/{repo}:v1-nydus"
    run(f"{registry_token_auth.host}/{repo}:v1", target, tmp_path, plain_http=True)
    compare_with_source(synthetic_image, target, tmp_path / "cmp", plain_http=True)
