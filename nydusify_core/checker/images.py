"""Open `--source` and `--target` through the source plugins and pick the manifests to check.

Both sides are read exactly as `convert` reads a source (`oci:PATH[:TAG]` built in, registry
references through the registry plugin), so check needs no access method of its own.
Index handling follows nydus-image-spec.md §5.2: for the wanted platform, a target index
yields its Nydus manifest (and, in a merged index, its OCI manifest); a source index yields
its OCI manifest. Problems with the *content* found (wrong config, unparsable manifest) are
recorded for the manifest rule instead of being raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nydusify_core.errors import FormatError, NydusifyError
from nydusify_core.oci import image as img
from nydusify_core.oci.descriptor import Descriptor, Platform
from nydusify_core.plugins import NydusifyPlugins
from nydusify_core.types import EndpointOptions


@dataclass
class ImageRef:
    """One image (a single manifest) and what could be read of it."""

    entry: Descriptor  # the index entry or the root descriptor
    manifest: img.Manifest
    manifest_bytes: bytes
    config: img.ImageConfig | None = None
    config_bytes: bytes | None = None
    problems: list[str] = field(default_factory=list)  # reading problems, for the manifest rule


@dataclass
class Side:
    """An opened image reference: its root and the manifests chosen for the platform."""

    ref: str
    endpoint: Any  # a `Source`
    root: Descriptor
    root_bytes: bytes
    index: img.Index | None
    nydus: ImageRef | None = None  # target side: the Nydus manifest
    oci: ImageRef | None = None  # source side, or the OCI member of a merged target index
    problems: list[str] = field(default_factory=list)  # e.g. a root that does not parse

    def close(self) -> None:
        self.endpoint.close()


def open_side(plugins: NydusifyPlugins, ref: str, *, insecure: bool, plain_http: bool, work_dir: Any) -> Side:
    """Open `ref` and read its root (index or manifest); unreachable or unknown refs raise."""
    spec = plugins.detect_source(ref)
    endpoint = spec.open(ref, EndpointOptions(insecure=insecure, plain_http=plain_http, work_dir=work_dir, extra={"plugins": plugins}))
    try:
        root = endpoint.resolve()
        data = endpoint.fetch(root)
    except BaseException:
        endpoint.close()
        raise
    try:
        parsed: img.Manifest | img.Index | None = img.parse_image(data, root.media_type)
    except FormatError as exc:  # readable but broken: the manifest rule reports it
        return Side(ref, endpoint, root, data, None, problems=[f"{root.digest}: {exc}"])
    side = Side(ref, endpoint, root, data, parsed if isinstance(parsed, img.Index) else None)
    if isinstance(parsed, img.Manifest):
        ref_ = ImageRef(root, parsed, data)
        if img.is_nydus_manifest(parsed):
            side.nydus = ref_
        else:
            side.oci = ref_
    return side


def _load_manifest(side: Side, entry: Descriptor) -> ImageRef | str:
    try:
        data = side.endpoint.fetch(entry)
        return ImageRef(entry, img.parse_manifest(data, entry.media_type), data)
    except NydusifyError as exc:
        return f"manifest {entry.digest}: {exc}"


def pick_manifests(side: Side, want: Platform) -> list[str]:
    """Fill `side.nydus` / `side.oci` from an index for platform `want`; returns problems."""
    if side.index is None:
        return []
    problems: list[str] = []
    for entry in side.index.manifests:
        if entry.platform is not None and not entry.platform.matches(want):
            continue
        if entry.media_type in img.mt.INDEX_TYPES:
            problems.append(f"nested index {entry.digest} is not supported")
            continue
        loaded = _load_manifest(side, entry)
        if isinstance(loaded, str):
            problems.append(loaded)
            continue
        if img.is_nydus_index_entry(entry) or img.is_nydus_manifest(loaded.manifest):
            side.nydus = side.nydus or loaded
        elif img.mt.ANNOTATION_DOCKER_REFERENCE_TYPE not in entry.annotations:
            side.oci = side.oci or loaded
    return problems


def load_config(side: Side, image: ImageRef) -> None:
    """Fetch and parse the image config; failures become problems of `image`."""
    try:
        data = side.endpoint.fetch(image.manifest.config)
        image.config = img.parse_config(data)
        image.config_bytes = data
    except NydusifyError as exc:
        image.problems.append(f"config {image.manifest.config.digest} cannot be read: {exc}")


__all__ = ["ImageRef", "Side", "load_config", "open_side", "pick_manifests"]
