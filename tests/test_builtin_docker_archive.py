"""The built-in `docker-archive` source (`docker save` tarballs, classic and Docker >= 25)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from nydusify_core.builtin.docker_archive import DockerArchiveSource, normalize_name, parse_ref
from nydusify_core.errors import FormatError, IntegrityError, NotFoundError, UsageError
from nydusify_core.oci import image
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.layertar import LayerTar
from nydusify_core.protocols import Source


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_archive(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """bytes = regular file; str = symlink target."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def config_for(*layers: bytes) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }).encode()


def entries_of(source: DockerArchiveSource, desc) -> dict[bytes, bytes | None]:
    with LayerTar(source.open_blob(desc), media_type=desc.media_type, layer=desc.digest) as tar:
        return {e.path: (e.data.read() if e.data else None) for e in tar}


# --- archives written by hand ---------------------------------------------------------

@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    """Image A: a plain layer reached through a legacy `<id>/layer.tar` symlink.
    Image B: a gzip layer (newer docker save) plus the same plain layer."""
    base = layer_tar({"etc/os-release": b"ID=test\n"})
    app = layer_tar({"app/run": b"#!/bin/sh\n"})
    app_gz = gzip.compress(app)
    config_a, config_b = config_for(base), config_for(base, app)
    manifest = [
        {"Config": "a.json", "RepoTags": ["example/a:1"], "Layers": ["legacy/layer.tar"]},
        {"Config": "b.json", "RepoTags": ["localhost:5000/b:2"], "Layers": ["base.tar", "app.tar.gz"]},
    ]
    return write_archive(tmp_path / "two.tar", [
        ("base.tar", base), ("app.tar.gz", app_gz), ("legacy/layer.tar", "../base.tar"),
        ("a.json", config_a), ("b.json", config_b), ("manifest.json", json.dumps(manifest).encode()),
    ])


def test_is_a_source(two_images: Path) -> None:
    assert isinstance(DockerArchiveSource(f"docker-archive:{two_images}:@0"), Source)


def test_several_images_need_a_selector(two_images: Path) -> None:
    with pytest.raises(UsageError, match="holds 2 images.*example/a:1"):
        DockerArchiveSource(f"docker-archive:{two_images}").resolve()


def test_synthesised_manifest_describes_layers_as_stored(two_images: Path) -> None:
    source = DockerArchiveSource(f"docker-archive:{two_images}:localhost:5000/b:2")
    root = source.resolve()
    manifest = image.parse_manifest(source.fetch(root), root.media_type)
    assert manifest.media_type == mt.DOCKER_MANIFEST
    assert [d.media_type for d in manifest.layers] == [mt.DOCKER_LAYER, mt.DOCKER_LAYER_GZIP]
    with source.open_blob(manifest.layers[1]) as f:
        stored = f.read()
    assert sha(stored) == manifest.layers[1].digest and len(stored) == manifest.layers[1].size
    config = image.parse_config(source.fetch(manifest.config))
    image.check_config_matches(manifest, config)
    assert manifest.layers[0].digest == config.diff_ids[0]
    assert entries_of(source, manifest.layers[1]) == {b"app/run": b"#!/bin/sh\n"}


def test_layers_behind_legacy_symlinks_are_followed(two_images: Path) -> None:
    source = DockerArchiveSource(f"docker-archive:{two_images}:example/a:1")
    manifest = image.parse_manifest(source.fetch(source.resolve()))
    assert entries_of(source, manifest.layers[0]) == {b"etc/os-release": b"ID=test\n"}


def test_select_by_position_and_by_normalised_name(two_images: Path) -> None:
    by_pos = DockerArchiveSource(f"docker-archive:{two_images}:@0").resolve()
    by_name = DockerArchiveSource(f"docker-archive:{two_images}:docker.io/example/a:1").resolve()
    assert by_pos == by_name
    with pytest.raises(NotFoundError, match="position 5"):
        DockerArchiveSource(f"docker-archive:{two_images}:@5").resolve()
    with pytest.raises(NotFoundError, match="not found"):
        DockerArchiveSource(f"docker-archive:{two_images}:example/a:2").resolve()


def test_plain_layer_whose_digest_contradicts_the_config_is_refused(tmp_path: Path) -> None:
    layer = layer_tar({"f": b"x"})
    archive = write_archive(tmp_path / "bad.tar", [
        ("l.tar", layer), ("c.json", config_for(layer_tar({"f": b"y"}))),
        ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": ["l.tar"]}]).encode()),
    ])
    with pytest.raises(IntegrityError, match="the config says"):
        DockerArchiveSource(f"docker-archive:{archive}").resolve()


def test_member_names_with_dotdot_are_refused(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "evil.tar", [("../evil", b"x"), ("manifest.json", b"[]")])
    with pytest.raises(FormatError, match=r"'\.\.' component"):
        DockerArchiveSource(f"docker-archive:{archive}")


