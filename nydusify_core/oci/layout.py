"""OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/...`).

References are `oci:PATH[:TAG]`. Blobs are written through a temporary file, verified,
then renamed; `index.json` is replaced atomically, so a reader never sees a tag that
points at a missing blob.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nydusify_core.errors import FormatError, IntegrityError, NotFoundError, UsageError
from nydusify_core.fsutil import atomic_output, atomic_write_bytes
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor, check_digest
from nydusify_core.oci.verify import verified_reader

PREFIX = "oci:"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
MAX_JSON_SIZE = 16 << 20  # manifests, indexes and configs are small; refuse absurd ones


@dataclass(frozen=True)
class LayoutRef:
    path: Path
    tag: str | None

    def __str__(self) -> str:
        return f"{PREFIX}{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_ref(ref: str) -> LayoutRef:
    """`oci:PATH[:TAG]`. A PATH that exists as a directory with a colon in its name wins."""
    if not ref.startswith(PREFIX):
        raise UsageError(f"not an OCI layout reference: {ref!r} (expected oci:PATH[:TAG])")
    rest = ref[len(PREFIX):]
    if not rest:
        raise UsageError("empty OCI layout path in reference 'oci:'")
    if ":" in rest and not Path(rest).is_dir():
        path, tag = rest.rsplit(":", 1)
        if tag and "/" not in tag:
            return LayoutRef(Path(path), tag)
    return LayoutRef(Path(rest), None)


class OciLayout:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- reading ----------------------------------------------------------------------

    def check(self) -> None:
        marker = self.path / LAYOUT_FILE
        if not marker.is_file():
            raise NotFoundError(f"{self.path} is not an OCI image layout (no {LAYOUT_FILE} file)")
        try:
            version = json.loads(marker.read_text()).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            raise FormatError(f"{marker} is not valid JSON") from None
        if not isinstance(version, str) or not version.startswith("1."):
            raise FormatError(f"{self.path}: unsupported image layout version {version!r}")

    def index(self) -> dict[str, Any]:
        path = self.path / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "manifests": []}
        try:
            data = json.loads(_read_small(path))
        except ValueError:
            raise FormatError(f"{path} is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise FormatError(f"{path} is not an OCI index")
        return data

    def resolve(self, tag: str | None) -> Descriptor:
        self.check()
        entries = [Descriptor.from_json(m) for m in self.index().get("manifests", [])]
        if tag is None:
            if len(entries) == 1:
                return entries[0]
            tag = "latest"
        for desc in entries:
            if desc.annotations.get(mt.ANNOTATION_REF_NAME) == tag:
                return _without_ref_name(desc)
        known = sorted(d.annotations.get(mt.ANNOTATION_REF_NAME, "") for d in entries)
        raise NotFoundError(f"tag {tag!r} not found in OCI layout {self.path} (tags: {', '.join(t for t in known if t) or 'none'})")

    def blob_path(self, digest: str) -> Path:
        algo, hex_ = check_digest(digest).split(":", 1)
        return self.path / "blobs" / algo / hex_

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, desc: Descriptor) -> IO[bytes]:
        path = self.blob_path(desc.digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {desc.digest} missing from OCI layout {self.path}") from None
        return verified_reader(f, desc.digest, desc.size)

    def read_blob(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_JSON_SIZE:
            raise FormatError(f"{desc.media_type} {desc.digest} is {desc.size} bytes, too large to be metadata")
        with self.open_blob(desc) as f:
            data = f.read(desc.size + 1)
            f.read()  # reach EOF so the digest is verified
        return data

    # --- writing ----------------------------------------------------------------------

    def init(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.path / LAYOUT_FILE
        if not marker.exists():
            atomic_write_bytes(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        elif not (self.path / "index.json").exists():
            self.check()
        if not (self.path / "index.json").exists():
            atomic_write_bytes(self.path / "index.json", _dumps({"schemaVersion": 2, "manifests": []}))

    def write_blob(self, desc: Descriptor, stream: IO[bytes]) -> None:
        dest = self.blob_path(desc.digest)
        if dest.is_file() and dest.stat().st_size == desc.size:
            return
        reader = verified_reader(stream, desc.digest, desc.size)
        with atomic_output(dest, 0o444) as out:
            shutil.copyfileobj(reader, out, 1 << 20)

    def adopt_blob(self, desc: Descriptor, path: str | Path) -> None:
        """Store a local file whose digest the caller computed itself while writing it.

        Re-hashing our own freshly built blob would only repeat the builder's work, so the
        file is hard-linked into `blobs/` (copied, unverified, across filesystems); only its
        size is checked. Streams from anywhere else go through `write_blob`, which verifies.
        The file must not be modified afterwards: the layout shares its inode.
        """
        dest = self.blob_path(desc.digest)
        if dest.is_file() and dest.stat().st_size == desc.size:
            return
        size = os.stat(path).st_size
        if size != desc.size:
            raise IntegrityError(f"{path} is {size} bytes, descriptor {desc.digest} says {desc.size}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(8)}.link"
        try:
            try:
                os.link(path, tmp)
            except OSError:  # another filesystem, or no hard links there
                with atomic_output(dest, 0o444) as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                return
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_blob_bytes(self, desc: Descriptor, data: bytes) -> None:
        import io

        self.write_blob(desc, io.BytesIO(data))

    def set_ref(self, desc: Descriptor, tag: str | None) -> None:
        """Make `tag` point at `desc` (replacing an earlier entry with that tag)."""
        if not self.has_blob(desc.digest):
            raise IntegrityError(f"refusing to tag {desc.digest}: its blob is not in {self.path}")
        index = self.index()
        manifests = [
            m for m in index.get("manifests", [])
            if not (tag and (m.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == tag)
        ]
        entry = desc.to_json()
        if tag:
            entry["annotations"] = {**entry.get("annotations", {}), mt.ANNOTATION_REF_NAME: tag}
        manifests.append(entry)
        index["manifests"] = manifests
        index.setdefault("schemaVersion", 2)
        index.setdefault("mediaType", mt.OCI_INDEX)
        atomic_write_bytes(self.path / "index.json", _dumps(index))


def _without_ref_name(desc: Descriptor) -> Descriptor:
    annotations = {k: v for k, v in desc.annotations.items() if k != mt.ANNOTATION_REF_NAME}
    return Descriptor(desc.media_type, desc.digest, desc.size, annotations, desc.platform, desc.urls, desc.artifact_type)


def _read_small(path: Path) -> bytes:
    size = os.stat(path).st_size
    if size > MAX_JSON_SIZE:
        raise FormatError(f"{path} is {size} bytes, too large")
    return path.read_bytes()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"
