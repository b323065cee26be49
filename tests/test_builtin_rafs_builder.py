"""The built-in `rafs` layer builder: tar streams in, Nydus blob layers and a merged bootstrap
out, as nydusify v2.2 gets them from `nydus-image create --type tar-rafs` and `merge`.

Three layers exercise the overlay rules (whiteouts, an opaque directory, hardlink groups
broken by upper layers, directories an upper layer only implies) and one of them holds no
file data. The merged image is unpacked, and mounted by the kernel when possible.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from nydusify_core.builtin.rafs_builder import LAYER_TREE, RafsLayerBuilder
from nydusify_core.errors import FormatError
from nydusify_core.plugins import BUILTIN_PLUGINS
from nydusify_core.protocols import LayerBuilder
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir
from nydusify_core.testing.erofs import expanded_blobs, kernel_mount
from nydusify_core.testing.trees import diff_trees, snapshot

T0 = 1_600_000_000
MiB = 1 << 20


def _member(name: str, kind: bytes, *, data: bytes | None = None, mode: int = 0o644, uid: int = 0, mtime: int = T0,
            link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.mtime, info.linkname = kind, mode, uid, mtime, link
    if data is not None:
        info.size = len(data)
    return info, data


def f(name: str, data: bytes, **kw):
    return _member(name, tarfile.REGTYPE, data=data, **kw)


def d(name: str, **kw):
    return _member(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw)


def hl(name: str, target: str):
    return _member(name, tarfile.LNKTYPE, link=target)


def sl(name: str, target: str):
    return _member(name, tarfile.SYMTYPE, mode=0o777, link=target)


def tar_of(members, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


BIG1 = random.Random(1).randbytes(MiB + MiB // 2)
BIG2 = random.Random(2).randbytes(3 * MiB // 4) + bytes(MiB)

LAYER1 = [
    d("./", mtime=T0),
    d("keep", mode=0o700, uid=5, mtime=T0 + 1), f("keep/x", b"x"), f("keep/y", b"y"),
    f("gone", b"gone"), d("gone-dir"), f("gone-dir/a", b"a"),
    d("opq", mode=0o750, mtime=T0 + 2), f("opq/old1", b"old1"), d("opq/sub"), f("opq/sub/old2", b"old2"),
    f("h1", b"hard"), hl("h2", "h1"),
    f("p1", b"pair"), hl("p2", "p1"), hl("p3", "p1"),
    f("big", BIG1),
]
LAYER2 = [  # GNU format; no entry for "/", "keep" or "opq": they are only implied
    f(".wh.gone", b""), f(".wh.gone-dir", b""),
    f("opq/.wh..wh..opq", b""), f("opq/new", b"new"),
    f("h2", b"replaced"),
    f("q1", b"q"), hl("q2", "q1"),
    f("keep/z", b"z"),
    f("big2", BIG2),
]
LAYER3 = [  # no file data at all
    f("keep/.wh.x", b""), f(".wh.p3", b""), f(".wh.q1", b""),
    d("newdir", mode=0o711), sl("s", "keep/y"),
]
LAYERS = [tar_of(LAYER1), tar_of(LAYER2, tarfile.GNU_FORMAT), tar_of(LAYER3)]

EXPECTED_FILES = {
    b"/keep/y": b"y", b"/keep/z": b"z", b"/opq/new": b"new", b"/h1": b"hard", b"/h2": b"replaced",
    b"/p1": b"pair", b"/p2": b"pair", b"/q2": b"q", b"/big": BIG1, b"/big2": BIG2,
}
EXPECTED_PATHS = set(EXPECTED_FILES) | {b"/", b"/keep", b"/opq", b"/newdir", b"/s"}


def build_all(tmp_path: Path, fs_version: int = 6, **builder_kw):
    builder = RafsLayerBuilder(**builder_kw)
    options = BuildOptions(fs_version=fs_version)
    work = tmp_path / f"work-v{fs_version}"
    built = [builder.build_layer(io.BytesIO(tar), work, options, label=f"layer {i + 1}") for i, tar in enumerate(LAYERS)]
    merged = tmp_path / f"bootstrap-v{fs_version}"
    ids = builder.merge(built, merged, options)
    return built, merged, ids


def blob_dir(tmp_path: Path, built) -> Path:
    """The blobs as a registry or OCI layout stores them: named by their layer digest."""
    out = tmp_path / "blobs"
    out.mkdir(exist_ok=True)
    for layer in built:
        dest = out / layer.blob_id
        if not dest.exists():
            os.link(layer.blob_path, dest)
    return out


def unpacked(tmp_path: Path, merged: Path, blobs: Path, name: str) -> dict:
    opener, close = blob_dir_opener(blobs)
    try:
        unpack_to_dir(read_bootstrap(merged.read_bytes()), opener, tmp_path / name)
    finally:
        close()
    return snapshot(tmp_path / name)


# -- registration ------------------------------------------------------------------------------


def test_rafs_is_a_builtin_layer_builder(plugin_manager) -> None:
    assert "nydusify_core.builtin.rafs_builder" in BUILTIN_PLUGINS
    builder = plugin_manager.builder("rafs").create(BuildOptions())
    assert isinstance(builder, LayerBuilder) and builder.name == "rafs"


# -- one layer -------------------------------------------------------------------------------------


def test_build_layer_packages_the_blob_in_a_fresh_converter_dir(tmp_path: Path) -> None:
    builder = RafsLayerBuilder()
    a = builder.build_layer(io.BytesIO(LAYERS[0]), tmp_path, BuildOptions(), label="layer 1")
    b = builder.build_layer(io.BytesIO(LAYERS[0]), tmp_path, BuildOptions(), label="layer 1 again")
    assert a.blob_path.parent != b.blob_path.parent
    assert a.blob_path.parent.parent == tmp_path and a.blob_path.parent.name.startswith("nydus-converter-")
    assert a.blob_id == b.blob_id == hashlib.sha256(a.blob_path.read_bytes()).hexdigest()
    assert a.digest == "sha256:" + a.blob_id and a.blob_size == a.blob_path.stat().st_size and a.has_data


def test_build_layer_always_inlines_meta_and_toc_as_nydusify_asks(tmp_path: Path) -> None:
    layer = RafsLayerBuilder().build_layer(io.BytesIO(LAYERS[1]), tmp_path, BuildOptions(whiteout_spec="oci"))
    with open(layer.blob_path, "rb") as f:
        reader = BlobReader(f)
        assert [e.name for e in reader.toc()][-1] == C.ENTRY_BOOTSTRAP
        inline = reader.inline_bootstrap()
    assert b"/.wh.gone" in dict(inline.walk())  # whiteouts survive until the merge
    assert inline.prefetch == [b"/"]


def test_a_dataless_layer_still_yields_a_blob(tmp_path: Path) -> None:
    layer = RafsLayerBuilder().build_layer(io.BytesIO(LAYERS[2]), tmp_path, BuildOptions(fs_version=5))
    assert not layer.has_data and layer.blob_path.is_file()
    assert read_bootstrap(layer.bootstrap_path.read_bytes()).blobs == []


def test_a_bad_layer_names_its_label(tmp_path: Path) -> None:
    bad = tar_of([f("f", b"x"), f("f/g", b"y")])
    with pytest.raises(FormatError, match="layer 7"):
        RafsLayerBuilder().build_layer(io.BytesIO(bad), tmp_path, BuildOptions(), label="layer 7")


# -- merge -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fs_version", [5, 6])
def test_merge_applies_whiteouts_opaque_dirs_and_hardlink_changes(tmp_path: Path, fs_version: int) -> None:
    built, merged, ids = build_all(tmp_path, fs_version)
    assert [layer.has_data for layer in built] == [True, True, False]
    assert ids == [built[0].blob_id, built[1].blob_id]
    bs = read_bootstrap(merged.read_bytes())
    assert bs.version == fs_version and [b.blob_id for b in bs.blobs] == ids
    assert [b.compressed_size for b in bs.blobs] == [built[0].blob_size, built[1].blob_size]
    assert bs.prefetch == [b"/"]
    tree = unpacked(tmp_path, merged, blob_dir(tmp_path, built), "rootfs")
    assert set(tree) == EXPECTED_PATHS
    for path, data in EXPECTED_FILES.items():
        assert tree[path].sha256 == hashlib.sha256(data).hexdigest(), path
    assert tree[b"/p1"].links == {b"/p1", b"/p2"} and tree[b"/p1"].nlink == 2
    assert tree[b"/h1"].nlink == tree[b"/h2"].nlink == tree[b"/q2"].nlink == 1
    assert tree[b"/s"].target == b"keep/y"
    # directories that upper layers only imply keep what the lower layer said about them
    assert (tree[b"/keep"].mode, tree[b"/keep"].uid, tree[b"/keep"].mtime) == (0o700, 5, (T0 + 1) * 10**9)
    assert (tree[b"/opq"].mode, tree[b"/opq"].mtime) == (0o750, (T0 + 2) * 10**9)
    assert (tree[b"/"].mode, tree[b"/"].mtime) == (0o755, T0 * 10**9)
    assert (tree[b"/newdir"].mode, tree[b"/newdir"].mtime) == (0o711, T0 * 10**9)


@pytest.mark.parametrize("fs_version", [5, 6])
def test_merging_the_builders_own_trees_equals_merging_the_layer_bootstraps(tmp_path: Path, fs_version: int) -> None:
    """The merge takes each layer's tree as built (nothing parsed back); the bootstraps on
    disk, which a layer shared by several images is merged from, must give the same bytes."""
    built, merged, _ = build_all(tmp_path, fs_version)
    assert all(LAYER_TREE not in layer.extra for layer in built)  # handed over once
    RafsLayerBuilder().merge(built, tmp_path / "from-files", BuildOptions(fs_version=fs_version))
    assert merged.read_bytes() == (tmp_path / "from-files").read_bytes()


def test_v5_and_v6_merges_give_the_same_files(tmp_path: Path) -> None:
    v5, m5, _ = build_all(tmp_path, 5)
    v6, m6, _ = build_all(tmp_path, 6)
    a = unpacked(tmp_path, m5, blob_dir(tmp_path, v5), "u5")
    b = unpacked(tmp_path, m6, blob_dir(tmp_path, v6), "u6")
    assert not diff_trees(a, b, ignore=("dir:size",))


def test_upstream_mode_lets_implied_directories_reset_attributes(tmp_path: Path) -> None:
    built, merged, _ = build_all(tmp_path, 6, inherit_implied_dirs=False)
    tree = {p: n for p, n in read_bootstrap(merged.read_bytes()).walk()}
    assert (tree[b"/keep"].mode, tree[b"/keep"].uid, tree[b"/keep"].mtime) == (stat.S_IFDIR | 0o755, 0, 0)


def test_merge_takes_prefetch_patterns_from_the_options(tmp_path: Path) -> None:
    builder = RafsLayerBuilder()
    options = BuildOptions(prefetch=("/keep", "/keep/y", "relative"))
    built = [builder.build_layer(io.BytesIO(LAYERS[0]), tmp_path, options)]
    builder.merge(built, tmp_path / "boot", options)
    assert read_bootstrap((tmp_path / "boot").read_bytes()).prefetch == [b"/keep"]


def test_merge_of_only_dataless_layers_has_no_blobs(tmp_path: Path) -> None:
    builder = RafsLayerBuilder()
    built = [builder.build_layer(io.BytesIO(LAYERS[2]), tmp_path, BuildOptions())]
    assert builder.merge(built, tmp_path / "boot", BuildOptions()) == []
    assert read_bootstrap((tmp_path / "boot").read_bytes()).blobs == []


# -- the kernel as judge ----------------------------------------------------------------------------------


@pytest.mark.root
def test_kernel_mounts_the_merged_image_with_the_same_files(tmp_path: Path) -> None:
    built, merged, _ = build_all(tmp_path, 6)
    blobs = blob_dir(tmp_path, built)
    expected = unpacked(tmp_path, merged, blobs, "rootfs")
    devices = expanded_blobs(merged, blobs, tmp_path / "cache")
    with kernel_mount(merged, devices, tmp_path / "mnt") as mnt:
        mounted = snapshot(mnt, read_size=C.DEFAULT_CHUNK_SIZE)
    assert not diff_trees(expected, mounted, ignore=("dir:size",))