def test_symlinks_leaving_the_archive_are_refused(tmp_path: Path) -> None:
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [], "Layers": ["x/layer.tar"]}]).encode()
    archive = write_archive(tmp_path / "escape.tar", [
        ("x/layer.tar", "../../etc/passwd"), ("c.json", config_for(b"")), ("manifest.json", manifest),
    ])
    with pytest.raises(FormatError, match="outside the archive"):
        DockerArchiveSource(f"docker-archive:{archive}").resolve()


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [], "Layers": ["a"]}]).encode()
    archive = write_archive(tmp_path / "loop.tar", [("a", "b"), ("b", "a"), ("c.json", config_for(b"")), ("manifest.json", manifest)])
    with pytest.raises(FormatError, match="too many links"):
        DockerArchiveSource(f"docker-archive:{archive}").resolve()


def test_truncated_archive_is_refused(two_images: Path, tmp_path: Path) -> None:
    data = two_images.read_bytes()
    cut = data.index(b"ID=test") + 3  # inside base.tar's data
    short = tmp_path / "short.tar"
    short.write_bytes(data[:cut])
    with pytest.raises(FormatError, match="truncated|not a readable tar"):
        DockerArchiveSource(f"docker-archive:{short}:@1").resolve()


def test_compressed_archive_is_refused_with_advice(two_images: Path, tmp_path: Path) -> None:
    packed = tmp_path / "two.tar.gz"
    packed.write_bytes(gzip.compress(two_images.read_bytes()))
    with pytest.raises(UsageError, match="decompress it first"):
        DockerArchiveSource(f"docker-archive:{packed}")


def test_ref_parsing() -> None:
    assert parse_ref("docker-archive:/tmp/x.tar:busybox:latest").selector == "busybox:latest"
    assert parse_ref("docker-archive:/tmp/x.tar").selector is None
    assert normalize_name("busybox") == "docker.io/library/busybox:latest"
    assert normalize_name("localhost:5000/a/b:t") == "localhost:5000/a/b:t"


def test_ref_path_with_colons(two_images: Path, tmp_path: Path) -> None:
    odd = tmp_path / "with:colon.tar"
    shutil.copy(two_images, odd)
    assert parse_ref(f"docker-archive:{odd}:@1").path == odd


def test_registered_as_a_builtin_source(plugin_manager, two_images: Path) -> None:
    spec = plugin_manager.detect_source(f"docker-archive:{two_images}")
    assert spec.name == "docker-archive" and plugin_manager.source("docker-archive") is spec


# --- archives made by real tools -------------------------------------------------------

@pytest.fixture
def oci_layout(tmp_path: Path) -> Path:
    if not shutil.which("umoci"):
        pytest.skip("umoci is not installed")
    layout = tmp_path / "layout"
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hello").write_bytes(b"hi\n")
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)  # noqa: E731
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:latest")
    run("umoci", "insert", "--rootless", "--image", f"{layout}:latest", str(src / "etc"), "/etc")
    run("umoci", "insert", "--rootless", "--image", f"{layout}:latest", str(src / "etc"), "/etc2")
    return layout


def test_archive_written_by_skopeo(oci_layout: Path, tmp_path: Path) -> None:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed")
    archive = tmp_path / "saved.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{oci_layout}:latest", f"docker-archive:{archive}:example/app:v1"],
                   check=True, capture_output=True)
    source = DockerArchiveSource(f"docker-archive:{archive}:example/app:v1")
    manifest = image.parse_manifest(source.fetch(source.resolve()))
    config = image.parse_config(source.fetch(manifest.config))
    assert [d.digest for d in manifest.layers] == list(config.diff_ids)
    assert entries_of(source, manifest.layers[1]) == {b"etc2": None, b"etc2/hello": b"hi\n"}


def test_oci_layout_inside_the_archive_docker25(oci_layout: Path, tmp_path: Path) -> None:
    index = json.loads((oci_layout / "index.json").read_text())
    entry = index["manifests"][0]
    entry["annotations"] = {mt.ANNOTATION_CONTAINERD_IMAGE_NAME: "docker.io/library/app:v25", mt.ANNOTATION_REF_NAME: "v25"}
    (oci_layout / "index.json").write_text(json.dumps(index))
    archive = tmp_path / "docker25.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(oci_layout / name, arcname=name)
    source = DockerArchiveSource(f"docker-archive:{archive}:app:v25")
    root = source.resolve()
    assert root.digest == entry["digest"] and root.annotations == {}
    manifest = image.parse_manifest(source.fetch(root), root.media_type)
    assert manifest.layers[0].media_type == mt.OCI_LAYER_GZIP
    assert entries_of(source, manifest.layers[0]) == {b"etc": None, b"etc/hello": b"hi\n"}
