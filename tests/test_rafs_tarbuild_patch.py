"""A tar layer's separate bootstrap is its inline bootstrap with the own blob record patched.

Both serialise the same tree; only the layer's own blob entry differs (placeholder id ->
the blob file's digest, whole-file compressed size). `build_tar_layer` patches those bytes
instead of serialising twice; the result must equal a full serialisation byte for byte.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path

import pytest

from nydusify_core.builtin.rafs_builder import layer_options
from nydusify_core.oci.layertar import iter_tar_entries
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.tarbuild import build_tar_layer, patch_blob_table, write_tar_bootstrap


def _layer_tar(files: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("usr/lib")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for i in range(files):
            data = os.urandom(1000 + i * 7919) if i % 3 else b"same content\n" * 50
            info = tarfile.TarInfo(f"usr/lib/f{i:03d}")
            info.size, info.mtime = len(data), 1_700_000_000 + i
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("usr/bin/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../lib/f001"
        tar.addfile(link)
        if files > 2:
            hard = tarfile.TarInfo("usr/lib/hard")
            hard.type, hard.linkname = tarfile.LNKTYPE, "usr/lib/f002"
            tar.addfile(hard)
    return buf.getvalue()


@pytest.mark.parametrize("fs_version", [5, 6])
@pytest.mark.parametrize("files", [0, 1, 40])
def test_separate_bootstrap_equals_a_full_serialisation(tmp_path: Path, fs_version: int, files: int) -> None:
    opts = layer_options(BuildOptions(fs_version=fs_version))
    result = build_tar_layer(
        iter_tar_entries(io.BytesIO(_layer_tar(files))), opts, tmp_path / "blob", tmp_path / "boot",
    )
    patched = (tmp_path / "boot").read_bytes()
    assert patched == write_tar_bootstrap(result.bootstrap)
    if result.has_data:
        assert result.bootstrap.blobs[0].blob_id == result.blob_digest


@pytest.mark.parametrize("fs_version", [5, 6])
def test_inline_bootstrap_keeps_the_placeholder_id(tmp_path: Path, fs_version: int) -> None:
    opts = layer_options(BuildOptions(fs_version=fs_version))
    build_tar_layer(iter_tar_entries(io.BytesIO(_layer_tar(5))), opts, tmp_path / "blob", tmp_path / "boot")
    with open(tmp_path / "blob", "rb") as f:
        inline = BlobReader(f).bootstrap_bytes()
    assert inline is not None and C.INLINE_BLOB_ID_PLACEHOLDER.encode() in inline
    assert inline != (tmp_path / "boot").read_bytes()


@pytest.mark.parametrize("fs_version", [5, 6])
def test_patch_refuses_records_that_differ_in_other_fields(tmp_path: Path, fs_version: int) -> None:
    opts = layer_options(BuildOptions(fs_version=fs_version))
    result = build_tar_layer(iter_tar_entries(io.BytesIO(_layer_tar(3))), opts, tmp_path / "blob", tmp_path / "boot")
    blobs = result.bootstrap.blobs
    data = write_tar_bootstrap(result.bootstrap)
    other = [dataclasses.replace(blobs[0], chunk_count=blobs[0].chunk_count + 1)]
    assert patch_blob_table(data, fs_version, blobs, other) is None
    shorter = [dataclasses.replace(blobs[0], blob_id="ab" * 16)]
    assert patch_blob_table(data, fs_version, blobs, shorter) is None


@pytest.mark.parametrize("fs_version", [5, 6])
def test_patching_the_inline_bootstrap_gives_the_separate_one(tmp_path: Path, fs_version: int) -> None:
    opts = layer_options(BuildOptions(fs_version=fs_version))
    build_tar_layer(iter_tar_entries(io.BytesIO(_layer_tar(12))), opts, tmp_path / "blob", tmp_path / "boot")
    with open(tmp_path / "blob", "rb") as f:
        inline = BlobReader(f).bootstrap_bytes()
    assert inline is not None
    separate = (tmp_path / "boot").read_bytes()
    before, after = read_bootstrap(inline).blobs, read_bootstrap(separate).blobs
    assert patch_blob_table(inline, fs_version, before, after) == separate
