"""Bootstrap rule: the bootstrap layer unpacks, the bootstrap parses and is self-consistent,
and its blob table names blobs the image (or the given backend) actually has.

Checked without blob data: superblock values, blob ids, and that every chunk record
points at an existing blob, inside that blob, and that each file's chunks tile it exactly.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nydusify_core.errors import FormatError
from nydusify_core.fsutil import atomic_output
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.layertar import LayerTar
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.model import Bootstrap
from nydusify_core.checker.report import Problems

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_COPY = 1 << 20
MAX_BOOTSTRAP = 1 << 32


@dataclass
class ExtractedBootstrap:
    path: Path
    diff_id: str  # sha256 of the bootstrap layer's tar


def extract_bootstrap_layer(stream: Any, desc: Descriptor, out_path: Path) -> ExtractedBootstrap:
    """Stream the bootstrap layer (digest-verified by `stream`), write `image/image.boot` to
    `out_path` atomically, and return the tar's diff_id. Raises `NydusifyError` subclasses."""
    found = False
    with LayerTar(stream, media_type=desc.media_type, layer="bootstrap") as tar:
        for entry in tar:
            if entry.path == mt.BOOTSTRAP_PATH_IN_LAYER.encode() and entry.data is not None and not found:
                if entry.size > MAX_BOOTSTRAP:
                    raise FormatError(f"bootstrap of {entry.size} bytes is larger than allowed")
                with atomic_output(out_path) as out:
                    while block := entry.data.read(_COPY):
                        out.write(block)
                found = True
        diff_id = tar.diff_id
    if not found:
        raise FormatError(f"bootstrap layer has no {mt.BOOTSTRAP_PATH_IN_LAYER}")
    assert diff_id is not None
    return ExtractedBootstrap(out_path, diff_id)


def load(path: Path) -> Bootstrap:
    """Parse the bootstrap file (mapped, not read into memory twice)."""
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise FormatError("bootstrap is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return read_bootstrap(data)


def check_bootstrap(bs: Bootstrap, problems: Problems, blob_sizes: dict[str, int]) -> int:
    """Structural checks of a parsed bootstrap; returns the number of chunk records seen.

    `blob_sizes` maps blob ids to their real sizes when known (manifest layers, backend)."""
    if bs.chunk_size & (bs.chunk_size - 1) or not C.MIN_CHUNK_SIZE <= bs.chunk_size <= C.MAX_CHUNK_SIZE:
        problems.add(f"superblock chunk size {bs.chunk_size:#x} is not a power of two from 0x1000 to 0x1000000")
    seen: set[str] = set()
    limits: list[int] = []
    for i, blob in enumerate(bs.blobs):
        if not _BLOB_ID.fullmatch(blob.blob_id):
            problems.add(f"blob {i}: id {blob.blob_id[:80]!r} is not 64 lowercase hex digits")
        if blob.blob_id in seen:
            problems.add(f"blob {i}: id {blob.blob_id} appears twice in the blob table")
        seen.add(blob.blob_id)
        real = blob_sizes.get(blob.blob_id)
        if real is not None and blob.compressed_size and blob.compressed_size > real:
            problems.add(f"blob {i} ({blob.blob_id}): table says {blob.compressed_size} bytes, the blob has {real}")
        limits.append(real if real is not None else (blob.compressed_size or -1))
    chunks = 0
    for path, node in bs.walk():
        if not node.is_reg():
            continue
        where = path.decode("utf-8", "surrogateescape")
        offset = 0
        for ch in sorted(node.chunks, key=lambda c: c.file_offset):
            chunks += 1
            if ch.file_offset != offset:
                problems.add(f"{where}: chunk at file offset {ch.file_offset}, expected {offset}")
                break
            offset += ch.uncompressed_size
            if not 0 <= ch.blob_index < len(bs.blobs):
                problems.add(f"{where}: chunk refers to blob {ch.blob_index}, the blob table has {len(bs.blobs)}")
                continue
            blob = bs.blobs[ch.blob_index]
            if not 0 < ch.uncompressed_size <= C.MAX_CHUNK_SIZE or ch.compressed_size <= 0:
                problems.add(f"{where}: chunk sizes {ch.compressed_size}/{ch.uncompressed_size} out of range")
            limit = limits[ch.blob_index]
            if ch.compressed_offset < 0 or (limit >= 0 and ch.compressed_offset + ch.compressed_size > limit):
                problems.add(f"{where}: chunk {ch.compressed_offset}+{ch.compressed_size} lies outside blob {blob.blob_id} ({limit} bytes)")
            if blob.chunk_count and not 0 <= ch.index < blob.chunk_count:
                problems.add(f"{where}: chunk index {ch.index} is not below blob {blob.blob_id}'s {blob.chunk_count} chunks")
        else:
            if offset != node.size:
                problems.add(f"{where}: chunks cover {offset} bytes of a {node.size}-byte file")
    return chunks
