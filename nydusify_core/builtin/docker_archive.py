"""Source `docker-archive`: a `docker save` tarball (`docker-archive:FILE[:repo:tag|:@N]`).

Two shapes are read:
* the classic save format: `manifest.json` naming a `<id>.json` config and layer tars (plain
  or, from newer Dockers, gzip), sometimes through `<id>/layer.tar` symlinks. There is no
  registry manifest, so one is synthesised: a Docker schema2 manifest whose layer
  descriptors describe the layer files *as stored* (digest computed by streaming each once,
  media type from the magic bytes);
* an OCI image layout inside the tar (`oci-layout`, `index.json`, `blobs/`), written by
  Docker >= 25 next to `manifest.json`: its real manifests are served as they are.

The archive is read in place with random access (member offsets from `tarfile`, data through
`os.pread` on a private descriptor, so concurrent readers never share a file position).
Member names with `..`, absolute paths or symlinks leaving the archive are refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable

from nydusify_core.errors import FormatError, IntegrityError, NotFoundError, UsageError
from nydusify_core.hookspecs import hookimpl
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor, check_digest
from nydusify_core.oci.image import MAX_JSON_SIZE, canonical_json, load_json_object, parse_config
from nydusify_core.oci.layertar import GZIP_MAGIC, ZSTD_MAGIC, normalize_path
from nydusify_core.oci.verify import verified_reader
from nydusify_core.types import EndpointOptions, SourceSpec

PREFIX = "docker-archive:"
MAX_LINK_HOPS = 16
_COPY = 1 << 20


@dataclass(frozen=True)
class ArchiveRef:
    path: Path
    selector: str | None  # "repo:tag", "@N" or None

    def __str__(self) -> str:
        return f"{PREFIX}{self.path}" + (f":{self.selector}" if self.selector else "")


def parse_ref(ref: str) -> ArchiveRef:
    """`docker-archive:FILE[:repo:tag]` or `…:@N`. FILE may contain colons when it exists."""
    if not ref.startswith(PREFIX):
        raise UsageError(f"not a docker-archive reference: {ref!r} (expected docker-archive:FILE[:repo:tag])")
    rest = ref[len(PREFIX):]
    if not rest:
        raise UsageError("empty path in reference 'docker-archive:'")
    if Path(rest).is_file():
        return ArchiveRef(Path(rest), None)
    pos = rest.find(":")
    while pos > 0:
        if Path(rest[:pos]).is_file():
            return ArchiveRef(Path(rest[:pos]), rest[pos + 1:] or None)
        pos = rest.find(":", pos + 1)
    head, _, selector = rest.partition(":")
    return ArchiveRef(Path(head), selector or None)


def normalize_name(name: str) -> str:
    """Docker's familiar-name expansion, so `busybox` matches `docker.io/library/busybox:latest`."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    repo, tag = (name.rsplit(":", 1) if ":" in last else (name, "latest"))
    parts = repo.split("/")
    if parts[0] == "index.docker.io":
        parts[0] = "docker.io"
    if len(parts) == 1 or not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts.insert(0, "docker.io")
    if parts[0] == "docker.io" and len(parts) == 2:
        parts.insert(1, "library")
    return "/".join(parts) + ":" + tag


def _join_inside(base: str, target: str) -> str | None:
    """`base/target` with `..` applied lexically; None when it climbs above the root."""
    parts: list[str] = [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True)
class _Member:
    type: str  # "file", "symlink", "hardlink", "other"
    offset: int = 0
    size: int = 0
    link: str = ""


