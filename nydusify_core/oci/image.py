"""Image-level pieces of a conversion: parse manifests/indexes/configs, select platforms,
rewrite the config, write the bootstrap layer, and assemble Nydus manifests and indexes
(nydus-image-spec.md §1–§2).

Everything here is a pure function over parsed records or plain dicts, except
`write_bootstrap_layer`, which streams a file into a gzip tar. JSON output is compact
with a fixed key order (`canonical_json`), so equal inputs give equal digests.

Choices (where the Go tool changed between v2.2.0 and HEAD, we follow HEAD):
* `--oci` has its documented v2.2.1+ meaning: OCI output; default keeps the source family.
* The bootstrap layer is Docker-typed inside Docker manifests (no mixed types).
* One blob layer per source layer, in source order, *including* layers without file data
  (HEAD). v2.2.0 dropped data-less layers; keeping them means the layer list, the config
  diff_ids and the non-empty history entries stay in step with the source, and the cost is
  a tiny extra blob per such layer. `keep_dataless=False` gives the v2.2.0 shape.
* Config: HEAD history entry appended (replaced for external backends), unknown keys kept,
  legacy Docker `Image` ids removed.
* `--merge-platform`: HEAD's standards-clean index (no os.features; Nydus entries carry
  `artifactType` and a Nydus config type; OCI manifests get a leading empty layer), with
  platforms filled from the config when the source entry has none (§11).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import platform as _host
from zlib import error as zlib_error
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

from nydusify_core.errors import FormatError, NotFoundError, UsageError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.blockgzip import BlockGzipWriter
from nydusify_core.oci.descriptor import Descriptor, Platform, check_digest

MAX_JSON_SIZE = 16 << 20
GZIP_LEVEL = 6  # zlib's default, what Go's gzip.DefaultCompression means
_COPY = 1 << 20


# --- JSON ------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Compact JSON in the dicts' own key order, ASCII only (never fails on odd strings)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse untrusted JSON: size-capped, an object, no duplicate keys (which parsers
    resolve differently, letting one document mean two things)."""
    if len(data) > MAX_JSON_SIZE:
        raise FormatError(f"{what} is {len(data)} bytes, too large")
    try:
        obj = json.loads(data, object_pairs_hook=_no_duplicates)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (ValueError, RecursionError):
        raise FormatError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what} is not a JSON object")
    return obj


def _annotations(obj: Mapping[str, Any], what: str) -> dict[str, str]:
    value = obj.get("annotations") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise FormatError(f"{what} has invalid annotations (expected string to string)")
    return dict(value)


def _desc_json(desc: Descriptor) -> dict[str, Any]:
    out = desc.to_json()
    if "annotations" in out:
        out["annotations"] = dict(sorted(out["annotations"].items()))  # Go marshals maps sorted
    return out


# --- manifests, indexes, configs --------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema2). `raw` is the parsed JSON."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    has_media_type: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    has_media_type: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST_LIST


@dataclass(frozen=True)
class ImageConfig:
    """An image config; `raw` keeps every key (unknown ones included) for rewriting."""

    raw: Mapping[str, Any] = field(repr=False)

    @property
    def os(self) -> str:
        return self.raw.get("os", "")

    @property
    def architecture(self) -> str:
        return self.raw.get("architecture", "")

    @property
    def variant(self) -> str:
        return self.raw.get("variant", "")

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(self.raw["rootfs"]["diff_ids"])

    @property
    def history(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self.raw.get("history") or ())

    @property
    def platform(self) -> Platform:
        return Platform(
            os=self.os, architecture=self.architecture, variant=self.variant,
            os_version=self.raw.get("os.version", ""), os_features=tuple(self.raw.get("os.features") or ()),
        )


