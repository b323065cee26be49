"""The test kit's OCI test images: each builds, real tools accept it, and its expected rootfs
holds the edge cases the converter will be checked against."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.images import (
    BuiltImage, ImageBuildError, expected_rootfs, push_image,
)
from nydusify_core.testing.imagebuild import synthetic
from nydusify_core.testing.imagebuild.cache import CACHE_ENV, cached_build
from nydusify_core.testing.imagebuild.tools import run
from nydusify_core.testing.trees import Entry, diff_trees, snapshot

DEEP_PATH = "data/" + "/".join(synthetic.DEEP_DIRS)
DEEP = b"/" + DEEP_PATH.encode()  # the same path as a snapshot key


def skopeo_inspect(ref: str, *extra: str) -> dict:
    return json.loads(run(["skopeo", "--insecure-policy", "inspect", *extra, ref]))


def umoci_stat(image: BuiltImage) -> dict:
    return json.loads(run(["umoci", "stat", "--json", "--image", f"{image.path}:{image.tag}"]))


def layer_names(image: BuiltImage, index: int) -> list[str]:
    with tarfile.open(image.blob_path(image.layer_digests[index])) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def rootfs(synthetic_image: BuiltImage) -> Path:
    return expected_rootfs(synthetic_image)


@pytest.fixture(scope="module")
def synthetic_tree(rootfs: Path) -> dict[bytes, Entry]:
    return snapshot(rootfs)


# --- synthetic: the image itself ------------------------------------------------------------

def test_synthetic_is_an_oci_layout_that_umoci_and_skopeo_accept(synthetic_image: BuiltImage) -> None:
    assert (synthetic_image.path / "oci-layout").is_file()
    assert synthetic_image.ref == f"oci:{synthetic_image.path}:latest"
    assert len(umoci_stat(synthetic_image)["history"]) == 5
    info = skopeo_inspect(synthetic_image.ref)
    assert info["Digest"] == synthetic_image.digest
    assert info["Layers"] == synthetic_image.layer_digests


def test_synthetic_has_four_gzip_layers_and_an_empty_layer_history_entry(synthetic_image: BuiltImage) -> None:
    assert synthetic_image.media_type == mt.OCI_MANIFEST
    assert synthetic_image.layer_media_types == [mt.OCI_LAYER_GZIP] * 4
    history = synthetic_image.config["history"]
    assert [h.get("empty_layer", False) for h in history] == [False, False, True, False, False]


def test_synthetic_config_carries_cmd_env_labels(synthetic_image: BuiltImage) -> None:
    config = synthetic_image.config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["config"]["Cmd"] == ["/bin/sh", "-c", "cat /data/regular.txt"]
    assert "PATH=/usr/bin:/bin" in config["config"]["Env"]
    assert config["config"]["Labels"]["nydus.test.image"] == "synthetic"
    assert config["created"] == "2020-01-01T00:00:00Z"


def test_synthetic_upper_layers_hold_whiteouts_and_an_opaque_marker(synthetic_image: BuiltImage) -> None:
    assert {"data/.wh.symlink-dangling", ".wh.todelete"} <= set(layer_names(synthetic_image, 1))
    assert "opaque-dir/.wh..wh..opq" in layer_names(synthetic_image, 2)
    layer4 = layer_names(synthetic_image, 3)
    assert "data/.wh.sparse.bin" in layer4 and "data" not in layer4  # no parent directory entry
    assert f"{DEEP_PATH}/.wh.deleted-by-long-whiteout" in layer4


def test_synthetic_layer_tars_use_three_header_styles(synthetic_image: BuiltImage) -> None:
    def raw(index: int) -> bytes:
        return gzip.decompress(synthetic_image.blob_path(synthetic_image.layer_digests[index]).read_bytes())

    assert b"SCHILY.xattr.user.foo" in raw(0)  # umoci: PAX with xattrs
    assert b"PaxHeaders/fresh" in raw(2)  # GNU tar POSIX format, sub-second mtime
    assert b"././@LongLink" in raw(3)  # GNU tar GNU format, long name


def test_synthetic_builds_byte_identically(synthetic_image: BuiltImage, tmp_path: Path) -> None:
    synthetic.build_synthetic(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "index.json").read_text())["manifests"][0]["digest"]
    assert again == synthetic_image.digest


# --- synthetic: the expected rootfs --------------------------------------------------------

def test_rootfs_has_device_nodes_and_a_fifo(synthetic_tree: dict[bytes, Entry]) -> None:
    char, block = synthetic_tree[b"/devices/char-1-3"], synthetic_tree[b"/devices/block-7-0"]
    assert (char.kind, char.rdev) == ("char", os.makedev(1, 3))
    assert (block.kind, block.rdev) == ("block", os.makedev(7, 0))
    assert char.mode == 0o666
    assert synthetic_tree[b"/data/fifo"].kind == "fifo"


def test_rootfs_has_xattrs_in_user_trusted_and_security_namespaces(synthetic_tree: dict[bytes, Entry]) -> None:
    assert dict(synthetic_tree[b"/data/regular.txt"].xattrs) == {b"user.foo": b"changed"}  # rewritten by layer 2
    assert dict(synthetic_tree[b"/data/empty"].xattrs) == {b"user.binary": b"\x00\xff\x10"}
    assert dict(synthetic_tree[b"/data/sub"].xattrs) == {b"user.dirattr": b"on-a-dir"}
    assert dict(synthetic_tree[b"/data/text-8m.txt"].xattrs) == {b"trusted.custom": b"trusted-value"}
    assert dict(synthetic_tree[b"/data/random-4m.bin"].xattrs) == {b"security.capability": synthetic.CAPABILITY_XATTR}


def test_rootfs_keeps_hardlinks_within_a_layer(synthetic_tree: dict[bytes, Entry]) -> None:
    regular = frozenset({b"/data/regular.txt", b"/data/hardlink-to-regular"})
    assert synthetic_tree[b"/data/hardlink-to-regular"].links == synthetic_tree[b"/data/regular.txt"].links == regular
    cross_dir = frozenset({b"/data/sub/hardlink-cross-dir", b"/data/random-1m-plus-1.bin"})
    assert synthetic_tree[b"/data/sub/hardlink-cross-dir"].links == cross_dir
    both_in_layer2 = frozenset({b"/data/l2-hardlink", b"/data/l2-target"})
    assert synthetic_tree[b"/data/l2-hardlink"].links == synthetic_tree[b"/data/l2-target"].links == both_in_layer2


def test_rootfs_has_whiteouts_and_opaque_dir_applied(synthetic_tree: dict[bytes, Entry]) -> None:
    for gone in (b"/todelete", b"/data/symlink-dangling", b"/data/sparse.bin", b"/data/dup-b.bin",
                 b"/opaque-dir/inner", b"/opaque-dir/o2", DEEP + b"/deleted-by-long-whiteout"):
        assert gone not in synthetic_tree, gone
    assert {b"/opaque-dir/fresh", b"/opaque-dir/inner2/n", DEEP + b"/file-in-deep-path.txt"} <= set(synthetic_tree)
    assert not any(b".wh." in path for path in synthetic_tree)


def test_rootfs_has_type_changes_and_modifications(synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_tree[b"/data/file-becomes-dir"].kind == "dir"
    assert synthetic_tree[b"/data/file-becomes-dir/f"].kind == "file"
    became_symlink = synthetic_tree[b"/data/dir-becomes-symlink"]
    assert (became_symlink.kind, became_symlink.target) == ("symlink", b"sub")
    assert b"/data/dir-becomes-symlink/inside" not in synthetic_tree
    assert synthetic_tree[b"/data/modified.txt"].sha256 == hashlib.sha256(b"m2-changed\n").hexdigest()
    assert synthetic_tree[b"/data/chmod-only"].mode == 0o600


def test_rootfs_has_file_data_edge_cases(rootfs: Path, synthetic_tree: dict[bytes, Entry]) -> None:
    assert (rootfs / "data/random-4m.bin").read_bytes() == synthetic.prng("rand4m", 4 << 20)
    assert synthetic_tree[b"/data/random-1m-plus-1.bin"].size == (1 << 20) + 1
    assert synthetic_tree[b"/data/empty"].size == 0
    assert synthetic_tree[b"/data/zeros-2m.bin"].sha256 == hashlib.sha256(bytes(2 << 20)).hexdigest()
    assert synthetic_tree[b"/data/dup-a.bin"].sha256 == synthetic_tree[b"/data/dup-c-in-l2.bin"].sha256
    assert synthetic_tree[b"/data/text-8m.txt"].size == 8 << 20


def test_rootfs_has_symlink_edge_cases(synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_tree[b"/data/symlink-rel"].target == b"regular.txt"
    assert synthetic_tree[b"/data/symlink-abs"].target == b"/data/regular.txt"
    assert synthetic_tree[b"/data/symlink-dir"].target == b"sub"
    assert len(synthetic_tree[b"/data/symlink-long-target"].target or b"") > 1024


def test_rootfs_has_name_edge_cases(synthetic_tree: dict[bytes, Entry]) -> None:
    assert len(synthetic.LONG_NAME.encode()) == 255 and b"/data/" + synthetic.LONG_NAME.encode() in synthetic_tree
    assert b"/data/" + synthetic.NON_UTF8_NAME in synthetic_tree
    names = {"/data/日本語ファイル.txt", "/data/café", "/data/😀-emoji", "/data/name with spaces"}
    assert {name.encode() for name in names} <= set(synthetic_tree)
    assert len(f"{DEEP_PATH}/file-in-deep-path.txt") > 512
    assert sum(1 for p in synthetic_tree if p.startswith(b"/data/many/")) >= 2000
    assert synthetic_tree[b"/emptydir"].kind == "dir" and not any(p.startswith(b"/emptydir/") for p in synthetic_tree)


def test_rootfs_has_special_modes_owners_and_times(synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_tree[b"/bin/suid"].mode == 0o4755
    assert synthetic_tree[b"/bin/sgid"].mode == 0o2755
    assert synthetic_tree[b"/data/sub"].mode == 0o1777
    assert (synthetic_tree[b"/data/regular.txt"].uid, synthetic_tree[b"/data/empty"].gid) == (1000, 100000)
    assert synthetic_tree[b"/data/symlink-abs"].uid == 65534
    assert synthetic_tree[b"/opaque-dir/fresh"].mtime == synthetic.MTIME_SUBSECOND_NS
    assert synthetic_tree[b"/bin/sgid"].mtime == synthetic.MTIME_FUTURE * 10**9
    assert synthetic_tree[b"/data/symlink-rel"].mtime == synthetic.MTIME_SYMLINK_REL * 10**9


# --- variants -------------------------------------------------------------------------------

def test_zstd_variant_has_zstd_layers_and_the_same_rootfs(synthetic_zstd_image: BuiltImage, synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_zstd_image.layer_media_types == [mt.OCI_LAYER_ZSTD] * 4
    assert skopeo_inspect(synthetic_zstd_image.ref)["Layers"] == synthetic_zstd_image.layer_digests
    assert diff_trees(synthetic_tree, snapshot(expected_rootfs(synthetic_zstd_image))) == []


def test_uncompressed_variant_has_plain_tar_layers_named_by_diff_id(synthetic_uncompressed_image: BuiltImage,
                                                                   synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_uncompressed_image.layer_media_types == [mt.OCI_LAYER] * 4
    assert all(layer.digest == layer.diff_id for layer in synthetic_uncompressed_image.layers)
    assert len(umoci_stat(synthetic_uncompressed_image)["history"]) == 5
    assert diff_trees(synthetic_tree, snapshot(expected_rootfs(synthetic_uncompressed_image))) == []


def test_docker_variant_carries_docker_media_types(synthetic_docker_image: BuiltImage, synthetic_tree: dict[bytes, Entry]) -> None:
    assert synthetic_docker_image.media_type == mt.DOCKER_MANIFEST
    assert synthetic_docker_image.manifest.config_media_type == mt.DOCKER_CONFIG
    assert synthetic_docker_image.layer_media_types == [mt.DOCKER_LAYER_GZIP] * 4
    raw = json.loads(run(["skopeo", "inspect", "--raw", synthetic_docker_image.skopeo_ref]))
    assert raw["mediaType"] == mt.DOCKER_MANIFEST
    assert hashlib.sha256(synthetic_docker_image.blob_path(synthetic_docker_image.digest).read_bytes()).hexdigest() \
        == synthetic_docker_image.digest.split(":")[1]
    assert diff_trees(synthetic_tree, snapshot(expected_rootfs(synthetic_docker_image))) == []


def test_docker_archive_is_docker_save_format(synthetic_docker_archive: BuiltImage, synthetic_tree: dict[bytes, Entry]) -> None:
    with tarfile.open(synthetic_docker_archive.path) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert entry["RepoTags"] == ["docker.io/library/synthetic:latest"]
    assert len(entry["Layers"]) == 4
    assert skopeo_inspect(synthetic_docker_archive.ref)["Labels"]["nydus.test.image"] == "synthetic"
    assert diff_trees(synthetic_tree, snapshot(expected_rootfs(synthetic_docker_archive))) == []


def test_multiarch_is_an_index_of_two_platforms(multiarch_image: BuiltImage, synthetic_image: BuiltImage) -> None:
    assert multiarch_image.media_type == mt.OCI_INDEX and multiarch_image.is_index
    assert multiarch_image.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert multiarch_image.for_platform("linux/amd64").digest == synthetic_image.digest
    arm64 = multiarch_image.for_platform("linux/arm64/v8")
    assert arm64.layers == synthetic_image.layers[:1]
    assert arm64.config["config"]["Labels"]["nydus.test.arch"] == "arm64"
    info = skopeo_inspect(multiarch_image.ref, "--override-arch", "arm64", "--override-variant", "v8")
    assert (info["Architecture"], info["Layers"]) == ("arm64", [arm64.layers[0].digest])


def test_multiarch_rootfs_depends_on_the_platform(multiarch_image: BuiltImage, synthetic_tree: dict[bytes, Entry]) -> None:
    assert diff_trees(synthetic_tree, snapshot(expected_rootfs(multiarch_image))) == []
    arm64 = snapshot(expected_rootfs(multiarch_image, platform="linux/arm64/v8"))
    assert b"/todelete/x/t" in arm64 and b"/data/new-in-l2" not in arm64
    with pytest.raises(ImageBuildError, match="no manifest for linux/s390x"):
        expected_rootfs(multiarch_image, platform="linux/s390x")


def test_expected_rootfs_accepts_a_layout_reference(synthetic_image: BuiltImage, rootfs: Path) -> None:
    assert expected_rootfs(synthetic_image.ref) == rootfs
    assert expected_rootfs(synthetic_image.path, "latest") == rootfs


# --- the cache ------------------------------------------------------------------------------

def test_cache_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))

    def broken(out: Path) -> None:
        out.mkdir()
        (out / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_build("thing", "v1", broken)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    built = cached_build("thing", "v1", lambda out: out.mkdir())
    assert built.is_dir() and built.parent == tmp_path


def test_cache_reuses_an_entry_and_rebuilds_on_a_new_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        out.mkdir()

    first = cached_build("thing", "v1", build)
    assert cached_build("thing", "v1", build) == first and len(calls) == 1
    assert cached_build("thing", "v2", build) != first and len(calls) == 2


# --- pushing --------------------------------------------------------------------------------

def pushed_manifest(registry_host: str, repo_tag: str, *extra: str) -> bytes:
    return run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra,
                f"docker://{registry_host}/{repo_tag}"]).encode()


def test_push_keeps_the_manifest_digest(registry_plain, synthetic_image: BuiltImage) -> None:
    digest = push_image(synthetic_image, registry_plain.host, "kit/synthetic:latest")
    assert digest == synthetic_image.digest
    assert "sha256:" + hashlib.sha256(pushed_manifest(registry_plain.host, "kit/synthetic:latest")).hexdigest() == digest


def test_push_uncompressed_layers_stay_uncompressed(registry_plain, synthetic_uncompressed_image: BuiltImage) -> None:
    assert push_image(synthetic_uncompressed_image, registry_plain.host, "kit/synthetic:plain") \
        == synthetic_uncompressed_image.digest


def test_push_index_pushes_every_platform(registry_plain, multiarch_image: BuiltImage) -> None:
    assert push_image(multiarch_image, registry_plain.host, "kit/multiarch:latest") == multiarch_image.digest
    arm64 = skopeo_inspect(f"docker://{registry_plain.host}/kit/multiarch:latest", "--tls-verify=false",
                           "--override-arch", "arm64", "--override-variant", "v8")
    assert arm64["Architecture"] == "arm64"


def test_push_as_docker_schema2(registry_plain, synthetic_image: BuiltImage) -> None:
    push_image(synthetic_image, registry_plain.host, "kit/synthetic:v2s2", format="v2s2")
    assert json.loads(pushed_manifest(registry_plain.host, "kit/synthetic:v2s2"))["mediaType"] == mt.DOCKER_MANIFEST


def test_push_with_credentials_and_tls(registry_basic_auth, registry_tls, synthetic_docker_archive: BuiltImage,
                                       tmp_path: Path) -> None:
    push_image(synthetic_docker_archive, registry_basic_auth.host, "kit/archive:latest",
               creds=registry_basic_auth.credentials)
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(registry_tls.ca_path, certs / "ca.crt")
    push_image(synthetic_docker_archive, registry_tls.host, "kit/archive:latest", tls_verify=True, cert_dir=certs)


def test_push_refuses_a_non_loopback_registry(synthetic_image: BuiltImage) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        push_image(synthetic_image, "registry.example.com:5000", "x:y")


# --- debian (slow: mmdebstrap against the machine's apt mirror) ------------------------------

@pytest.mark.slow
def test_debian_is_a_two_layer_bookworm_rootfs(debian_image: BuiltImage) -> None:
    assert len(debian_image.layers) == 2
    assert skopeo_inspect(debian_image.ref)["Labels"]["nydus.test.image"] == "debian"
    root = expected_rootfs(debian_image)
    assert (root / "etc/debian_version").read_text().startswith("12.")
    assert stat.S_ISREG(os.lstat(root / "usr/bin/apt-get").st_mode)
    assert not (root / "usr/share/man").exists()
    with tarfile.open(debian_image.blob_path(debian_image.layer_digests[1])) as tar:
        assert any(name.endswith(".wh.man") for name in tar.getnames())


@pytest.mark.slow
def test_debian_full_is_four_layers_of_at_least_250_mb(debian_full_image: BuiltImage) -> None:
    assert len(debian_full_image.layers) == 4
    total = sum(os.lstat(Path(d, n)).st_size for d, _, names in os.walk(expected_rootfs(debian_full_image)) for n in names)
    assert total >= 250_000_000