class _Region(io.RawIOBase):
    """`size` bytes at `offset` of a file, read with pread on a private descriptor."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._pos = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        if not n:
            return 0
        data = os.pread(self._fd, n, self._pos)
        if not data:
            raise FormatError("docker archive is truncated")
        b[:len(data)] = data
        self._pos += len(data)
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            super().close()


class DockerArchive:
    """The member table of a tar archive, with safe name and link resolution."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                head = f.read(4)
                self.file_size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise NotFoundError(f"docker archive {path} does not exist") from None
        if head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC):
            raise UsageError(f"{path} is compressed; decompress it first (docker-archive needs random access)")
        self.members: dict[str, _Member] = {}
        try:
            with tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape") as tar:
                for info in tar:
                    self._add(info)
        except tarfile.TarError as exc:
            raise FormatError(f"{path} is not a readable tar archive: {exc}") from None

    def _name(self, raw: str) -> str:
        data = raw.encode("utf-8", "surrogateescape")
        if data.startswith(b"/"):
            raise FormatError(f"docker archive {self.path}: absolute member name {raw!r}")
        try:
            return normalize_path(data).decode("utf-8", "surrogateescape")
        except ValueError as exc:
            raise FormatError(f"docker archive {self.path}: member {raw!r}: {exc}") from None

    def _add(self, info: tarfile.TarInfo) -> None:
        name = self._name(info.name)
        if info.isreg() and not info.issparse():
            if info.offset_data + info.size > self.file_size:
                raise FormatError(f"docker archive {self.path} is truncated (member {name!r})")
            member = _Member("file", info.offset_data, info.size)
        elif info.issym():
            member = _Member("symlink", link=info.linkname)
        elif info.islnk():
            member = _Member("hardlink", link=self._name(info.linkname))
        else:
            member = _Member("other")
        self.members[name] = member

    def resolve(self, name: str) -> _Member:
        """Follow symlinks/hardlinks inside the archive (never outside it)."""
        current = self._name(name)
        for _ in range(MAX_LINK_HOPS):
            member = self.members.get(current)
            if member is None:
                raise NotFoundError(f"docker archive {self.path} has no member {current!r}")
            if member.type == "file":
                return member
            if member.type == "hardlink":
                current = member.link
            elif member.type == "symlink":
                if member.link.startswith("/"):
                    raise FormatError(f"docker archive {self.path}: symlink {current!r} is absolute")
                resolved = _join_inside(os.path.dirname(current), member.link)
                if resolved is None:
                    raise FormatError(f"docker archive {self.path}: symlink {current!r} points outside the archive")
                current = resolved
            else:
                raise FormatError(f"docker archive {self.path}: member {current!r} is not a regular file")
        raise FormatError(f"docker archive {self.path}: too many links resolving {name!r}")

    def has(self, name: str) -> bool:
        return self._name(name) in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.resolve(name)
        return io.BufferedReader(_Region(self.path, member.offset, member.size), buffer_size=_COPY)

    def read_small(self, name: str) -> bytes:
        member = self.resolve(name)
        if member.size > MAX_JSON_SIZE:
            raise FormatError(f"docker archive {self.path}: {name!r} is too large to be metadata")
        with self.open(name) as f:
            return f.read()


@dataclass(frozen=True)
class _Blob:
    member: str | None = None  # archive member holding the bytes
    data: bytes | None = None  # or the bytes themselves (synthesised manifest, small JSON)