def _schema_version(obj: Mapping[str, Any], what: str) -> None:
    media_type = obj.get("mediaType")
    version = obj.get("schemaVersion")
    if version == 1 or media_type in mt.SCHEMA1_TYPES:
        raise FormatError(
            f"{what} is a Docker schema1 manifest, which is not supported; "
            "re-push the image with a current Docker, skopeo or crane to get schema2/OCI"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version != 2:
        raise FormatError(f"{what} has schemaVersion {version!r} (expected 2)")


def _effective_type(obj: Mapping[str, Any], media_type: str, what: str) -> tuple[str, bool]:
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise FormatError(f"{what} has a non-string mediaType")
    if declared and media_type and declared != media_type:
        raise FormatError(f"{what} declares mediaType {declared!r} but was served as {media_type!r}")
    return declared or media_type, declared is not None


def parse_manifest(data: bytes, media_type: str = "") -> Manifest:
    """Strictly parse an OCI or Docker schema2 image manifest.

    `media_type` is the type it was served with (descriptor or Content-Type), if known."""
    what = "image manifest"
    obj = load_json_object(data, what)
    _schema_version(obj, what)
    effective, present = _effective_type(obj, media_type, what)
    effective = effective or mt.OCI_MANIFEST
    if effective in mt.INDEX_TYPES or "manifests" in obj:
        raise FormatError(f"{what} is an index/manifest list, not a manifest")
    if effective not in mt.MANIFEST_TYPES:
        raise FormatError(f"{what} has unsupported media type {effective!r}")
    if "config" not in obj or not isinstance(obj.get("layers"), list):
        raise FormatError(f"{what} lacks a config descriptor or a layers list")
    return Manifest(
        media_type=effective,
        config=Descriptor.from_json(obj["config"]),
        layers=tuple(Descriptor.from_json(layer) for layer in obj["layers"]),
        annotations=_annotations(obj, what),
        has_media_type=present,
        raw=obj,
    )


def parse_index(data: bytes, media_type: str = "") -> Index:
    """Strictly parse an OCI image index or a Docker manifest list."""
    what = "image index"
    obj = load_json_object(data, what)
    _schema_version(obj, what)
    effective, present = _effective_type(obj, media_type, what)
    effective = effective or mt.OCI_INDEX
    if effective in mt.MANIFEST_TYPES or "layers" in obj or "config" in obj:
        raise FormatError(f"{what} is a manifest, not an index")
    if effective not in mt.INDEX_TYPES:
        raise FormatError(f"{what} has unsupported media type {effective!r}")
    if not isinstance(obj.get("manifests"), list):
        raise FormatError(f"{what} lacks a manifests list")
    return Index(
        media_type=effective,
        manifests=tuple(Descriptor.from_json(m) for m in obj["manifests"]),
        annotations=_annotations(obj, what),
        has_media_type=present,
        raw=obj,
    )


def parse_image(data: bytes, media_type: str = "") -> Manifest | Index:
    """A root object: dispatched by media type, or by shape when the type is unknown."""
    if media_type in mt.INDEX_TYPES:
        return parse_index(data, media_type)
    if media_type in mt.MANIFEST_TYPES:
        return parse_manifest(data, media_type)
    if media_type in mt.SCHEMA1_TYPES:
        raise FormatError("image is a Docker schema1 manifest, which is not supported; re-push it as schema2/OCI")
    obj = load_json_object(data, "image root")
    declared = obj.get("mediaType", "")
    if declared in mt.INDEX_TYPES or "manifests" in obj:
        return parse_index(data, media_type)
    return parse_manifest(data, media_type)


def parse_config(data: bytes) -> ImageConfig:
    """Strictly parse an image config (OCI or Docker); keeps unknown keys."""
    what = "image config"
    obj = load_json_object(data, what)
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise FormatError(f"{what} lacks rootfs {{type: layers, diff_ids: [...]}}")
    for diff_id in rootfs["diff_ids"]:
        try:
            check_digest(diff_id)
        except FormatError as exc:
            raise FormatError(f"{what}: diff_id {exc}") from None
    for key in ("os", "architecture", "variant", "os.version"):
        if key in obj and not isinstance(obj[key], str):
            raise FormatError(f"{what}: {key} is not a string")
    history = obj.get("history")
    if history is not None and (not isinstance(history, list) or not all(isinstance(h, dict) for h in history)):
        raise FormatError(f"{what}: history is not a list of objects")
    return ImageConfig(raw=obj)


def check_config_matches(manifest: Manifest, config: ImageConfig) -> None:
    """The config must list one diff_id per layer (a hard error in nydusify too)."""
    if len(config.diff_ids) != len(manifest.layers):
        raise FormatError(
            f"image config lists {len(config.diff_ids)} diff_ids for {len(manifest.layers)} manifest layers"
        )


# --- platform selection (§2.2) ----------------------------------------------------------


_HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_platform() -> Platform:
    """`linux/<host arch>`, the default `--platform` (only amd64 and arm64 hosts)."""
    machine = _host.machine().lower()
    arch = _HOST_ARCH.get(machine)
    if arch is None:
        raise UsageError(f"unsupported host architecture {machine!r}; pass --platform explicitly")
    return Platform(os="linux", architecture=arch)


def is_nydus_index_entry(desc: Descriptor) -> bool:
    """A Nydus member of a merged index: os.features (v2.2.0) or artifactType (HEAD)."""
    return desc.artifact_type == mt.NYDUS_MANIFEST_ARTIFACT or (
        desc.platform is not None and mt.NYDUS_OS_FEATURE in desc.platform.os_features
    )


def _parse_platforms(platforms: Iterable[Platform | str]) -> list[Platform]:
    out: list[Platform] = []
    for item in platforms:
        for text in ([item] if isinstance(item, Platform) else str(item).split(",")):
            p = text if isinstance(text, Platform) else Platform.parse(text)
            if p not in out:
                out.append(p)
    return out


def select_manifests(index: Index, platforms: Sequence[Platform | str] = (), *, all_platforms: bool = False) -> list[Descriptor]:
    """The index entries to convert, in index order.

    Nydus entries (of a merged index) and buildx attestation manifests are never converted.
    `all_platforms` overrides `platforms` silently (as in nydusify). Without either, the
    host platform is used. Entries without a platform are kept, like containerd does.
    """
    wanted = [] if all_platforms else (_parse_platforms(platforms) or [host_platform()])
    selected = []
    for desc in index.manifests:
        if is_nydus_index_entry(desc) or mt.ANNOTATION_DOCKER_REFERENCE_TYPE in desc.annotations:
            continue
        if desc.media_type in mt.INDEX_TYPES:
            raise FormatError(f"nested index {desc.digest} inside an index is not supported")
        if all_platforms or desc.platform is None or any(desc.platform.matches(w) for w in wanted):
            selected.append(desc)
    if not selected:
        available = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise NotFoundError(
            f"no manifest in the index matches platform(s) {', '.join(map(str, wanted)) or 'any'} (available: {available})"
        )
    return selected


# --- media-type family (§1.5) -----------------------------------------------------------


def to_oci_type(media_type: str) -> str:
    return mt.DOCKER_TO_OCI.get(media_type, media_type)


def output_is_docker(source_media_type: str, oci: bool) -> bool:
    """Documented `--oci` meaning (v2.2.1+): OCI output if asked, else keep the family."""
    return not oci and source_media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST)


