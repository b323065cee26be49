"""The built-in `dir` source: a directory seen as a deterministic one-layer image."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from nydusify_core.builtin.local_dir import LocalDirSource
from nydusify_core.errors import IntegrityError, NotFoundError
from nydusify_core.oci.descriptor import Descriptor


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("hello")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    os.symlink("sub/file.txt", root / "link")
    os.link(root / "sub" / "file.txt", root / "hard")
    os.setxattr(root / "big.bin", "user.note", b"xattr-value")
    return root


def layer_of(source: LocalDirSource) -> Descriptor:
    manifest = json.loads(source.fetch(source.resolve()))
    return Descriptor.from_json(manifest["layers"][0])


def test_directory_becomes_a_one_layer_manifest(tree: Path) -> None:
    source = LocalDirSource(f"dir:{tree}")
    manifest = json.loads(source.fetch(source.resolve()))
    config = json.loads(source.fetch(Descriptor.from_json(manifest["config"])))
    assert len(manifest["layers"]) == 1
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]


def test_layer_is_a_tar_of_the_tree_with_xattrs_and_hardlinks(tree: Path, tmp_path: Path) -> None:
    source = LocalDirSource(f"dir:{tree}")
    with source.open_blob(layer_of(source)) as f:
        data = f.read()
    (tmp_path / "layer.tar").write_bytes(data)
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["link"].issym() and members["link"].linkname == "sub/file.txt"
    # "hard" sorts first, so it carries the data and the other path links to it
    assert members["hard"].isreg() and members["sub/file.txt"].islnk() and members["sub/file.txt"].linkname == "hard"
    assert members["big.bin"].pax_headers["SCHILY.xattr.user.note"] == "xattr-value"


def test_digest_is_stable_across_runs(tree: Path) -> None:
    assert layer_of(LocalDirSource(f"dir:{tree}")) == layer_of(LocalDirSource(f"dir:{tree}"))


def test_tree_changed_after_resolve_is_detected(tree: Path) -> None:
    source = LocalDirSource(f"dir:{tree}")
    layer = layer_of(source)
    (tree / "sub" / "file.txt").write_text("changed!")
    with pytest.raises(IntegrityError):
        with source.open_blob(layer) as f:
            f.read()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        LocalDirSource(f"dir:{tmp_path / 'nope'}")
