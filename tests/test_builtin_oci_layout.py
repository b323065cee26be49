"""The built-in `oci-layout` source and target."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nydusify_core.builtin.oci_layout import OciLayoutSource, OciLayoutTarget
from nydusify_core.errors import IntegrityError, NotFoundError, UsageError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.layout import parse_ref


@pytest.fixture
def written_image(tmp_path: Path) -> tuple[str, Descriptor, bytes, Descriptor]:
    """An image pushed through the target: one layer, a config, a manifest tagged v1."""
    ref = f"oci:{tmp_path / 'layout'}:v1"
    target = OciLayoutTarget(ref)
    layer = b"layer-bytes" * 1000
    layer_desc = Descriptor.for_bytes(mt.OCI_LAYER, layer)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [layer_desc.digest]}}).encode()
    config_desc = Descriptor.for_bytes(mt.OCI_CONFIG, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc.to_json(), "layers": [layer_desc.to_json()]}).encode()
    manifest_desc = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest)
    target.push_blob(layer_desc, io.BytesIO(layer))
    target.push_blob(config_desc, io.BytesIO(config))
    target.push_manifest(manifest_desc, manifest, tag="v1")
    return ref, manifest_desc, layer, layer_desc


def test_written_image_resolves_by_tag(written_image) -> None:
    ref, manifest_desc, _, _ = written_image
    assert OciLayoutSource(ref).resolve().digest == manifest_desc.digest


def test_layer_streams_back_verified(written_image) -> None:
    ref, _, layer, layer_desc = written_image
    with OciLayoutSource(ref).open_blob(layer_desc) as f:
        assert f.read() == layer


def test_corrupted_blob_fails_digest_check(written_image) -> None:
    ref, _, layer, layer_desc = written_image
    source = OciLayoutSource(ref)
    path = source.layout.blob_path(layer_desc.digest)
    path.chmod(0o644)
    path.write_bytes(b"X" + layer[1:])
    with pytest.raises(IntegrityError, match="digest mismatch"):
        with source.open_blob(layer_desc) as f:
            f.read()


def test_truncated_blob_is_reported(written_image) -> None:
    ref, _, layer, layer_desc = written_image
    source = OciLayoutSource(ref)
    path = source.layout.blob_path(layer_desc.digest)
    path.chmod(0o644)
    path.write_bytes(layer[:-10])
    with pytest.raises(IntegrityError, match="truncated"):
        with source.open_blob(layer_desc) as f:
            f.read()


def test_push_blob_with_wrong_digest_leaves_nothing(tmp_path: Path) -> None:
    target = OciLayoutTarget(f"oci:{tmp_path / 'out'}")
    desc = Descriptor.for_bytes(mt.OCI_LAYER, b"promised")
    with pytest.raises(IntegrityError):
        target.push_blob(desc, io.BytesIO(b"delivered"))
    assert not target.has_blob(desc)
    assert not list((tmp_path / "out" / "blobs" / "sha256").iterdir())


def test_tag_never_points_at_a_missing_manifest(tmp_path: Path) -> None:
    target = OciLayoutTarget(f"oci:{tmp_path / 'out'}")
    desc = Descriptor.for_bytes(mt.OCI_MANIFEST, b"{}")
    with pytest.raises(IntegrityError):
        target.layout.set_ref(desc, "latest")


def test_retagging_replaces_the_old_entry(written_image, tmp_path: Path) -> None:
    ref, manifest_desc, _, _ = written_image
    target = OciLayoutTarget(ref)
    other = b'{"schemaVersion": 2}'
    other_desc = Descriptor.for_bytes(mt.OCI_MANIFEST, other)
    target.push_manifest(other_desc, other, tag="v1")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [other_desc.digest]


def test_unknown_tag_names_the_known_ones(written_image) -> None:
    ref, *_ = written_image
    with pytest.raises(NotFoundError, match="tags: v1"):
        OciLayoutSource(ref.rsplit(":", 1)[0] + ":nope").resolve()


def test_missing_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not an OCI image layout"):
        OciLayoutSource(f"oci:{tmp_path}/nothing:latest").resolve()


def test_hostile_digest_cannot_escape_the_layout(written_image) -> None:
    from nydusify_core.errors import FormatError

    ref, *_ = written_image
    source = OciLayoutSource(ref)
    with pytest.raises(FormatError):
        source.layout.blob_path("sha256:../../../../etc/passwd")


@pytest.mark.parametrize(
    "ref, path, tag",
    [("oci:/a/b:v1", "/a/b", "v1"), ("oci:/a/b", "/a/b", None), ("oci:rel/dir:tag-2", "rel/dir", "tag-2")],
)
def test_reference_parsing(ref: str, path: str, tag: str | None) -> None:
    parsed = parse_ref(ref)
    assert (str(parsed.path), parsed.tag) == (path, tag)


def test_non_layout_reference_is_rejected() -> None:
    with pytest.raises(UsageError):
        parse_ref("docker.io/library/busybox")