def bootstrap_media_type(docker: bool) -> str:
    return mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP


# --- config rewrite (§1.4) --------------------------------------------------------------


def bootstrap_history_entry() -> dict[str, str]:
    return {"created_by": mt.NYDUS_HISTORY_CREATED_BY, "comment": mt.NYDUS_HISTORY_BOOTSTRAP_COMMENT}


def _clear_legacy_image_ids(cfg: dict[str, Any]) -> None:
    for key in ("config", "container_config"):
        sub = cfg.get(key)
        if isinstance(sub, dict):
            sub.pop("Image", None)


def rewrite_config(
    config: ImageConfig | Mapping[str, Any],
    *,
    blob_diff_ids: Sequence[str],
    bootstrap_diff_id: str,
    external_backend: bool = False,
) -> dict[str, Any]:
    """The Nydus image config: source config with new diff_ids and history (§1.4).

    Registry backend: diff_ids = blob digests + bootstrap tar digest, history gets the
    bootstrap entry appended. External backend: both become single-entry lists.
    Every other key, known or not, is kept in place.
    """
    raw = config.raw if isinstance(config, ImageConfig) else config
    cfg = copy.deepcopy(dict(raw))
    diff_ids = [bootstrap_diff_id] if external_backend else [*blob_diff_ids, bootstrap_diff_id]
    for d in diff_ids:
        check_digest(d)
    rootfs = dict(cfg.get("rootfs") or {})
    rootfs["type"] = "layers"
    rootfs["diff_ids"] = diff_ids
    cfg["rootfs"] = rootfs
    if external_backend:
        cfg["history"] = [bootstrap_history_entry()]
    else:
        cfg["history"] = [*(cfg.get("history") or []), bootstrap_history_entry()]
    _clear_legacy_image_ids(cfg)
    return cfg


