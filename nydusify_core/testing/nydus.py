"""Reading converted Nydus images back in tests: manifest, config, bootstrap, blobs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nydusify_core.oci import image as img
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor, Platform
from nydusify_core.oci.layout import OciLayout
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.model import Bootstrap
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir
from nydusify_core.types import EndpointOptions

__all__ = ["NydusLayoutImage", "open_nydus_layout", "open_nydus_registry", "pull_to_layout", "unpack_nydus_image"]


@dataclass
class NydusLayoutImage:
    """One Nydus manifest of an OCI layout, with its bootstrap extracted to a file."""

    layout: Path
    descriptor: Descriptor
    manifest: img.Manifest
    manifest_json: dict[str, Any]
    config: dict[str, Any]
    bootstrap_path: Path
    bootstrap: Bootstrap

    @property
    def blob_dir(self) -> Path:
        return self.layout / "blobs" / "sha256"

    @property
    def blob_paths(self) -> list[Path]:
        return [self.blob_dir / b.blob_id for b in self.bootstrap.blobs]


def _pick(layout: OciLayout, root: Descriptor, platform: str | None) -> Descriptor:
    if root.media_type not in mt.INDEX_TYPES:
        return root
    index = img.parse_index(layout.read_blob(root), root.media_type)
    candidates = list(index.manifests)
    if platform:
        want = Platform.parse(platform)
        candidates = [d for d in candidates if d.platform is not None and d.platform.matches(want)]
    for desc in candidates:
        manifest = img.parse_manifest(layout.read_blob(desc), desc.media_type)
        if img.is_nydus_manifest(manifest):
            return desc
    raise AssertionError(f"no Nydus manifest for {platform or 'any platform'} in {layout.path}")


def open_nydus_layout(path: str | Path, work: str | Path, *, tag: str = "latest", platform: str | None = None) -> NydusLayoutImage:
    layout = OciLayout(path)
    desc = _pick(layout, layout.resolve(tag), platform)
    raw = layout.read_blob(desc)
    manifest = img.parse_manifest(raw, desc.media_type)
    assert img.is_nydus_manifest(manifest), "not a Nydus manifest"
    config = json.loads(layout.read_blob(manifest.config))
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    boot = work / f"{desc.hex}.boot"
    with layout.open_blob(manifest.layers[-1]) as src, open(boot, "wb") as out:
        img.extract_bootstrap(src, out)
    return NydusLayoutImage(Path(path), desc, manifest, json.loads(raw), config, boot, read_bootstrap(boot.read_bytes()))


def unpack_nydus_image(image: NydusLayoutImage, output: str | Path, blob_dir: str | Path | None = None) -> Path:
    """Extract the image's files (every chunk verified) into `output`."""
    opener, close = blob_dir_opener(blob_dir or image.blob_dir)
    try:
        unpack_to_dir(image.bootstrap, opener, output)
    finally:
        close()
    return Path(output)


def pull_to_layout(ref: str, layout_dir: str | Path, *, tag: str = "latest", insecure: bool = False,
                   plain_http: bool = False, extra: Mapping[str, Any] | None = None) -> Descriptor:
    """Copy the image `ref` (any source plugin: a registry reference, `oci:`, ...) with every
    manifest, config and layer of every platform into an OCI layout under `tag`.

    Tests read images pushed to registries this way, through the same source plugins the
    product uses, and then with the layout helpers above. Returns the root descriptor."""
    from nydusify_core.plugins import create_plugin_manager

    plugins = create_plugin_manager()
    spec = plugins.detect_source(ref)
    layout = OciLayout(layout_dir)
    layout.init()
    source = spec.open(ref, EndpointOptions(insecure=insecure, plain_http=plain_http, extra=dict(extra or {})))
    try:
        root = source.resolve()
        pending = [root]
        while pending:
            desc = pending.pop()
            data = source.fetch(desc)
            layout.write_blob_bytes(desc, data)
            if desc.media_type in mt.INDEX_TYPES:
                pending.extend(img.parse_index(data, desc.media_type).manifests)
                continue
            manifest = img.parse_manifest(data, desc.media_type)
            layout.write_blob_bytes(manifest.config, source.fetch(manifest.config))
            for layer in manifest.layers:
                if not layout.has_blob(layer.digest):
                    with source.open_blob(layer) as stream:
                        layout.write_blob(layer, stream)
        layout.set_ref(root, tag)
    finally:
        source.close()
    return root


def open_nydus_registry(ref: str, work: str | Path, *, platform: str | None = None, insecure: bool = False,
                        plain_http: bool = False, extra: Mapping[str, Any] | None = None) -> NydusLayoutImage:
    """A Nydus image pushed to a registry, pulled into `work/layout` and opened like a layout."""
    work = Path(work)
    pull_to_layout(ref, work / "layout", insecure=insecure, plain_http=plain_http, extra=extra)
    return open_nydus_layout(work / "layout", work / "boot", platform=platform)
