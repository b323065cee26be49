"""Just enough OCI layout handling to assemble test images by hand.

Deliberately independent of `nydusify_core.oci`: the test images are the ground truth the
core is checked against, so they must not be produced by the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.imagebuild.tools import ImageBuildError

COPY_BUFSIZE = 1 << 20


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64:
        raise ImageBuildError(f"unexpected digest {digest!r}")
    return layout / "blobs" / "sha256" / hexdigest


def read_blob_json(layout: Path, digest: str) -> Any:
    return json.loads(blob_path(layout, digest).read_bytes())


def init_layout(layout: Path) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    """Store bytes as a blob; returns (digest, size)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(layout, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return digest, len(data)


def put_json(layout: Path, obj: Any) -> tuple[str, int]:
    return put_blob(layout, canonical_json(obj))


def put_blob_file(layout: Path, src: Path) -> tuple[str, int]:
    """Move a file into the blob store under its digest (hashed in chunks)."""
    h = hashlib.sha256()
    with open(src, "rb") as f:
        while chunk := f.read(COPY_BUFSIZE):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    dest = blob_path(layout, digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    os.replace(src, dest)
    return digest, size


def link_blob_file(src: Path, dest_layout: Path, digest: str) -> None:
    """Put an existing file into a layout as blob `digest` (hardlink; copy across filesystems)."""
    dest = blob_path(dest_layout, digest)
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def link_blob(src_layout: Path, dest_layout: Path, digest: str) -> None:
    """Share a blob between layouts."""
    link_blob_file(blob_path(src_layout, digest), dest_layout, digest)


def read_index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_text())


def write_index(layout: Path, descriptors: list[dict[str, Any]]) -> None:
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    tmp = layout / ".index.json.tmp"
    tmp.write_bytes(canonical_json(index))
    os.replace(tmp, layout / "index.json")


def tagged(descriptor: dict[str, Any], tag: str) -> dict[str, Any]:
    annotations = {**descriptor.get("annotations", {}), mt.ANNOTATION_REF_NAME: tag}
    return {**descriptor, "annotations": annotations}


def resolve_tag(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor `tag` names in the layout's index.json."""
    for desc in read_index(layout).get("manifests", []):
        if desc.get("annotations", {}).get(mt.ANNOTATION_REF_NAME) == tag:
            return desc
    raise ImageBuildError(f"{layout}: no tag {tag!r}")


def platform_string(platform: dict[str, Any] | None) -> str:
    if not platform:
        return ""
    parts = [platform.get("os", ""), platform.get("architecture", "")]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


def select_manifest(layout: Path, tag: str, platform: str | None = None) -> dict[str, Any]:
    """Descriptor of the image manifest for `platform` (os/arch[/variant]) under `tag`.

    A tag naming a single manifest is returned as is (a platform, if given, must match its
    config); for an index, `platform=None` means the first entry.
    """
    desc = resolve_tag(layout, tag)
    if desc.get("mediaType") in mt.INDEX_TYPES:
        entries = read_blob_json(layout, desc["digest"]).get("manifests", [])
        if not entries:
            raise ImageBuildError(f"{layout}:{tag}: empty index")
        if platform is None:
            return entries[0]
        for entry in entries:
            if platform_string(entry.get("platform")) == platform:
                return entry
        have = ", ".join(platform_string(e.get("platform")) for e in entries)
        raise ImageBuildError(f"{layout}:{tag}: no manifest for {platform} (have {have})")
    if platform is not None:
        manifest = read_blob_json(layout, desc["digest"])
        config = read_blob_json(layout, manifest["config"]["digest"])
        if platform_string(config) != platform:
            raise ImageBuildError(f"{layout}:{tag} is {platform_string(config)}, not {platform}")
    return desc


def one_layer_layout(layout: Path, layer: bytes, diff_id: str, *, media_type: str = mt.OCI_LAYER_GZIP, tag: str = "latest") -> str:
    """An amd64 OCI layout of one layer given as stored bytes (possibly hostile or broken)
    with the config's `diff_id` as given; returns its `oci:PATH:TAG` reference."""
    init_layout(layout)
    config_digest, config_size = put_json(layout, {
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    layer_digest, layer_size = put_blob(layout, layer)
    manifest_digest, manifest_size = put_json(layout, {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": media_type, "digest": layer_digest, "size": layer_size}],
    })
    write_index(layout, [tagged({"mediaType": mt.OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size}, tag)])
    return f"oci:{layout}:{tag}"