# --- descriptors and the bootstrap layer (§1.2, §1.3) ----------------------------------


def nydus_blob_descriptor(digest: str, size: int, *, oci_ref: str = "") -> Descriptor:
    annotations = {mt.ANNOTATION_NYDUS_BLOB: "true"}
    if oci_ref:
        annotations[mt.ANNOTATION_NYDUS_REF] = check_digest(oci_ref)
    return Descriptor(media_type=mt.NYDUS_BLOB, digest=check_digest(digest), size=size, annotations=annotations)


def bootstrap_annotations(fs_version: int, diff_id: str, external_backend: bool) -> dict[str, str]:
    out = {mt.ANNOTATION_NYDUS_BOOTSTRAP: "true", mt.ANNOTATION_FS_VERSION: str(fs_version)}
    if external_backend:
        out[mt.ANNOTATION_UNCOMPRESSED] = diff_id
    return out


@dataclass(frozen=True)
class BootstrapLayer:
    """The written bootstrap layer: its (gzip) descriptor and its diff_id (tar digest)."""

    descriptor: Descriptor
    diff_id: str

    def retyped(self, *, docker: bool, fs_version: int, external_backend: bool) -> Descriptor:
        return replace(
            self.descriptor,
            media_type=bootstrap_media_type(docker),
            annotations=bootstrap_annotations(fs_version, self.diff_id, external_backend),
        )


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _ustar_header(name: bytes, mode: int, size: int, typeflag: bytes) -> bytes:
    """A ustar header with Go-zero fields (uid/gid/mtime 0, no user/group names)."""
    if len(name) > 100:
        raise UsageError(f"bootstrap layer entry name too long: {name!r}")
    if size >= 8 ** 11:
        raise UsageError("bootstrap larger than 8 GiB cannot be stored in a ustar header")
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % 0
    h[116:124] = b"%07o\0" % 0
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[329:337] = b"%07o\0" % 0
    h[337:345] = b"%07o\0" % 0
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _copy_file(path: Path, size: int, out: IO[bytes]) -> None:
    with open(path, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(_COPY, left))
            if not chunk:
                raise FormatError(f"{path} shrank while it was being packed")
            out.write(chunk)
            left -= len(chunk)
    out.write(bytes(-size % 512))


def write_bootstrap_layer(
    bootstrap: str | Path,
    out: IO[bytes],
    *,
    docker: bool = False,
    fs_version: int = 6,
    external_backend: bool = False,
    extra_files: Sequence[tuple[str, str | Path]] = (),
) -> BootstrapLayer:
    """Stream the bootstrap layer (gzip of tar: `image` 0755, `image/image.boot` 0444) to `out`.

    `extra_files` are (name, path) pairs stored as `image/<name>` 0444 after the bootstrap
    (HEAD stores `<blob hex>.blob.meta` files there). Gzip: default level, no file name,
    mtime 0, deflated in blocks on every core (`blockgzip`); the tar ends with two zero
    blocks like Go's writer.
    """
    files = [(mt.BOOTSTRAP_PATH_IN_LAYER.encode(), Path(bootstrap))]
    for name, path in extra_files:
        if not name or "/" in name or name in (".", ".."):
            raise UsageError(f"invalid bootstrap layer file name {name!r}")
        files.append((f"{mt.BOOTSTRAP_DIR_IN_LAYER}/{name}".encode(), Path(path)))
    gz_out = _HashingWriter(out)
    with BlockGzipWriter(gz_out, GZIP_LEVEL, threads=os.cpu_count() or 1) as gz:
        tar_out = _HashingWriter(gz)  # type: ignore[arg-type]
        tar_out.write(_ustar_header(mt.BOOTSTRAP_DIR_IN_LAYER.encode(), 0o755, 0, b"5"))
        for name, path in files:
            size = path.stat().st_size
            tar_out.write(_ustar_header(name, 0o444, size, b"0"))
            _copy_file(path, size, tar_out)  # type: ignore[arg-type]
        tar_out.write(bytes(1024))
    diff_id = tar_out.digest
    desc = Descriptor(
        media_type=bootstrap_media_type(docker), digest=gz_out.digest, size=gz_out.size,
        annotations=bootstrap_annotations(fs_version, diff_id, external_backend),
    )
    return BootstrapLayer(descriptor=desc, diff_id=diff_id)