class DockerArchiveSource:
    """`Source` over a docker-archive file (see the module docstring)."""

    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        self.ref = ref
        parsed = parse_ref(ref)
        self.selector = parsed.selector
        self.archive = DockerArchive(parsed.path)
        self._blobs: dict[str, _Blob] = {}
        self._root: Descriptor | None = None

    # --- Source protocol ----------------------------------------------------------------

    def resolve(self) -> Descriptor:
        if self._root is None:
            if self.archive.has("index.json") and self.archive.has("oci-layout"):
                self._root = self._resolve_oci()
            elif self.archive.has("manifest.json"):
                self._root = self._resolve_legacy()
            else:
                raise FormatError(f"{self.archive.path} is not a docker save archive (no manifest.json or index.json)")
        return self._root

    def fetch(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_JSON_SIZE:
            raise FormatError(f"{desc.media_type} {desc.digest} is {desc.size} bytes, too large to be metadata")
        with self.open_blob(desc) as f:
            data = f.read(desc.size + 1)
            f.read()
        return data

    def open_blob(self, desc: Descriptor) -> IO[bytes]:
        self.resolve()
        blob = self._blobs.get(desc.digest)
        if blob is None:
            blob = self._oci_blob(desc.digest)
        stream = io.BytesIO(blob.data) if blob.data is not None else self.archive.open(blob.member or "")
        return verified_reader(stream, desc.digest, desc.size)

    def close(self) -> None:
        pass

    # --- Docker >= 25: OCI layout inside the archive -------------------------------------

    def _oci_blob(self, digest: str) -> _Blob:
        name = "blobs/" + check_digest(digest).replace(":", "/")
        if not self.archive.has(name):
            raise NotFoundError(f"blob {digest} is not in docker archive {self.archive.path}")
        return _Blob(member=name)

    def _resolve_oci(self) -> Descriptor:
        index = load_json_object(self.archive.read_small("index.json"), f"{self.archive.path}: index.json")
        entries = index.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise FormatError(f"{self.archive.path}: index.json lists no images")
        descs = [Descriptor.from_json(e) for e in entries]
        if self.selector is None:
            if len(descs) != 1:
                raise UsageError(f"{self.archive.path} holds {len(descs)} images; name one with :repo:tag or :@N")
            chosen = descs[0]
        elif self.selector.startswith("@"):
            chosen = descs[self._position(self.selector, len(descs))]
        else:
            want = normalize_name(self.selector)
            matches = [
                d for d in descs
                if normalize_name(d.annotations.get(mt.ANNOTATION_CONTAINERD_IMAGE_NAME, "") or "-") == want
                or d.annotations.get(mt.ANNOTATION_REF_NAME) == self.selector
            ]
            if not matches:
                raise NotFoundError(f"image {self.selector!r} not found in {self.archive.path}")
            chosen = matches[0]
        annotations = {k: v for k, v in chosen.annotations.items()
                       if k not in (mt.ANNOTATION_REF_NAME, mt.ANNOTATION_CONTAINERD_IMAGE_NAME)}
        return Descriptor(chosen.media_type, chosen.digest, chosen.size, annotations, chosen.platform, chosen.urls, chosen.artifact_type)

    # --- classic save format -------------------------------------------------------------

    def _position(self, selector: str, count: int) -> int:
        try:
            pos = int(selector[1:])
        except ValueError:
            raise UsageError(f"invalid image position {selector!r} (expected @N)") from None
        if not 0 <= pos < count:
            raise NotFoundError(f"{self.archive.path} has no image at position {pos} (it holds {count})")
        return pos

    def _select_legacy(self, entries: list[Any]) -> dict[str, Any]:
        if self.selector is None:
            if len(entries) != 1:
                tags = [t for e in entries for t in (e.get("RepoTags") or [])]
                raise UsageError(f"{self.archive.path} holds {len(entries)} images ({', '.join(tags)}); name one with :repo:tag or :@N")
            return entries[0]
        if self.selector.startswith("@"):
            return entries[self._position(self.selector, len(entries))]
        want = normalize_name(self.selector)
        for entry in entries:
            if any(normalize_name(tag) == want for tag in entry.get("RepoTags") or []):
                return entry
        raise NotFoundError(f"image {self.selector!r} not found in {self.archive.path}")

    def _resolve_legacy(self) -> Descriptor:
        where = f"{self.archive.path}: manifest.json"
        data = self.archive.read_small("manifest.json")
        try:
            entries = json.loads(data)
        except ValueError:
            raise FormatError(f"{where} is not valid JSON") from None
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise FormatError(f"{where} is not a list of images")
        for entry in entries:
            if not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list) \
                    or not all(isinstance(x, str) for x in entry["Layers"]) \
                    or not isinstance(entry.get("RepoTags") or [], list):
                raise FormatError(f"{where} has an entry without Config/Layers")
        entry = self._select_legacy(entries)

        config_bytes = self.archive.read_small(entry["Config"])
        config = parse_config(config_bytes)
        config_desc = Descriptor.for_bytes(mt.DOCKER_CONFIG, config_bytes)
        self._blobs[config_desc.digest] = _Blob(data=config_bytes)
        if len(config.diff_ids) != len(entry["Layers"]):
            raise FormatError(f"{where}: {len(entry['Layers'])} layers but the config lists {len(config.diff_ids)} diff_ids")
        layers = [self._layer_descriptor(name, diff_id) for name, diff_id in zip(entry["Layers"], config.diff_ids)]
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [d.to_json() for d in layers],
        }
        manifest_bytes = canonical_json(manifest)
        desc = Descriptor.for_bytes(mt.DOCKER_MANIFEST, manifest_bytes)
        self._blobs[desc.digest] = _Blob(data=manifest_bytes)
        return desc

    def _layer_descriptor(self, name: str, diff_id: str) -> Descriptor:
        """Digest the stored layer file once and type it from its magic bytes."""
        hasher = hashlib.sha256()
        head = b""
        size = 0
        with self.archive.open(name) as f:
            while chunk := f.read(_COPY):
                if not head:
                    head = chunk[:4]
                hasher.update(chunk)
                size += len(chunk)
        digest = "sha256:" + hasher.hexdigest()
        if head.startswith(GZIP_MAGIC):
            media_type = mt.DOCKER_LAYER_GZIP
        elif head.startswith(ZSTD_MAGIC):
            media_type = mt.OCI_LAYER_ZSTD  # Docker schema2 has no zstd type
        else:
            media_type = mt.DOCKER_LAYER
            if digest != diff_id:
                raise IntegrityError(
                    f"layer {name!r} of {self.archive.path} has digest {digest} but the config says {diff_id}",
                    expected=diff_id, got=digest,
                )
        self._blobs[digest] = _Blob(member=name)
        return Descriptor(media_type=media_type, digest=digest, size=size)


def _accepts(ref: str) -> bool:
    return ref.startswith(PREFIX)


@hookimpl
def nydusify_register_sources() -> Iterable[SourceSpec]:
    yield SourceSpec(
        name="docker-archive",
        description="a `docker save` archive (docker-archive:FILE[:repo:tag])",
        accepts=_accepts,
        open=DockerArchiveSource,
    )
