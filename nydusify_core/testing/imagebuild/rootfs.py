"""Ground-truth root filesystems: what `umoci unpack` makes of an image.

umoci 0.4.7 only unpacks OCI manifests with gzip or plain tar layers, so the chosen
manifest is first copied into a throw-away "view" layout: an OCI manifest whose layer
media types follow the blobs' actual compression, zstd layers decompressed to plain tar,
blobs otherwise hardlinked. Results
are cached by what fully determines them (the manifest digest, or an archive's content).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import zstandard

from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.imagebuild.cache import cached_build
from nydusify_core.testing.imagebuild.ocidir import (
    COPY_BUFSIZE, blob_path, init_layout, link_blob, put_blob_file, put_json, read_blob_json,
    select_manifest, tagged, write_index,
)
from nydusify_core.testing.imagebuild.tools import ImageBuildError, require_tools, skopeo, umoci

RECIPE = "rootfs/1"  # bump when the unpacking changes
VIEW_TAG = "view"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
KNOWN_LAYER_TYPES = frozenset(mt.LAYER_COMPRESSION)


def _sniff(path: Path) -> str:
    """Compression by magic bytes: media types are not always truthful (skopeo's
    docker-archive source labels its plain tars as gzip)."""
    with open(path, "rb") as f:
        head = f.read(len(ZSTD_MAGIC))
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return "zstd" if head == ZSTD_MAGIC else "none"


def _view_layout(src: Path, manifest_digest: str, view: Path) -> None:
    """A layout holding only `manifest_digest`, rewritten into what umoci can unpack."""
    manifest = read_blob_json(src, manifest_digest)
    init_layout(view)
    link_blob(src, view, manifest["config"]["digest"])
    layers = []
    for layer in manifest["layers"]:
        if layer["mediaType"] not in KNOWN_LAYER_TYPES:
            raise ImageBuildError(f"cannot unpack layer media type {layer['mediaType']!r}")
        path = blob_path(src, layer["digest"])
        compression = _sniff(path)
        if compression == "zstd":
            plain = view / "layer.tar.tmp"
            with open(path, "rb") as fin, open(plain, "wb") as fout:
                zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=COPY_BUFSIZE, write_size=COPY_BUFSIZE)
            digest, size = put_blob_file(view, plain)
            layers.append({"mediaType": mt.OCI_LAYER, "digest": digest, "size": size})
        else:
            link_blob(src, view, layer["digest"])
            media_type = mt.OCI_LAYER_GZIP if compression == "gzip" else mt.OCI_LAYER
            layers.append({"mediaType": media_type, "digest": layer["digest"], "size": layer["size"]})
    oci_manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {**manifest["config"], "mediaType": mt.OCI_CONFIG}, "layers": layers,
    }
    digest, size = put_json(view, oci_manifest)
    write_index(view, [tagged({"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": size}, VIEW_TAG)])


def _unpack(view: Path, bundle: Path) -> None:
    rootless = ["--rootless"] if os.geteuid() != 0 else []  # as root: real owners and devices
    umoci("unpack", *rootless, "--image", f"{view}:{VIEW_TAG}", bundle)


def layout_rootfs(layout: Path, tag: str, platform: str | None = None) -> Path:
    """The unpacked rootfs of `layout:tag` (for an index: `platform`, default its first entry)."""
    require_tools("umoci")
    layout = Path(layout).resolve()
    desc = select_manifest(layout, tag, platform)

    def build(bundle: Path) -> None:
        view = bundle.parent / "view"
        _view_layout(layout, desc["digest"], view)
        _unpack(view, bundle)

    return cached_build("rootfs", f"{RECIPE}|{desc['digest']}", build) / "rootfs"


def archive_rootfs(archive: Path) -> Path:
    """The unpacked rootfs of a `docker save` archive (its only image)."""
    require_tools("umoci", "skopeo")
    archive = Path(archive).resolve()
    h = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(COPY_BUFSIZE):
            h.update(chunk)

    def build(bundle: Path) -> None:
        copied = bundle.parent / "copied"
        skopeo("copy", "--quiet", "--dest-oci-accept-uncompressed-layers", f"docker-archive:{archive}",
               f"oci:{copied}:{VIEW_TAG}")
        view = bundle.parent / "view"
        _view_layout(copied, select_manifest(copied, VIEW_TAG)["digest"], view)
        shutil.rmtree(copied)
        _unpack(view, bundle)

    return cached_build("rootfs", f"{RECIPE}|archive|{h.hexdigest()}", build) / "rootfs"