# --- Nydus manifest assembly (§1.2–§1.3, §1.10, §2.5) ----------------------------------


@dataclass(frozen=True)
class LayerResult:
    """What converting one source layer produced: its Nydus blob, and whether that blob
    holds file data (False for empty / directory-only layers)."""

    blob: Descriptor
    has_data: bool = True


def blob_layers(results: Sequence[LayerResult], extra_blobs: Sequence[Descriptor] = (), *, keep_dataless: bool = True) -> list[Descriptor]:
    """The manifest's blob layers: per source layer in order (HEAD keeps data-less ones,
    `keep_dataless=False` drops them like v2.2.0), then chunk-dict blobs not yet listed."""
    layers = [r.blob for r in results if keep_dataless or r.has_data]
    listed = {d.digest for d in layers}
    for blob in extra_blobs:
        if blob.digest not in listed:
            layers.append(blob)
            listed.add(blob.digest)
    return layers


@dataclass(frozen=True)
class AssembleOptions:
    oci: bool = False
    external_backend: bool = False
    fs_version: int = 6
    source_digest: str = ""
    source_reference: str = ""
    builder_version: str = ""
    for_merged_index: bool = False
    subject: Descriptor | None = None


@dataclass(frozen=True)
class BuiltImage:
    """Serialised manifest and config of a converted image, with their descriptors."""

    manifest: bytes
    manifest_descriptor: Descriptor
    config: bytes
    config_descriptor: Descriptor


