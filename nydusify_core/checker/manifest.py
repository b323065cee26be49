"""Manifest rule (nydus-image-spec.md §5.3, §1): the Nydus manifest, its config and, where
present, the index and the source image agree with each other and with the bootstrap."""

from __future__ import annotations

from typing import Any

from nydusify_core.checker.images import ImageRef, Side
from nydusify_core.checker.report import Problems
from nydusify_core.oci import image as img
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Platform
from nydusify_core.rafs.model import Bootstrap


def blob_layers(manifest: img.Manifest) -> dict[str, Any]:
    """Blob id -> blob layer descriptor (zran layers by their `nydus-ref` original digest)."""
    out = {}
    for d in manifest.layers[:-1]:
        ref = d.annotations.get(mt.ANNOTATION_NYDUS_REF)
        out[ref.split(":", 1)[-1] if ref else d.hex] = d
    return out


def check_manifest(
    problems: Problems,
    target: Side,
    source: Side | None,
    want: Platform,
    *,
    multi_platform: bool,
    bootstrap: Bootstrap | None,
    bootstrap_diff_id: str | None,
    external_blobs: bool,
) -> None:
    """Add every manifest-level problem to `problems`."""
    if multi_platform:
        if target.index is None:
            problems.add("--multi-platform: the target is a single manifest, not an index holding OCI and Nydus manifests")
        else:
            if target.nydus is None:
                problems.add(f"--multi-platform: the target index has no Nydus manifest for {want}")
            if target.oci is None:
                problems.add(f"--multi-platform: the target index has no OCI manifest for {want}")
    image = target.nydus
    if image is None:
        if target.oci is not None and target.index is None:
            problems.add("the target is not a Nydus image (its last layer is not a Nydus bootstrap layer)")
        else:
            problems.add(f"the target has no Nydus manifest for platform {want}")
        return
    for p in img.nydus_manifest_problems(image.manifest):
        problems.add(p)
    for p in image.problems:
        problems.add(p)
    layers = image.manifest.layers
    if not layers:
        return
    boot = layers[-1]
    fs_version = boot.annotations.get(mt.ANNOTATION_FS_VERSION)
    if fs_version not in (None, "5", "6"):
        problems.add(f"bootstrap layer annotation {mt.ANNOTATION_FS_VERSION}={fs_version!r} is not 5 or 6")
    manifest_fs = image.manifest.annotations.get(mt.ANNOTATION_FS_VERSION)
    if bootstrap is not None:
        if (fs_version or "5") != str(bootstrap.version):
            problems.add(f"bootstrap layer says fs-version {fs_version or '5 (absent)'}, the bootstrap is RAFS v{bootstrap.version}")
        if manifest_fs is not None and manifest_fs != str(bootstrap.version):
            problems.add(f"manifest annotation {mt.ANNOTATION_FS_VERSION}={manifest_fs!r}, the bootstrap is RAFS v{bootstrap.version}")
    uncompressed = boot.annotations.get(mt.ANNOTATION_UNCOMPRESSED)
    if uncompressed and bootstrap_diff_id and uncompressed != bootstrap_diff_id:
        problems.add(f"bootstrap layer annotation {mt.ANNOTATION_UNCOMPRESSED}={uncompressed}, its tar digest is {bootstrap_diff_id}")

    blobs = blob_layers(image.manifest)
    if len(blobs) != len(layers) - 1:
        problems.add("the manifest lists a blob layer twice")
    if bootstrap is not None and blobs:
        for b in bootstrap.blobs:
            if b.blob_id not in blobs:
                problems.add(f"bootstrap blob {b.blob_id} is not a layer of the manifest")
    elif bootstrap is not None and bootstrap.blobs and not (external_blobs or uncompressed):
        # external-backend images (§1.6) list only the bootstrap layer, which keeps its
        # `containerd.io/uncompressed` annotation; anything else has lost its blob layers
        problems.add(f"the manifest lists no blob layers but the bootstrap names {len(bootstrap.blobs)} blobs; "
                     "if they live in object storage, check with --backend-type and --backend-config")

    config = image.config
    if config is not None:
        if image.manifest.config.media_type not in mt.CONFIG_TYPES:
            problems.add(f"config media type {image.manifest.config.media_type!r} is not an image config type")
        _check_diff_ids(problems, image, bootstrap_diff_id)
        _check_platform(problems, "Nydus", image, want)
    oci = target.oci if source is None else source.oci
    if source is not None and oci is None:
        problems.add(f"the source has no OCI manifest for platform {want}")
    if oci is not None:
        for p in oci.problems:
            problems.add(f"{'source' if source is not None else 'OCI manifest of the target index'}: {p}")
        if oci.config is not None:
            if len(oci.config.diff_ids) != len(oci.manifest.layers):
                problems.add(f"source config lists {len(oci.config.diff_ids)} diff_ids for {len(oci.manifest.layers)} layers")
            if config is not None:
                a = _runtime_config(oci.config.raw)
                b = _runtime_config(config.raw)
                if a != b:
                    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                    problems.add(f"image config differs from the source in {', '.join(keys)}")
                for key in ("os", "architecture", "variant"):
                    if oci.config.raw.get(key, "") != config.raw.get(key, ""):
                        problems.add(f"config {key} {config.raw.get(key, '')!r} differs from the source's {oci.config.raw.get(key, '')!r}")


def _runtime_config(raw: Any) -> dict[str, Any]:
    """The `config` object (Env, Cmd, ...) without the legacy dummy `Image` id and
    `ArgsEscaped` (which converters may rewrite)."""
    sub = raw.get("config") or {}
    if not isinstance(sub, dict):
        return {"<invalid>": repr(sub)}
    return {k: v for k, v in sub.items() if k not in ("Image", "ArgsEscaped")}


def _check_diff_ids(problems: Problems, image: ImageRef, bootstrap_diff_id: str | None) -> None:
    assert image.config is not None
    diff_ids = image.config.diff_ids
    layers = image.manifest.layers
    if len(diff_ids) != len(layers):
        problems.add(f"config lists {len(diff_ids)} diff_ids for {len(layers)} manifest layers (wrong config?)")
        return
    for i, (d, layer) in enumerate(zip(diff_ids[:-1], layers[:-1])):
        if d != layer.digest:
            problems.add(f"config diff_id {i} is {d}, the blob layer is {layer.digest}")
    if bootstrap_diff_id and diff_ids[-1] != bootstrap_diff_id:
        problems.add(f"config's last diff_id {diff_ids[-1]} is not the bootstrap layer's tar digest {bootstrap_diff_id}")


def _normalized(p: Platform) -> Platform:
    """As `Platform.parse` reads it: arm64's implied v8 variant dropped."""
    variant = "" if p.architecture == "arm64" and p.variant == "v8" else p.variant
    return Platform(p.os, p.architecture, variant)


def _check_platform(problems: Problems, what: str, image: ImageRef, want: Platform) -> None:
    assert image.config is not None
    raw = image.config.raw
    if not raw.get("os") or not raw.get("architecture"):
        problems.add(f"{what} config lacks os/architecture")
        return
    have = Platform(os=raw.get("os", ""), architecture=raw.get("architecture", ""), variant=raw.get("variant", ""))
    entry = image.entry.platform
    if entry is not None and entry.os and not have.matches(_normalized(entry)):
        problems.add(f"{what} config is for {have}, its index entry says {entry}")
