"""Storing our own freshly built blobs into an OCI layout: adopted by hard link, not re-hashed.

The builder hashes a blob while writing it, so copying and hashing it again into the target
layout only repeats that work. `adopt_path` is only for such files; `push_path` and
`push_blob` (anything else) keep verifying the digest.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from nydusify_core.builtin.oci_layout import OciLayoutSource, OciLayoutTarget
from nydusify_core.builtin.rafs_builder import RafsLayerBuilder
from nydusify_core.errors import IntegrityError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.types import BLOB_DIGEST_COMPUTED


@pytest.fixture
def built_file(tmp_path: Path) -> tuple[Path, Descriptor]:
    data = os.urandom(3 << 20)
    path = tmp_path / "work" / "blob.rafs"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, Descriptor.for_bytes(mt.OCI_LAYER, data)


@pytest.fixture
def target(tmp_path: Path) -> OciLayoutTarget:
    return OciLayoutTarget(f"oci:{tmp_path / 'layout'}")


def test_adopted_blob_is_a_hard_link_of_the_built_file(built_file, target) -> None:
    path, desc = built_file
    target.adopt_path(desc, path)
    stored = target.layout.blob_path(desc.digest)
    assert os.path.samefile(stored, path)
    assert stored.stat().st_mode & 0o777 == 0o444


def test_adopted_blob_reads_back_verified(built_file, target) -> None:
    path, desc = built_file
    target.adopt_path(desc, path)
    with OciLayoutSource(target.ref).open_blob(desc) as f:
        assert f.read() == path.read_bytes()


def test_adopting_leaves_no_temporary_files(built_file, target) -> None:
    path, desc = built_file
    target.adopt_path(desc, path)
    target.adopt_path(desc, path)  # already stored: nothing to do
    names = os.listdir(target.layout.blob_path(desc.digest).parent)
    assert names == [desc.digest.split(":", 1)[1]]


def test_adopting_a_file_of_the_wrong_size_fails(built_file, target) -> None:
    path, desc = built_file
    wrong = Descriptor(desc.media_type, desc.digest, desc.size + 1)
    with pytest.raises(IntegrityError):
        target.adopt_path(wrong, path)
    assert not target.has_blob(desc)


def test_push_path_still_verifies_the_digest(built_file, target) -> None:
    path, desc = built_file
    lying = Descriptor(desc.media_type, "sha256:" + hashlib.sha256(b"other").hexdigest(), desc.size)
    with pytest.raises(IntegrityError):
        target.push_path(lying, path)
    assert not target.has_blob(lying)


def test_builtin_builder_marks_the_blob_digest_as_computed(tmp_path: Path) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = b"hello nydus\n" * 100
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    buf.seek(0)
    built = RafsLayerBuilder().build_layer(buf, tmp_path, BuildOptions())
    assert built.extra[BLOB_DIGEST_COMPUTED] is True
    assert hashlib.sha256(built.blob_path.read_bytes()).hexdigest() == built.blob_id