def manifest_json(
    media_type: str | None,
    config: Descriptor,
    layers: Sequence[Descriptor],
    annotations: Mapping[str, str] | None = None,
    subject: Descriptor | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        out["mediaType"] = media_type
    out["config"] = _desc_json(config)
    out["layers"] = [_desc_json(d) for d in layers]
    if subject is not None:
        out["subject"] = _desc_json(replace(subject, platform=None))
    if annotations:
        out["annotations"] = dict(sorted(annotations.items()))
    return out


def assemble_nydus_image(
    source: Manifest,
    source_config: ImageConfig,
    blobs: Sequence[Descriptor],
    bootstrap: BootstrapLayer,
    options: AssembleOptions = AssembleOptions(),
) -> BuiltImage:
    """Nydus manifest + config for one converted source manifest.

    `blobs` are the blob layers in manifest order (see `blob_layers`); they are ignored for
    the manifest with an external backend, where only the bootstrap layer is listed.
    """
    docker = output_is_docker(source.media_type, options.oci)
    config = rewrite_config(
        source_config, blob_diff_ids=[b.digest for b in blobs],
        bootstrap_diff_id=bootstrap.diff_id, external_backend=options.external_backend,
    )
    config_bytes = canonical_json(config)
    if options.for_merged_index:
        config_type = mt.NYDUS_CONFIG
    else:
        config_type = mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG
    config_desc = Descriptor.for_bytes(config_type, config_bytes)
    boot = bootstrap.retyped(docker=docker, fs_version=options.fs_version, external_backend=options.external_backend)
    layers = [boot] if options.external_backend else [*blobs, boot]
    annotations = dict(source.annotations)
    for key in mt.LEGACY_TRACE_ANNOTATIONS:
        annotations.pop(key, None)
    annotations[mt.ANNOTATION_FS_VERSION] = str(options.fs_version)
    if options.source_digest:
        annotations[mt.ANNOTATION_SOURCE_DIGEST] = check_digest(options.source_digest)
    if options.source_reference:
        annotations[mt.ANNOTATION_SOURCE_REFERENCE] = options.source_reference
    if options.builder_version:
        annotations[mt.ANNOTATION_BUILDER_VERSION] = options.builder_version
    manifest_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    keep_type = source.has_media_type or docker or source.media_type != manifest_type
    manifest = manifest_json(manifest_type if keep_type else None, config_desc, layers, annotations, options.subject)
    data = canonical_json(manifest)
    return BuiltImage(data, Descriptor.for_bytes(manifest_type, data), config_bytes, config_desc)


# --- indexes (§1.8) ---------------------------------------------------------------------


def index_json(media_type: str | None, entries: Sequence[Descriptor], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        out["mediaType"] = media_type
    out["manifests"] = [_desc_json(d) for d in entries]
    if annotations:
        out["annotations"] = dict(sorted(annotations.items()))
    return out


def build_converted_index(source: Index, converted: Sequence[tuple[Descriptor, Descriptor]], *, oci: bool = False) -> bytes:
    """The converted index (no `--merge-platform`), HEAD style: no os.features added.

    `converted` pairs each selected source entry with its converted manifest descriptor;
    the entry keeps the source platform and annotations. HEAD pushes the bare manifest
    instead when only one entry is left; that decision is the caller's.
    """
    entries = [replace(new, platform=old.platform, annotations=dict(old.annotations)) for old, new in converted]
    media_type = to_oci_type(source.media_type) if oci else source.media_type
    keep_type = source.has_media_type or media_type != source.media_type or media_type == mt.DOCKER_MANIFEST_LIST
    return canonical_json(index_json(media_type if keep_type else None, entries, source.annotations))


def platform_from_config(config: ImageConfig) -> Platform:
    if not config.os or not config.architecture:
        raise FormatError("image config lacks os/architecture, needed to describe it in an index")
    return Platform(os=config.os, architecture=config.architecture, variant=config.variant, os_version=config.raw.get("os.version", ""))


def merged_index_entry(desc: Descriptor, platform: Platform | None, *, nydus: bool, source_digest: str = "") -> Descriptor:
    """An entry of a `--merge-platform` index: Nydus entries get the Nydus artifactType,
    OCI entries the `nydus-source-digest` of the manifest they were rewritten from."""
    annotations = dict(desc.annotations)
    if source_digest:
        annotations[mt.ANNOTATION_SOURCE_DIGEST] = check_digest(source_digest)
    if platform is not None:
        platform = replace(platform, os_features=tuple(f for f in platform.os_features if f != mt.NYDUS_OS_FEATURE))
    return replace(
        desc, platform=platform, annotations=annotations,
        artifact_type=mt.NYDUS_MANIFEST_ARTIFACT if nydus else desc.artifact_type,
    )


def build_merged_index(oci_entries: Sequence[Descriptor], nydus_entries: Sequence[Descriptor]) -> bytes:
    """`--merge-platform` index: OCI entries, then Nydus entries. Unlike the Go tool we
    write `mediaType` (the image-spec says SHOULD)."""
    return canonical_json(index_json(mt.OCI_INDEX, [*oci_entries, *nydus_entries]))


def empty_layer(*, docker: bool = False) -> tuple[bytes, Descriptor]:
    """The empty gzip tar prepended to OCI manifests of a merged index (diff_id fixed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(bytes(1024))
    data = buf.getvalue()
    media_type = mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP
    return data, Descriptor.for_bytes(media_type, data, annotations={mt.ANNOTATION_EMPTY_LAYER: "true"})


def merged_oci_config(config: ImageConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Source config with the empty layer's diff_id and history entry put first."""
    raw = config.raw if isinstance(config, ImageConfig) else config
    cfg = copy.deepcopy(dict(raw))
    rootfs = dict(cfg.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [mt.EMPTY_TAR_DIFF_ID, *(rootfs.get("diff_ids") or [])]
    cfg["rootfs"] = rootfs
    empty = {"created_by": mt.NYDUS_HISTORY_CREATED_BY, "comment": mt.NYDUS_HISTORY_EMPTY_COMMENT}
    cfg["history"] = [empty, *(cfg.get("history") or [])]
    _clear_legacy_image_ids(cfg)
    return cfg


def merged_oci_manifest(source: Manifest, *, config: Descriptor, empty: Descriptor, source_digest: str) -> bytes:
    """The rewritten OCI member of a merged index (HEAD): a fresh leading empty layer makes
    its chain ids differ from the stock image, so runtimes never share snapshots."""
    annotations = {**source.annotations, mt.ANNOTATION_SOURCE_DIGEST: check_digest(source_digest)}
    media_type = source.media_type if source.has_media_type else None
    return canonical_json(manifest_json(media_type, config, [empty, *source.layers], annotations))


# --- recognising Nydus manifests (§1.11, §1.12) -----------------------------------------


def _is_bootstrap(desc: Descriptor) -> bool:
    return desc.media_type in mt.BOOTSTRAP_LAYER_TYPES and desc.annotations.get(mt.ANNOTATION_NYDUS_BOOTSTRAP) == "true"


def is_nydus_manifest(manifest: Manifest) -> bool:
    """The last layer is a gzip layer (OCI or Docker) annotated nydus-bootstrap=true.
    Also true for v2.1-era images (their extra annotations are tolerated)."""
    return bool(manifest.layers) and _is_bootstrap(manifest.layers[-1])


def has_nydus_layers(manifest: Manifest) -> bool:
    """Any layer already marked as Nydus (converting such an image makes no sense)."""
    return any(
        d.media_type == mt.NYDUS_BLOB or mt.ANNOTATION_NYDUS_BLOB in d.annotations or mt.ANNOTATION_NYDUS_BOOTSTRAP in d.annotations
        for d in manifest.layers
    )


def nydus_fs_version(manifest: Manifest) -> int:
    """From the bootstrap layer annotation; 5 when absent or unrecognised (as readers do)."""
    if not is_nydus_manifest(manifest):
        raise FormatError("not a Nydus manifest (no bootstrap layer last)")
    return 6 if manifest.layers[-1].annotations.get(mt.ANNOTATION_FS_VERSION) == "6" else 5


def nydus_manifest_problems(manifest: Manifest) -> list[str]:
    """The checker's manifest rule: empty when the manifest is a valid Nydus manifest."""
    if not manifest.layers:
        return ["manifest has no layers"]
    problems = []
    if not _is_bootstrap(manifest.layers[-1]):
        problems.append("last layer is not a gzip layer annotated containerd.io/snapshot/nydus-bootstrap=true")
    for i, d in enumerate(manifest.layers[:-1]):
        if d.media_type != mt.NYDUS_BLOB or d.annotations.get(mt.ANNOTATION_NYDUS_BLOB) != "true":
            problems.append(f"layer {i} ({d.digest}) is not a Nydus blob layer")
    return problems


def legacy_reference_blob_ids(bootstrap: Descriptor) -> list[str]:
    """v2.1 writers listed chunk-dict blob ids as a JSON array in an annotation."""
    text = bootstrap.annotations.get(mt.ANNOTATION_REFERENCE_BLOB_IDS)
    if not text:
        return []
    try:
        ids = json.loads(text)
    except ValueError:
        raise FormatError("nydus-reference-blob-ids annotation is not a JSON array") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise FormatError("nydus-reference-blob-ids annotation is not a list of blob ids")
    return ids


# --- reading a bootstrap layer back (check, unpack, tests) -----------------------------


def extract_bootstrap(layer: IO[bytes], out: IO[bytes], *, max_size: int = 1 << 34) -> int:
    """Copy `image/image.boot` out of a (gzip) bootstrap layer stream; returns its size.

    Only that exact entry name counts (§1.3: older writers used other modes, never other
    names); a layer without it is a `FormatError`.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=layer, mode="r|*") as tar:
            for member in tar:
                if member.name.lstrip("./") == mt.BOOTSTRAP_PATH_IN_LAYER and member.isfile():
                    if member.size > max_size:
                        raise FormatError(f"bootstrap of {member.size} bytes is larger than allowed")
                    src = tar.extractfile(member)
                    assert src is not None
                    copied = 0
                    while True:
                        chunk = src.read(_COPY)
                        if not chunk:
                            break
                        out.write(chunk)
                        copied += len(chunk)
                    if copied != member.size:
                        raise FormatError("bootstrap layer ends inside image/image.boot")
                    return copied
    except (tarfile.TarError, EOFError, OSError, zlib_error) as exc:
        raise FormatError(f"bootstrap layer is not a valid (gzip) tar: {exc}") from None
    raise FormatError(f"bootstrap layer has no {mt.BOOTSTRAP_PATH_IN_LAYER}")
