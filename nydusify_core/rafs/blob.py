"""Native RAFS data blobs: a streaming writer and a bounds-checked reader (rafs-format.md §5-§6).

`BlobWriter` cuts file data into chunks, hashes and compresses them in worker threads
(zstandard, lz4, blake3 and hashlib release the GIL), deduplicates in submission order,
packs compressed offsets, aligns uncompressed offsets (v6 always, v5 on request) and
then appends the metadata sections in the order nydus-image v2.2 writes them (§6.1):

    v5 plain       chunk data
    v5 inline      chunk data | hdr image.blob | bootstrap | hdr image.boot
    v6 plain       chunk data | CI table | CI header
    v6 blob-toc    chunk data | hdr image.blob | CI | CI header | hdr blob.meta |
                   blob.digest | hdr blob.digest | [bootstrap | hdr image.boot] | TOC | hdr rafs.blob.toc
    v6 inline      chunk data | hdr image.blob | CI | CI header | hdr blob.meta | bootstrap | hdr image.boot

The blob id is sha256 of every byte written except the `blob.digest` payload (§6.4).
Use: ``add_file``/``add_chunk`` ..., ``seal()`` (blob table for the bootstrap), then
``finish(bootstrap_bytes_if_inline)``.

`BlobReader` reads chunks of a blob given its `BlobInfo`, or discovers the CI table,
TOC, chunk digests and inline bootstrap from the blob alone.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Iterator, Mapping, Sequence

from nydusify_core.errors import FormatError, IntegrityError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.blobmeta import BlobMetaHeader, CiEntry, decode_ci, encode_ci_v1_entry
from nydusify_core.rafs.compression import check_algorithm, compress, decompress
from nydusify_core.rafs.digest import check_digester, digest, hasher, sha256
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo
from nydusify_core.rafs.toc import TocEntry, decode_toc, encode_toc_entries, parse_tar_header, tar_header

__all__ = ["BlobOptions", "BlobReader", "BlobResult", "BlobWriter", "ChunkDict", "check_chunk_size"]

_BLK = C.BLOCK_SIZE
_HDR = C.TAR_BLOCK
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def check_chunk_size(size: int, *, limit: int = C.MAX_BUILD_CHUNK_SIZE) -> int:
    """A power of two in 4 KiB .. `limit` (1 MiB for builds, 16 MiB for readers)."""
    if size & (size - 1) or not C.MIN_CHUNK_SIZE <= size <= limit:
        raise FormatError(f"chunk size {size:#x} must be a power of two between {C.MIN_CHUNK_SIZE:#x} and {limit:#x}")
    return size


@dataclass(frozen=True)
class BlobOptions:
    """How a blob is built (the nydus-image `create` flags that shape the blob).

    aligned_chunk: 4 KiB aligned uncompressed offsets; forced on for v6.
    inline_meta: `--blob-inline-meta` (bootstrap stored in the blob, passed to `finish`).
    blob_toc: `--features blob-toc` (v6 only): tar headers, chunk digests and a TOC.
    ci_compressor: algorithm tried for the CI table; v2.2.0/v2.2.1 always try zstd.
    blob_id: overrides the computed id (`--blob-id`).
    threads: compress+hash workers; None = CPU count (max 8), 0 = in the calling thread.
    """

    fs_version: int = 6
    compressor: str = "zstd"
    digester: str = "blake3"
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    aligned_chunk: bool = False
    inline_meta: bool = False
    blob_toc: bool = False
    ci_compressor: str = "zstd"
    blob_id: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.fs_version not in (5, 6):
            raise FormatError(f"unsupported RAFS version {self.fs_version}")
        check_algorithm(self.compressor)
        check_algorithm(self.ci_compressor)
        check_digester(self.digester)
        check_chunk_size(self.chunk_size, limit=C.MAX_CHUNK_SIZE)
        if self.blob_toc and self.fs_version == 5:
            raise FormatError("the blob-toc feature needs RAFS v6")

    @property
    def aligned(self) -> bool:
        return self.fs_version == 6 or self.aligned_chunk

    @property
    def tar_headers(self) -> bool:
        return self.inline_meta or self.blob_toc

    def base_features(self) -> int:
        """Blob features known before any chunk is written (BuildContext::new in v2.2)."""
        f = C.BLOB_CAP_TAR_TOC
        if self.inline_meta:
            f |= C.BLOB_INLINED_FS_META | C.BLOB_HAS_TAR_HEADER
        if self.blob_toc:
            f |= C.BLOB_HAS_TOC | C.BLOB_HAS_TAR_HEADER
        return f


@dataclass
class ChunkDict:
    """Chunks stored by other blobs (a chunk dictionary or a parent bootstrap).

    `chunks` maps a chunk digest to a record whose `blob_index` refers to `blobs`.
    """

    blobs: list[BlobInfo]
    chunks: dict[bytes, ChunkInfo] = field(default_factory=dict)

    @classmethod
    def from_bootstrap(cls, bs: Bootstrap) -> "ChunkDict":
        chunks: dict[bytes, ChunkInfo] = {}
        for _, node in bs.walk():
            for ch in node.chunks:
                if 0 <= ch.blob_index < len(bs.blobs):
                    chunks.setdefault(ch.digest, ch)
        return cls([replace(b) for b in bs.blobs], chunks)


@dataclass
class BlobResult:
    """What `BlobWriter.finish` produced.

    blob: this build's blob as a merged bootstrap should record it (real id, whole-file
    size, TOC size/digest); None when nothing was written (no chunk, no inline meta).
    blob_table: the table a separately written bootstrap must carry (parent/dictionary
    blobs in index order, this blob included when it holds chunks).
    file_digest: sha256 hex of the whole file (the OCI layer digest); differs from the
    blob id when `blob.digest` is present.
    """

    blob: BlobInfo | None
    blob_table: list[BlobInfo]
    size: int
    file_digest: str
    bootstrap_blob_table: list[BlobInfo] = field(default_factory=list)  # as embedded inline


def _work(data: bytes, compressor: str, digester: str) -> tuple[bytes, bytes, bool]:
    stored, compressed = compress(data, compressor)
    return digest(digester, data), stored, compressed


def _work_batch(datas: list[bytes], compressor: str, digester: str) -> list[tuple[bytes, bytes, bool]]:
    return [_work(data, compressor, digester) for data in datas]


class _BatchedHash:
    """A hash fed in pieces of about 1 MiB. Each update of more than 2 KiB releases the GIL,
    and a thread that releases it per ~10 KiB chunk waits for it again behind the other
    threads (up to a switch interval each time); the blob's bytes pass one chunk at a time."""

    _PIECE = 1 << 20

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pending: list[bytes] = []
        self._size = 0

    def update(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self._PIECE:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._inner.update(b"".join(self._pending))
            self._pending, self._size = [], 0

    def copy(self) -> Any:
        self._flush()
        return self._inner.copy()

    def digest(self) -> bytes:
        self._flush()
        return self._inner.digest()

    def hexdigest(self) -> str:
        self._flush()
        return self._inner.hexdigest()


# Chunks are handed to the workers in batches of about this many bytes: one future per
# small file would cost more in thread hand-offs (and GIL convoys) than compressing it.
_BATCH_BYTES = 1 << 20


class BlobWriter:
    """Streams chunk data into `out` (a binary file opened for writing at offset 0)."""

    def __init__(
        self,
        out: BinaryIO,
        options: BlobOptions = BlobOptions(),
        *,
        chunk_dict: ChunkDict | None = None,
        parent: ChunkDict | None = None,
    ) -> None:
        self.options = options
        self._out = out
        self._pos = 0
        self._hash = _BatchedHash(hasher("sha256"))  # blob id: everything but the blob.digest payload
        self._file_hash = None  # forks from _hash when the digest array is written
        self._uoff = 0
        self._chunk_count = 0
        self._ci = bytearray()
        self._digests: list[bytes] = []
        self._toc: list[TocEntry] = []
        self._own: dict[bytes, ChunkInfo] = {}
        self._dict = chunk_dict
        self._dict_map: dict[int, int] = {}
        self._table: list[BlobInfo] = [replace(b) for b in parent.blobs] if parent else []
        self._parent_chunks: Mapping[bytes, ChunkInfo] = parent.chunks if parent else {}
        self._own_index: int | None = None
        self._meta_header: BlobMetaHeader | None = None
        self._sealed = False
        self._finished = False
        self._data_size = 0
        threads = options.threads
        if threads is None:
            threads = min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="blob") if threads > 0 else None
        self._max_pending = 2 * threads + 2  # batches in flight (bounded memory)
        self._pending: collections.deque[tuple[Future, list[ChunkInfo]]] = collections.deque()
        self._batch: list[bytes] = []  # chunks not yet handed to a worker, in order
        self._batch_ph: list[ChunkInfo] = []
        self._batch_bytes = 0
        self.dedup_chunks = 0
        self.dedup_bytes = 0

    # -- context manager / cleanup -------------------------------------------------------
    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads (pending chunks are dropped)."""
        if self._pool is not None:
            for fut, _ in self._pending:
                fut.cancel()
            self._pending.clear()
            self._batch, self._batch_ph, self._batch_bytes = [], [], 0
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- chunk intake ----------------------------------------------------------------------
    @property
    def blob_index(self) -> int | None:
        """Index of this blob in the blob table, once it holds a chunk."""
        return self._own_index

    @property
    def chunk_count(self) -> int:
        return self._chunk_count

    def add_chunk(self, data: bytes, file_offset: int = 0) -> ChunkInfo:
        """Queue one chunk; the returned record is complete after `flush()`/`seal()`."""
        if self._sealed:
            raise FormatError("blob writer already sealed")
        if not data or len(data) > self.options.chunk_size:
            raise FormatError(f"chunk of {len(data)} bytes (chunk size {self.options.chunk_size})")
        ph = ChunkInfo(bytes(32), 0, 0, 0, 0, 0, len(data), file_offset, 0)
        if self._pool is None:
            self._commit(ph, _work(data, self.options.compressor, self.options.digester))
            return ph
        self._batch.append(data)
        self._batch_ph.append(ph)
        self._batch_bytes += len(data)
        if self._batch_bytes >= _BATCH_BYTES:
            self._submit_batch()
        return ph

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        assert self._pool is not None
        fut = self._pool.submit(_work_batch, self._batch, self.options.compressor, self.options.digester)
        self._pending.append((fut, self._batch_ph))
        self._batch, self._batch_ph, self._batch_bytes = [], [], 0
        while len(self._pending) > self._max_pending:
            self._drain_one()

    def add_file(self, f: BinaryIO, size: int) -> list[ChunkInfo]:
        """Read exactly `size` bytes from `f` chunk by chunk; records in file order."""
        cs = self.options.chunk_size
        chunks = []
        offset = 0
        while offset < size:
            want = min(cs, size - offset)
            data = f.read(want)
            while len(data) < want:  # short reads from pipes / slow files
                more = f.read(want - len(data))
                if not more:
                    raise IntegrityError(f"file shrank while reading: got {offset + len(data)} of {size} bytes")
                data += more
            chunks.append(self.add_chunk(data, offset))
            offset += want
        return chunks

    def flush(self) -> None:
        if self._pool is not None:
            self._submit_batch()
        while self._pending:
            self._drain_one()

    def _drain_one(self) -> None:
        fut, phs = self._pending.popleft()
        for ph, result in zip(phs, fut.result()):
            self._commit(ph, result)

    def _lookup(self, dig: bytes, usize: int) -> ChunkInfo | None:
        if self._dict is not None:
            hit = self._dict.chunks.get(dig)
            if hit is not None and hit.uncompressed_size in (0, usize):
                return replace(hit, blob_index=self._dict_blob(hit.blob_index))
        for table in (self._own, self._parent_chunks):
            hit = table.get(dig)
            if hit is not None and hit.uncompressed_size in (0, usize):
                return hit
        return None

    def _dict_blob(self, inner: int) -> int:
        """Blob table index of a dictionary blob, pulled into the table on first use (§7.1)."""
        idx = self._dict_map.get(inner)
        if idx is None:
            assert self._dict is not None
            if not 0 <= inner < len(self._dict.blobs):
                raise FormatError(f"chunk dictionary refers to blob {inner} of {len(self._dict.blobs)}")
            blob = self._dict.blobs[inner]
            idx = next((i for i, b in enumerate(self._table) if b.blob_id == blob.blob_id), None)
            if idx is None:
                idx = len(self._table)
                self._table.append(replace(blob))
            self._dict_map[inner] = idx
        return idx

    def _commit(self, ph: ChunkInfo, result: tuple[bytes, bytes, bool]) -> None:
        dig, stored, compressed = result
        usize = ph.uncompressed_size
        hit = self._lookup(dig, usize)
        if hit is not None:
            _fill(ph, hit)
            self.dedup_chunks += 1
            self.dedup_bytes += usize
            return
        if self._own_index is None:
            self._own_index = len(self._table)
            self._table.append(BlobInfo(""))  # filled by seal()
        index = self._chunk_count
        if index >= C.MAX_CHUNKS_PER_BLOB:
            raise FormatError(f"a blob holds at most {C.MAX_CHUNKS_PER_BLOB} chunks")
        coff = self._pos
        self._write(stored)
        uoff = self._uoff
        self._uoff += _align(usize, _BLK) if self.options.aligned else usize
        if self.options.fs_version == 6:
            self._ci += encode_ci_v1_entry(coff, len(stored), uoff, usize)
            self._digests.append(dig)
        self._chunk_count += 1
        ph.digest, ph.blob_index, ph.index = dig, self._own_index, index
        ph.flags = C.CHUNK_COMPRESSED if compressed else 0
        ph.compressed_offset, ph.compressed_size, ph.uncompressed_offset = coff, len(stored), uoff
        if dig not in self._own:  # a copy, built directly (dataclasses.replace is slow per chunk)
            self._own[dig] = ChunkInfo(dig, ph.blob_index, ph.flags, coff, len(stored), uoff, usize, ph.file_offset, index)

    # -- output helpers ----------------------------------------------------------------------
    def _write(self, data: bytes, *, hashed: bool = True) -> None:
        self._out.write(data)
        self._pos += len(data)
        if self._file_hash is not None:
            self._file_hash.update(data)
        if hashed:
            self._hash.update(data)

    def _write_header(self, name: str, size: int) -> bytes:
        hdr = tar_header(name, size)
        self._write(hdr)
        return hdr

    def _toc_entry(self, name: str, comp: str, dig: bytes, off: int, csize: int, usize: int) -> None:
        self._toc.append(TocEntry(name, comp, dig, off, csize, usize))

    # -- sealing -----------------------------------------------------------------------------
    @property
    def _features(self) -> int:
        f = self.options.base_features()
        if self.options.fs_version == 6 and self._chunk_count:
            f |= C.BLOB_ALIGNED
            if self.options.blob_toc:
                f |= C.BLOB_INLINED_CHUNK_DIGEST
        return f

    def seal(self) -> list[BlobInfo]:
        """Wait for all chunks, write the data-side metadata; return the bootstrap's blob table.

        With inline meta the own entry carries the placeholder id "x"*64 and the offset at
        which the bootstrap will start as compressed size, exactly as nydus embeds it.
        """
        if self._sealed:
            return self._bootstrap_table()
        self.flush()
        self._sealed = True
        opts = self.options
        self._data_size = self._pos
        if self._chunk_count and opts.tar_headers:
            self._write_header(C.ENTRY_BLOB_DATA, self._data_size)
            if opts.blob_toc:
                self._toc_entry(
                    C.ENTRY_BLOB_DATA, "none", self._hash.copy().digest(), C.DEFAULT_BLOB_OFFSET, self._data_size,
                    self._uoff,
                )
        if self._chunk_count and opts.fs_version == 6:
            self._write_blob_meta()
        return self._bootstrap_table()

    def _write_blob_meta(self) -> None:
        opts = self.options
        ci = bytes(self._ci)
        stored, compressed = compress(ci, opts.ci_compressor)
        ci_comp = opts.ci_compressor if compressed else "none"
        ci_off = self._pos
        hdr = BlobMetaHeader(self._features, ci_comp, self._chunk_count, ci_off, len(stored), len(ci))
        self._meta_header = hdr
        raw_hdr = hdr.encode()
        self._write(stored)
        self._write(raw_hdr)
        if opts.tar_headers:
            self._write_header(C.ENTRY_BLOB_META, len(stored) + len(raw_hdr))
        if opts.blob_toc:
            self._toc_entry(C.ENTRY_BLOB_META, ci_comp, sha256(ci), ci_off, len(stored), len(ci))
            self._toc_entry(
                C.ENTRY_BLOB_META_HEADER, "none", sha256(raw_hdr), ci_off + len(stored), len(raw_hdr), len(raw_hdr)
            )
            array = b"".join(self._digests)
            off = self._pos
            self._file_hash = self._hash.copy()
            self._write(array, hashed=False)
            self._write_header(C.ENTRY_BLOB_DIGEST, len(array))
            self._toc_entry(C.ENTRY_BLOB_DIGEST, "none", sha256(array), off, len(array), len(array))

    def _own_info(self, blob_id: str) -> BlobInfo:
        opts = self.options
        info = BlobInfo(
            blob_id, chunk_size=opts.chunk_size, chunk_count=self._chunk_count, compressor=opts.compressor,
            digester=opts.digester, features=self._features, compressed_size=self._pos, uncompressed_size=self._uoff,
        )
        if self._meta_header is not None:
            h = self._meta_header
            info.ci_compressor, info.ci_offset = h.ci_compressor, h.ci_offset
            info.ci_compressed_size, info.ci_uncompressed_size = h.ci_compressed_size, h.ci_uncompressed_size
        return info

    def _bootstrap_table(self) -> list[BlobInfo]:
        table = [replace(b) for b in self._table]
        if self._own_index is not None:
            blob_id = C.INLINE_BLOB_ID_PLACEHOLDER if self.options.inline_meta else ""
            table[self._own_index] = self._own_info(self.options.blob_id or blob_id)
        return table

    def finish(self, bootstrap: bytes | None = None) -> BlobResult:
        """Append the inline bootstrap (if configured) and the TOC; compute the blob id.

        Without inline meta `bootstrap` must be None; the returned `blob_table` then has
        the real id, the whole-file size and the TOC fields for a separate bootstrap.
        """
        if self._finished:
            raise FormatError("blob writer already finished")
        opts = self.options
        embedded = self.seal()
        self._finished = True
        if opts.inline_meta != (bootstrap is not None):
            raise FormatError("pass the bootstrap to finish() exactly when inline meta is enabled")
        has_blob = bool(self._chunk_count) or opts.inline_meta
        if bootstrap is not None:
            off = self._pos
            if opts.blob_toc:
                stored, compressed = compress(bootstrap, "zstd")
                comp = "zstd" if compressed else "none"
            else:
                stored, comp = bootstrap, "none"
            self._write(stored)
            self._write_header(C.ENTRY_BOOTSTRAP, len(stored))
            if opts.blob_toc:
                self._toc_entry(C.ENTRY_BOOTSTRAP, comp, sha256(bootstrap), off, len(stored), len(bootstrap))
        toc_size, toc_digest = 0, bytes(32)
        if has_blob and opts.blob_toc:
            data = encode_toc_entries(self._toc)
            hdr = tar_header(C.ENTRY_TOC, len(data))
            self._write(data)
            self._write(hdr)
            toc_size, toc_digest = len(data) + len(hdr), sha256(data + hdr)
        self.close()
        file_hash = self._file_hash if self._file_hash is not None else self._hash
        blob_id = opts.blob_id or self._hash.hexdigest()
        info: BlobInfo | None = None
        if has_blob:
            info = self._own_info(blob_id)
            info.toc_size, info.toc_digest = toc_size, toc_digest
        table = [replace(b) for b in self._table]
        if self._own_index is not None:
            assert info is not None
            table[self._own_index] = replace(info)
        return BlobResult(info, table, self._pos, file_hash.hexdigest(), embedded if opts.inline_meta else table)


def _fill(dst: ChunkInfo, src: ChunkInfo) -> None:
    """Make `dst` a copy of `src` keeping its own file offset (a deduplicated chunk)."""
    dst.digest, dst.blob_index, dst.flags = src.digest, src.blob_index, src.flags
    dst.compressed_offset, dst.compressed_size = src.compressed_offset, src.compressed_size
    dst.uncompressed_offset, dst.uncompressed_size, dst.index = src.uncompressed_offset, src.uncompressed_size, src.index


# ======================================================================================
# Reader
# ======================================================================================


@dataclass
class BlobSection:
    name: str
    offset: int
    size: int


class BlobReader:
    """Random access to one blob file; every offset is checked against the file size.

    `blob` (from a bootstrap's blob table) supplies the compressor, digester and CI
    location; without it they are discovered from the blob (TOC, trailing tar headers,
    inline bootstrap) and, as a last resort, the compressor is recognised by the zstd
    magic and the digester by matching `blob.digest`.
    """

    def __init__(self, f: BinaryIO, blob: BlobInfo | None = None, *, size: int | None = None) -> None:
        self._f = f
        if size is None:
            size = f.seek(0, os.SEEK_END)
        self.size = size
        self.blob = blob
        self._toc: list[TocEntry] | None | bool = False  # False: not looked up yet
        self._sections: list[BlobSection] | None = None
        self._meta: tuple[BlobMetaHeader, list[CiEntry]] | None = None
        self._inline_bs: Bootstrap | None | bool = False
        self._digester: str | None = blob.digester if blob else None

    # -- raw access --------------------------------------------------------------------------
    def read_at(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset`; FormatError if the range leaves the file."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(f"range {offset}+{size} is outside the {self.size}-byte blob")
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise IntegrityError(f"short read at {offset}: {len(data)} of {size} bytes (blob truncated?)")
        return data

    # -- trailing tar headers and TOC ----------------------------------------------------------
    def sections(self) -> list[BlobSection]:
        """Walk the trailing tar headers from the end (§6.5); [] for blobs without them."""
        if self._sections is not None:
            return self._sections
        out: list[BlobSection] = []
        end = self.size
        while end >= _HDR:
            try:
                name, size = parse_tar_header(self.read_at(end - _HDR, _HDR))
            except FormatError:
                break
            start = end - _HDR - size
            if start < 0:
                raise FormatError(f"tar entry {name!r} of {size} bytes extends before the blob start")
            out.append(BlobSection(name, start, size))
            end = start
            if len(out) > C.TOC_MAX_ENTRIES:
                raise FormatError("too many tar sections in the blob")
        out.reverse()
        self._sections = out
        return out

    def toc(self) -> list[TocEntry] | None:
        """TOC entries, verified against `blob.toc_digest` when the blob table has one."""
        if self._toc is not False:
            return self._toc  # type: ignore[return-value]
        toc: list[TocEntry] | None = None
        b = self.blob
        if b is not None and b.toc_size:
            if b.toc_size < _HDR + C.TOC_ENTRY_SIZE or b.toc_size > self.size:
                raise FormatError(f"blob TOC size {b.toc_size} is impossible for a {self.size}-byte blob")
            raw = self.read_at(self.size - b.toc_size, b.toc_size)
            if b.toc_digest != bytes(32) and sha256(raw) != b.toc_digest:
                raise IntegrityError("blob TOC digest mismatch", expected=b.toc_digest.hex(), got=sha256(raw).hex())
            name, size = parse_tar_header(raw[-_HDR:])
            if name != C.ENTRY_TOC or size != b.toc_size - _HDR:
                raise FormatError("the blob does not end with the TOC the blob table describes")
            toc = decode_toc(raw[:-_HDR])
        elif self.size >= _HDR:
            try:
                name, size = parse_tar_header(self.read_at(self.size - _HDR, _HDR))
            except FormatError:
                name, size = "", 0
            if name == C.ENTRY_TOC:
                if size > C.TOC_MAX_ENTRIES * C.TOC_ENTRY_SIZE or size + _HDR > self.size:
                    raise FormatError(f"TOC of {size} bytes is impossible")
                toc = decode_toc(self.read_at(self.size - _HDR - size, size))
        self._toc = toc  # entry ranges are checked when read (image.blob of pre-2.2.0 builds is off)
        return toc

    def toc_entry(self, name: str) -> TocEntry | None:
        for e in self.toc() or ():
            if e.name == name:
                return e
        return None

    def extract(self, name: str, *, max_size: int = 1 << 31) -> bytes | None:
        """Content of a TOC entry, decompressed and sha256-verified; None if absent."""
        e = self.toc_entry(name)
        if e is None:
            return None
        if e.uncompressed_size > max_size:
            raise FormatError(f"TOC entry {name!r} claims {e.uncompressed_size} bytes")
        raw = self.read_at(e.compressed_offset, e.compressed_size)
        data = decompress(raw, e.compressor, e.uncompressed_size)
        if sha256(data) != e.digest:
            raise IntegrityError(f"TOC entry {name!r} digest mismatch", expected=e.digest.hex(), got=sha256(data).hex())
        return data

    # -- inline bootstrap ------------------------------------------------------------------------
    def bootstrap_bytes(self) -> bytes | None:
        """The inline bootstrap (`image.boot`) from the TOC or the trailing tar header."""
        if self.toc() is not None:
            return self.extract(C.ENTRY_BOOTSTRAP)
        for s in reversed(self.sections()):
            if s.name == C.ENTRY_BOOTSTRAP:
                return self.read_at(s.offset, s.size)
        return None

    def inline_bootstrap(self) -> Bootstrap | None:
        if self._inline_bs is False:
            raw = self.bootstrap_bytes()
            if raw is None:
                self._inline_bs = None
            else:
                from nydusify_core.rafs.bootstrap import read_bootstrap

                self._inline_bs = read_bootstrap(raw)
        return self._inline_bs  # type: ignore[return-value]

    def _inline_blob_info(self) -> BlobInfo | None:
        bs = self.inline_bootstrap()
        if bs is None or not bs.blobs:
            return None
        own = [b for b in bs.blobs if b.blob_id == C.INLINE_BLOB_ID_PLACEHOLDER]
        return own[0] if own else bs.blobs[-1]

    # -- chunk info table ------------------------------------------------------------------------
    def blob_meta(self) -> tuple[BlobMetaHeader, list[CiEntry]] | None:
        """CI header and entries (v6 blobs), located via the blob table, TOC or tar headers."""
        if self._meta is not None:
            return self._meta
        b = self.blob
        hdr_off: int | None = None
        if b is not None and b.ci_uncompressed_size:
            hdr_off = b.ci_offset + b.ci_compressed_size
        elif b is not None and not b.features & C.BLOB_HAS_TAR_HEADER:
            return None  # v5, or a v6 entry without CI data: chunk records come from the bootstrap
        elif self.toc_entry(C.ENTRY_BLOB_META_HEADER) is not None:
            hdr_off = self.toc_entry(C.ENTRY_BLOB_META_HEADER).compressed_offset  # type: ignore[union-attr]
        else:
            meta = [s for s in self.sections() if s.name == C.ENTRY_BLOB_META]
            if meta:
                hdr_off = meta[-1].offset + meta[-1].size - C.BLOB_META_HEADER_SIZE
            elif self.size >= C.BLOB_META_HEADER_SIZE and not self.sections():
                tail = self.size - C.BLOB_META_HEADER_SIZE  # plain v6: the header is the tail
                magic = C.BLOB_META_MAGIC.to_bytes(4, "little")
                if self.read_at(tail, 4) == magic and self.read_at(self.size - 4, 4) == magic:
                    hdr_off = tail
        if hdr_off is None:
            return None
        hdr = BlobMetaHeader.decode(self.read_at(hdr_off, C.BLOB_META_HEADER_SIZE))
        if hdr.ci_offset + hdr.ci_compressed_size != hdr_off:
            raise FormatError("CI table does not end where its header starts")
        if b is not None and b.ci_uncompressed_size and (
            hdr.ci_offset != b.ci_offset or hdr.ci_uncompressed_size != b.ci_uncompressed_size or hdr.ci_entries != b.chunk_count
        ):
            raise FormatError("CI header disagrees with the blob table")
        raw = self.read_at(hdr.ci_offset, hdr.ci_compressed_size)
        data = decompress(raw, hdr.ci_compressor, hdr.ci_uncompressed_size)
        entries = decode_ci(data, hdr.ci_entries, v2=bool(hdr.features & C.BLOB_CHUNK_INFO_V2))
        if not hdr.features & C.BLOB_SEPARATE:
            limit = hdr.ci_offset - (_HDR if hdr.features & C.BLOB_HAS_TAR_HEADER else 0)
            for i, e in enumerate(entries):
                if e.compressed_offset + e.compressed_size > limit:
                    raise FormatError(f"CI entry {i} points beyond the chunk data ({limit} bytes)")
        self._meta = (hdr, entries)
        return self._meta

    def chunk_digests(self) -> list[bytes] | None:
        """The `blob.digest` array (one 32-byte digest per CI entry), verified via the TOC."""
        data = self.extract(C.ENTRY_BLOB_DIGEST, max_size=C.DIGEST_SIZE * C.MAX_CHUNKS_PER_BLOB)
        if data is None:
            return None
        if len(data) % C.DIGEST_SIZE:
            raise FormatError("blob.digest size is not a multiple of 32")
        return [data[i : i + C.DIGEST_SIZE] for i in range(0, len(data), C.DIGEST_SIZE)]

    # -- chunks ----------------------------------------------------------------------------------
    @property
    def compressor(self) -> str | None:
        if self.blob is not None:
            return self.blob.compressor
        inline = self._inline_blob_info()
        return inline.compressor if inline is not None else None

    @property
    def digester(self) -> str | None:
        if self._digester is None:
            inline = self._inline_blob_info()
            if inline is not None:
                self._digester = inline.digester
        return self._digester

    def read_chunk(
        self,
        chunk: ChunkInfo | CiEntry,
        *,
        expected_digest: bytes | None = None,
        compressor: str | None = None,
        digester: str | None = None,
        verify: bool = True,
    ) -> bytes:
        """Uncompressed bytes of one chunk, digest-verified when a digest is known."""
        is_compressed = chunk.compressed
        if isinstance(chunk, ChunkInfo) and expected_digest is None:
            expected_digest = chunk.digest
        if not verify:
            expected_digest = None
        if not 0 < chunk.uncompressed_size <= C.MAX_CHUNK_SIZE or chunk.compressed_size <= 0:
            raise FormatError(f"chunk sizes {chunk.compressed_size}/{chunk.uncompressed_size} out of range")
        raw = self.read_at(chunk.compressed_offset, chunk.compressed_size)
        if is_compressed:
            algo = compressor or self.compressor
            if algo is None or algo == "none":
                algo = "zstd" if raw[:4] == _ZSTD_MAGIC else "lz4_block"
            data = decompress(raw, algo, chunk.uncompressed_size)
        else:
            if chunk.compressed_size != chunk.uncompressed_size:
                raise FormatError("uncompressed chunk with differing stored size")
            data = raw
        if expected_digest is not None:
            algo = digester or self.digester
            if algo is None:
                algo = next((a for a in ("blake3", "sha256") if digest(a, data) == expected_digest), "blake3")
                self._digester = algo
            got = digest(algo, data)
            if got != expected_digest:
                raise IntegrityError(
                    f"chunk at {chunk.compressed_offset} fails its {algo} digest", expected=expected_digest.hex(), got=got.hex()
                )
        return data

    def iter_chunks(self) -> Iterator[tuple[int, CiEntry, bytes]]:
        """(CI index, entry, data) for every chunk of a v6 blob, verified against blob.digest."""
        meta = self.blob_meta()
        if meta is None:
            raise FormatError("blob has no chunk info table; chunk records must come from its bootstrap")
        _, entries = meta
        digests = self.chunk_digests()
        if digests is not None and len(digests) != len(entries):
            raise FormatError(f"blob.digest holds {len(digests)} digests for {len(entries)} chunks")
        for i, e in enumerate(entries):
            yield i, e, self.read_chunk(e, expected_digest=digests[i] if digests else None)

    def verify(self, chunks: Sequence[ChunkInfo] = ()) -> int:
        """Read and verify every chunk (given records, else the CI table); returns the count."""
        n = 0
        if chunks:
            for ch in chunks:
                self.read_chunk(ch)
                n += 1
            return n
        for _ in self.iter_chunks():
            n += 1
        return n
