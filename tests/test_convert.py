"""`convert` between OCI layouts: real test images in, Nydus images out, read back and
compared with the source image's rootfs (umoci's unpack of it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import NydusifyError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.erofs import expanded_blobs, kernel_mount
from nydusify_core.testing.images import expected_rootfs, flipped_layer_copy
from nydusify_core.testing.imagebuild.ocidir import one_layer_layout
from nydusify_core.testing.nydus import open_nydus_layout, unpack_nydus_image
from nydusify_core.testing.trees import diff_trees, snapshot

# What a Nydus image cannot or does not keep, by design:
#  - directory sizes are the filesystem's own;
#  - the root directory's attributes come from the layers' "./" entries or defaults;
#  - sockets cannot be carried in a tar layer at all.
IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}


def convert_layout(source: str, target_dir: Path, work: Path, **kw) -> dict:
    options = ConvertOptions(source=source, target=f"oci:{target_dir}:latest", work_dir=work, **kw)
    return convert(options).to_json()


def compare_with_source(image, target_dir: Path, tmp_path: Path, platform: str | None = None) -> None:
    nydus = open_nydus_layout(target_dir, tmp_path / "boot", platform=platform)
    unpacked = unpack_nydus_image(nydus, tmp_path / "unpacked")
    expected = expected_rootfs(image, platform=platform)
    diffs = diff_trees(snapshot(expected), snapshot(unpacked), ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def test_synthetic_image_converts_to_rafs_v6_with_the_same_files(synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    result = convert_layout(synthetic_image.ref, out, tmp_path / "work")
    assert result["digest"].startswith("sha256:")
    compare_with_source(synthetic_image, out, tmp_path)


def test_manifest_follows_the_nydus_image_spec(synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    convert_layout(synthetic_image.ref, out, tmp_path / "work")
    nydus = open_nydus_layout(out, tmp_path / "boot")
    layers = nydus.manifest.layers
    assert len(layers) == len(synthetic_image.layers) + 1
    for blob in layers[:-1]:
        assert blob.media_type == mt.NYDUS_BLOB
        assert blob.annotations == {mt.ANNOTATION_NYDUS_BLOB: "true"}
    boot = layers[-1]
    assert boot.media_type == mt.OCI_LAYER_GZIP
    assert boot.annotations[mt.ANNOTATION_NYDUS_BOOTSTRAP] == "true"
    assert boot.annotations[mt.ANNOTATION_FS_VERSION] == "6"
    assert mt.ANNOTATION_UNCOMPRESSED not in boot.annotations
    diff_ids = nydus.config["rootfs"]["diff_ids"]
    assert diff_ids[:-1] == [b.digest for b in layers[:-1]]
    assert nydus.config["history"][-1] == {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}
    assert nydus.manifest_json["annotations"][mt.ANNOTATION_SOURCE_DIGEST] == synthetic_image.digest
    data_blobs = {b.blob_id for b in nydus.bootstrap.blobs}
    assert data_blobs <= {b.hex for b in layers[:-1]}


def test_rafs_v5_conversion_has_the_same_files(synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    convert_layout(synthetic_image.ref, out, tmp_path / "work", fs_version=5, compressor="lz4_block")
    nydus = open_nydus_layout(out, tmp_path / "boot")
    assert nydus.bootstrap.version == 5
    assert nydus.manifest.layers[-1].annotations[mt.ANNOTATION_FS_VERSION] == "5"
    compare_with_source(synthetic_image, out, tmp_path)


@pytest.mark.parametrize("fixture", ["synthetic_zstd_image", "synthetic_uncompressed_image", "synthetic_docker_archive"])
def test_other_layer_compressions_and_archives(fixture: str, request, tmp_path: Path) -> None:
    image = request.getfixturevalue(fixture)
    out = tmp_path / "nydus"
    convert_layout(image.ref, out, tmp_path / "work")
    compare_with_source(image, out, tmp_path)


def test_docker_source_stays_docker_unless_oci(synthetic_docker_image, tmp_path: Path) -> None:
    convert_layout(synthetic_docker_image.ref, tmp_path / "keep", tmp_path / "w1")
    kept = open_nydus_layout(tmp_path / "keep", tmp_path / "b1")
    assert kept.manifest.media_type == mt.DOCKER_MANIFEST
    assert kept.manifest.layers[-1].media_type == mt.DOCKER_LAYER_GZIP
    convert_layout(synthetic_docker_image.ref, tmp_path / "oci", tmp_path / "w2", oci=True)
    oci = open_nydus_layout(tmp_path / "oci", tmp_path / "b2")
    assert oci.manifest.media_type == mt.OCI_MANIFEST
    assert oci.manifest.config.media_type == mt.OCI_CONFIG


def test_all_platforms_give_an_index_of_nydus_manifests(multiarch_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    result = convert_layout(multiarch_image.ref, out, tmp_path / "work", all_platforms=True)
    assert result["media_type"] == mt.OCI_INDEX
    assert sorted(m["platform"] for m in result["manifests"]) == ["linux/amd64", "linux/arm64/v8"]
    for platform in ("linux/amd64", "linux/arm64/v8"):
        compare_with_source(multiarch_image, out, tmp_path / platform.replace("/", "-"), platform=platform)


def test_one_selected_platform_gives_a_bare_manifest(multiarch_image, tmp_path: Path) -> None:
    result = convert_layout(multiarch_image.ref, tmp_path / "nydus", tmp_path / "work", platforms=("linux/arm64",))
    assert result["media_type"] == mt.OCI_MANIFEST
    assert [m["platform"] for m in result["manifests"]] == ["linux/arm64/v8"]


def test_merge_platform_index_holds_oci_and_nydus_manifests(multiarch_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    result = convert_layout(multiarch_image.ref, out, tmp_path / "work", all_platforms=True, merge_platform=True)
    index = json.loads((out / "blobs" / "sha256" / result["digest"].split(":")[1]).read_text())
    kinds = [(m.get("artifactType", "oci"), m["platform"]["architecture"]) for m in index["manifests"]]
    assert kinds == [("oci", "amd64"), ("oci", "arm64"), (mt.NYDUS_MANIFEST_ARTIFACT, "amd64"), (mt.NYDUS_MANIFEST_ARTIFACT, "arm64")]
    for entry in index["manifests"]:  # every member's content is in the layout
        manifest = json.loads((out / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
        for layer in [manifest["config"], *manifest["layers"]]:
            assert (out / "blobs" / "sha256" / layer["digest"].split(":")[1]).exists()


def test_external_backend_manifest_lists_only_the_bootstrap(synthetic_image, tmp_path: Path) -> None:
    out, blobs = tmp_path / "nydus", tmp_path / "blobs"
    result = convert_layout(synthetic_image.ref, out, tmp_path / "work", backend_type="localfs", backend_config={"dir": str(blobs)})
    nydus = open_nydus_layout(out, tmp_path / "boot")
    assert len(nydus.manifest.layers) == 1
    assert nydus.config["rootfs"]["diff_ids"] == [nydus.manifest.layers[0].annotations[mt.ANNOTATION_UNCOMPRESSED]]
    assert {b["id"] for b in result["blobs"]} == {p.name for p in blobs.iterdir()}
    unpacked = unpack_nydus_image(nydus, tmp_path / "unpacked", blob_dir=blobs)
    assert not diff_trees(snapshot(expected_rootfs(synthetic_image)), snapshot(unpacked), ignore=IGNORE, ignore_paths=IGNORE_PATHS)


@pytest.mark.root
def test_kernel_mounts_the_converted_image(synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    convert_layout(synthetic_image.ref, out, tmp_path / "work")
    nydus = open_nydus_layout(out, tmp_path / "boot")
    devices = expanded_blobs(nydus.bootstrap, nydus.blob_dir, tmp_path / "cache")
    with kernel_mount(nydus.bootstrap_path, devices, tmp_path / "mnt") as mnt:
        diffs = diff_trees(snapshot(expected_rootfs(synthetic_image)), snapshot(mnt), ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def test_corrupted_source_layer_fails_and_leaves_no_tag(synthetic_image, tmp_path: Path) -> None:
    source = flipped_layer_copy(synthetic_image, tmp_path / "src")
    out = tmp_path / "nydus"
    with pytest.raises(NydusifyError):
        convert_layout(source, out, tmp_path / "work")
    index = out / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    assert not (tmp_path / "work").exists()


def test_cli_convert_prints_json_and_errors_in_one_line(synthetic_image, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *args], capture_output=True, text=True, timeout=600, cwd=tmp_path)

    ok = run("convert", "--source", synthetic_image.ref, "--target", f"oci:{tmp_path / 'out'}:v1", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["digest"].startswith("sha256:")
    missing = run("convert", "--source", f"oci:{tmp_path / 'nope'}:latest", "--target", f"oci:{tmp_path / 'x'}")
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "not an OCI image layout" in missing.stderr
    both = run("convert", "--source", synthetic_image.ref, "--target", "oci:/tmp/a", "--target-suffix", "-nydus")
    assert both.returncode == 2 and "conflicts" in both.stderr


def test_hooks_see_every_stage_in_order(synthetic_image, tmp_path: Path, plugin_manager, register_plugin) -> None:
    from nydusify_core import hookimpl

    calls: list[str] = []

    class Recorder:
        @hookimpl
        def nydusify_before_convert(self, ctx):
            calls.append("before_convert")

        @hookimpl
        def nydusify_before_build_layer(self, layer):
            calls.append("before_build_layer")

        @hookimpl
        def nydusify_after_build_layer(self, layer, built):
            calls.append("after_build_layer")

        @hookimpl
        def nydusify_before_upload_blob(self, blob):
            calls.append("before_upload_blob")

        @hookimpl
        def nydusify_after_upload_blob(self, blob):
            calls.append("after_upload_blob")

        @hookimpl
        def nydusify_before_push_manifest(self, info):
            calls.append(f"before_push_manifest:{len(info.blobs)}")

        @hookimpl
        def nydusify_after_push_manifest(self, descriptor):
            calls.append("after_push_manifest")

        @hookimpl
        def nydusify_after_convert(self, result, error):
            calls.append(f"after_convert:{error is None}")

    register_plugin(Recorder())
    options = ConvertOptions(source=synthetic_image.ref, target=f"oci:{tmp_path / 'out'}", work_dir=tmp_path / "w", workers=1)
    convert(options, plugin_manager)
    n = len(synthetic_image.layers)
    assert calls[0] == "before_convert" and calls[-1] == "after_convert:True"
    assert calls.count("before_build_layer") == n and calls.count("after_upload_blob") == n
    assert calls.index(f"before_push_manifest:{n}") > max(i for i, c in enumerate(calls) if c == "after_upload_blob")
    assert calls[-2] == "after_push_manifest"


@pytest.mark.slow
def test_debian_like_image_converts_with_the_same_files(debian_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    convert_layout(debian_image.ref, out, tmp_path / "work")
    compare_with_source(debian_image, out, tmp_path)


def _layout_with_layer(root: Path, tar_bytes: bytes) -> str:
    """A one-layer OCI layout around an arbitrary (possibly hostile) tar."""
    import gzip
    import hashlib

    return one_layer_layout(root, gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest())


@pytest.mark.parametrize("name", ["../escape", "a/../../escape"])
def test_path_traversal_in_a_layer_is_refused_naming_the_layer(name: str, tmp_path: Path) -> None:
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    source = _layout_with_layer(tmp_path / "src", raw.getvalue())
    with pytest.raises(NydusifyError, match=r"layer 1 \(sha256:"):
        convert_layout(source, tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """A tar of (name, kind, payload) members: kind file (payload = data), symlink or
    hardlink (payload = target)."""
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(payload)
                tar.addfile(info)
    return raw.getvalue()


@pytest.mark.parametrize("members, reason", [
    ((("evil", "symlink", "/etc"), ("evil/passwd", "file", b"x")), "parent '/evil' is not a directory"),
    ((("a", "hardlink", "../../etc/passwd"),), "name has a '..' component"),
    ((("evil", "symlink", "/etc"), ("b", "hardlink", "evil/passwd")), "is not an earlier entry of this layer"),
], ids=["file-through-symlink", "hardlink-dotdot", "hardlink-through-symlink"])
def test_symlink_and_hardlink_escapes_are_refused_naming_the_layer(members, reason: str, tmp_path: Path) -> None:
    source = _layout_with_layer(tmp_path / "src", _tar(*members))
    with pytest.raises(NydusifyError) as info:
        convert_layout(source, tmp_path / "out", tmp_path / "work")
    message = str(info.value)
    assert message.startswith("layer 1 (sha256:") and reason in message and "\n" not in message
