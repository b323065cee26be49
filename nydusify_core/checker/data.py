"""Data rule: every chunk the bootstrap references decompresses to bytes with the recorded
digest, every blob has the digest its id promises, and (with a source) every file's
content equals the source's.

Each blob is streamed once, front to back (large buffered reads, the stream verifying the
blob's sha256 at EOF), and its chunks are decompressed (zstd/lz4 in C) and hashed
(blake3/sha256 in C) in offset order; blobs are verified in parallel threads. Content
equality needs no second read: the source side hashes each file along the same chunk
boundaries with the same digester (`rootfs`), so equal chunk digests plus verified chunks
mean equal bytes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Callable

from nydusify_core.checker.report import Problems
from nydusify_core.checker.rootfs import ChunkPlan, Rec
from nydusify_core.errors import NydusifyError
from nydusify_core.rafs.compression import decompress
from nydusify_core.rafs.digest import digest
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node

_SKIP = 1 << 20


@dataclass(order=True)
class ChunkRef:
    offset: int
    csize: int
    usize: int = field(compare=False)
    compressed: bool = field(compare=False)
    digest: bytes = field(compare=False)
    path: bytes = field(compare=False)  # the first file using it, for messages


def _sane(ch: ChunkInfo, nblobs: int) -> bool:
    """Bounded sizes and a real blob: what may be read and allocated for a chunk."""
    return (0 <= ch.blob_index < nblobs and 0 < ch.uncompressed_size <= C.MAX_CHUNK_SIZE
            and 0 < ch.compressed_size <= C.MAX_CHUNK_SIZE + (C.MAX_CHUNK_SIZE >> 4) and ch.compressed_offset >= 0)


def chunk_tables(bs: Bootstrap) -> tuple[dict[int, list[ChunkRef]], ChunkPlan]:
    """Distinct chunks per blob index (offset order), and each file's chunk plan.

    Chunk records with impossible sizes or blob indexes are left out (the bootstrap rule
    reports them), so nothing sized by a hostile bootstrap is ever read or allocated."""
    tables: dict[int, dict[tuple[int, int], ChunkRef]] = {}
    plan: ChunkPlan = {}
    nblobs = len(bs.blobs)
    for path, node in bs.walk():
        if not node.is_reg():
            continue
        pieces: list[tuple[int, str, bytes]] | None = []
        offset = 0
        for ch in sorted(node.chunks, key=lambda c: c.file_offset):
            if not _sane(ch, nblobs) or ch.file_offset != offset:
                pieces = None  # reported by the bootstrap rule; never read or hashed
                break
            offset += ch.uncompressed_size
            pieces.append((ch.uncompressed_size, bs.blobs[ch.blob_index].digester, ch.digest))
            table = tables.setdefault(ch.blob_index, {})
            key = (ch.compressed_offset, ch.compressed_size)
            if key not in table:
                table[key] = ChunkRef(ch.compressed_offset, ch.compressed_size, ch.uncompressed_size, ch.compressed, ch.digest, path)
        if pieces is not None and offset == node.size:
            plan[path] = (node.size, pieces)
    return {i: sorted(t.values()) for i, t in tables.items()}, plan


@dataclass
class BlobVerdict:
    blob_id: str
    chunks: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def verify_blob(stream: IO[bytes], blob: BlobInfo, chunks: list[ChunkRef], *, max_problems: int = 20) -> BlobVerdict:
    """Stream one blob, checking each referenced chunk; then read to EOF (digest check)."""
    verdict = BlobVerdict(blob.blob_id)
    pos = 0
    try:
        for ch in chunks:
            if ch.offset < pos:
                verdict.problems.append(f"chunk {ch.offset}+{ch.csize} overlaps the previous chunk")
                continue
            while pos < ch.offset:
                skipped = len(stream.read(min(_SKIP, ch.offset - pos)))
                if not skipped:
                    break
                pos += skipped
            raw = stream.read(ch.csize)
            pos += len(raw)
            if len(raw) != ch.csize:
                verdict.problems.append(f"blob ends at {pos} bytes, before the chunk at {ch.offset}+{ch.csize} ({os.fsdecode(ch.path)})")
                break
            try:
                data = decompress(raw, blob.compressor, ch.usize) if ch.compressed else raw
                if len(data) != ch.usize:
                    raise NydusifyError(f"{len(data)} bytes instead of {ch.usize}")
            except NydusifyError as exc:
                verdict.problems.append(f"chunk at {ch.offset} ({os.fsdecode(ch.path)}) does not decompress: {exc}")
            else:
                if digest(blob.digester, data) != ch.digest:
                    verdict.problems.append(f"chunk at {ch.offset} ({os.fsdecode(ch.path)}) fails its {blob.digester} digest")
                verdict.bytes += ch.usize
            verdict.chunks += 1
            if len(verdict.problems) >= max_problems:
                break
        else:
            while stream.read(_SKIP):  # to EOF: the stream checks the blob's digest and size
                pass
    except NydusifyError as exc:
        verdict.problems.append(str(exc))
    return verdict


BlobOpener = Callable[[int, BlobInfo], IO[bytes]]


def verify_blobs(bs: Bootstrap, tables: dict[int, list[ChunkRef]], opener: BlobOpener, *, workers: int = 2) -> list[BlobVerdict]:
    """Verify every blob of the table (those without referenced chunks too: their digest)."""

    def one(index: int) -> BlobVerdict:
        blob = bs.blobs[index]
        try:
            stream = opener(index, blob)
        except NydusifyError as exc:
            return BlobVerdict(blob.blob_id, problems=[f"cannot be read: {exc}"])
        try:
            return verify_blob(stream, blob, tables.get(index, []))
        finally:
            try:
                stream.close()
            except NydusifyError:
                pass

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="check-blob") as pool:
        return list(pool.map(one, range(len(bs.blobs))))


def blob_problems(verdicts: list[BlobVerdict], problems: Problems) -> None:
    for v in verdicts:
        for p in v.problems:
            problems.add(f"blob {v.blob_id}: {p}")


def content_problems(source: dict[bytes, Rec], nydus: dict[bytes, Node], problems: Problems) -> int:
    """Files present in both trees with equal sizes must have had equal chunk digests."""
    compared = 0
    for path, rec in source.items():
        node = nydus.get(path)
        if node is None or not node.is_reg() or rec.kids is not None or rec.link is not None or rec.size != node.size:
            continue
        if rec.content is True:
            compared += 1
        elif rec.content is None:
            if rec.mode & 0o170000 == 0o100000:
                problems.add(f"{os.fsdecode(path)}: content was not compared (no usable chunk list)")
        else:
            compared += 1
            problems.add(f"{os.fsdecode(path)}: content {rec.content}")
    return compared
