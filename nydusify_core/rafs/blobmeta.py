"""Blob meta ("compression information", CI) records: rafs-format.md §5.6-§5.9.

The CI table lets nydusd locate every chunk of a v6 blob without the bootstrap; it is
an array of 16-byte (v1) or 24-byte (v2) entries, optionally followed by ZRan contexts
and dictionaries, and is described by a 4096-byte header with a magic at both ends.
Decoders check every field against the data they are given.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C

__all__ = [
    "BlobMetaHeader",
    "CiEntry",
    "ZranContext",
    "decode_ci",
    "decode_zran_contexts",
    "encode_ci_v1",
    "encode_ci_v2",
    "parse_blob_meta_cache",
]

_HEADER = struct.Struct("<IIIIQQQQQI")  # magic .. zran_count (60 bytes)
_MAGIC2 = struct.Struct("<I")
_ZRAN = struct.Struct("<QQQIIIBB2x")
_SIZE_LOW_MASK = (1 << C.CI_V1_SIZE_LOW_BITS) - 1
_NIBBLE = 0xF
_U24 = (1 << 24) - 1
_U32 = 0xFFFFFFFF
_U8 = 0xFF


@dataclass
class BlobMetaHeader:
    """The 4096-byte CI header (§5.6); `ci_compressor` is an algorithm name."""

    features: int
    ci_compressor: str
    ci_entries: int
    ci_offset: int
    ci_compressed_size: int
    ci_uncompressed_size: int
    zran_offset: int = 0
    zran_size: int = 0
    zran_count: int = 0

    @property
    def entry_size(self) -> int:
        return C.CI_ENTRY_V2_SIZE if self.features & C.BLOB_CHUNK_INFO_V2 else C.CI_ENTRY_V1_SIZE

    def encode(self) -> bytes:
        buf = bytearray(C.BLOB_META_HEADER_SIZE)
        try:
            _HEADER.pack_into(
                buf, 0, C.BLOB_META_MAGIC, self.features, C.COMPRESSOR_IDS[self.ci_compressor], self.ci_entries,
                self.ci_offset, self.ci_compressed_size, self.ci_uncompressed_size, self.zran_offset,
                self.zran_size, self.zran_count,
            )
        except (KeyError, struct.error) as exc:
            raise FormatError(f"blob meta header field out of range ({exc})") from None
        _MAGIC2.pack_into(buf, C.BLOB_META_HEADER_SIZE - _MAGIC2.size, C.BLOB_META_MAGIC)
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "BlobMetaHeader":
        """Parse and sanity-check a header on its own (BlobReader checks it against the blob)."""
        if len(data) != C.BLOB_META_HEADER_SIZE:
            raise FormatError(f"blob meta header is {len(data)} bytes, expected {C.BLOB_META_HEADER_SIZE}")
        (magic, features, comp, entries, ci_off, ci_csize, ci_usize, zoff, zsize, zcount) = _HEADER.unpack_from(data, 0)
        (magic2,) = _MAGIC2.unpack_from(data, C.BLOB_META_HEADER_SIZE - _MAGIC2.size)
        if magic != C.BLOB_META_MAGIC or magic2 != C.BLOB_META_MAGIC:
            raise FormatError(f"bad blob meta magic {magic:#x}/{magic2:#x}")
        if comp not in C.COMPRESSOR_NAMES:
            raise FormatError(f"unknown CI compressor id {comp}")
        hdr = cls(features, C.COMPRESSOR_NAMES[comp], entries, ci_off, ci_csize, ci_usize, zoff, zsize, zcount)
        if entries > C.MAX_CHUNKS_PER_BLOB:
            raise FormatError(f"CI table claims {entries} entries (max {C.MAX_CHUNKS_PER_BLOB})")
        table = entries * hdr.entry_size
        if features & C.BLOB_ZRAN:
            if not features & C.BLOB_CHUNK_INFO_V2:
                raise FormatError("ZRan CI data requires CHUNK_INFO_V2")
            if ci_usize < table or zoff != table or zoff + zsize > ci_usize or zcount * C.ZRAN_CONTEXT_SIZE > zsize:
                raise FormatError("inconsistent ZRan sizes in the blob meta header")
        elif ci_usize != table:
            raise FormatError(f"CI data is {ci_usize} bytes, {entries} entries need {table}")
        if ci_csize > ci_usize and comp != C.COMPRESSOR_NONE or comp == C.COMPRESSOR_NONE and ci_csize != ci_usize:
            raise FormatError("CI stored size inconsistent with its compressor")
        return hdr


@dataclass
class CiEntry:
    """One chunk's location in the blob (both entry versions decode to this)."""

    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    zran: bool = False
    data: int = 0  # v2 only: (zran index << 32) | offset in the context's window

    @property
    def zran_index(self) -> int:
        return self.data >> 32

    @property
    def zran_offset(self) -> int:
        return self.data & _U32


def _check_entry(i: int, coff: int, csize: int, uoff: int, usize: int) -> None:
    if not 0 < usize <= C.CI_MAX_CHUNK_SIZE or not 0 < csize <= C.CI_MAX_CHUNK_SIZE:
        raise FormatError(f"chunk {i}: sizes {csize}/{usize} not storable in a CI entry")
    if coff < 0 or coff > C.CI_COMP_OFFSET_MASK:
        raise FormatError(f"chunk {i}: compressed offset {coff} beyond 2^40")
    if uoff < 0 or uoff % C.BLOCK_SIZE or uoff >= C.CI_MAX_UNCOMP_OFFSET:
        raise FormatError(f"chunk {i}: uncompressed offset {uoff} not 4 KiB aligned or beyond 2^44")


def encode_ci_v1_entry(coff: int, csize: int, uoff: int, usize: int) -> bytes:
    """16-byte v1 entry (§5.7); compression is implied by csize != usize."""
    _check_entry(0, coff, csize, uoff, usize)
    u, c = usize - 1, csize - 1
    uw = (
        ((u >> C.CI_V1_SIZE_LOW_BITS) & _NIBBLE) << C.CI_V1_UNCOMP_SIZE_HIGH_SHIFT
        | uoff
        | (u & _SIZE_LOW_MASK) << C.CI_V1_SIZE_LOW_SHIFT
    )
    cw = coff | ((c >> C.CI_V1_SIZE_LOW_BITS) & _NIBBLE) << C.CI_V1_COMP_SIZE_HIGH_SHIFT | (c & _SIZE_LOW_MASK) << C.CI_V1_SIZE_LOW_SHIFT
    return struct.pack("<QQ", uw, cw)


def encode_ci_v2_entry(e: CiEntry) -> bytes:
    """24-byte v2 entry (§5.8)."""
    _check_entry(0, e.compressed_offset, e.compressed_size, e.uncompressed_offset, e.uncompressed_size)
    flags = (C.CI_V2_FLAG_COMPRESSED if e.compressed else 0) | (C.CI_V2_FLAG_ZRAN if e.zran else 0)
    uw = e.uncompressed_offset // C.BLOCK_SIZE | (e.uncompressed_size - 1) << C.CI_V2_USIZE_SHIFT | flags << C.CI_V2_FLAGS_SHIFT
    cw = e.compressed_offset | e.compressed_size << C.CI_V2_CSIZE_SHIFT
    return struct.pack("<QQQ", uw, cw, e.data)


def encode_ci_v1(entries: Iterable[CiEntry]) -> bytes:
    return b"".join(
        encode_ci_v1_entry(e.compressed_offset, e.compressed_size, e.uncompressed_offset, e.uncompressed_size)
        for e in entries
    )


def encode_ci_v2(entries: Iterable[CiEntry]) -> bytes:
    return b"".join(encode_ci_v2_entry(e) for e in entries)


def decode_ci(data: bytes | bytearray | memoryview, count: int, *, v2: bool = False) -> list[CiEntry]:
    """Decode `count` entries from the start of the uncompressed CI data."""
    size = C.CI_ENTRY_V2_SIZE if v2 else C.CI_ENTRY_V1_SIZE
    if count < 0 or count > C.MAX_CHUNKS_PER_BLOB or count * size > len(data):
        raise FormatError(f"CI data of {len(data)} bytes cannot hold {count} entries")
    mv = memoryview(data)[: count * size]
    out: list[CiEntry] = []
    if v2:
        for i, (uw, cw, dw) in enumerate(struct.iter_unpack("<QQQ", mv)):
            flags = uw >> C.CI_V2_FLAGS_SHIFT
            e = CiEntry(
                cw & C.CI_COMP_OFFSET_MASK, cw >> C.CI_V2_CSIZE_SHIFT, (uw & _U32) * C.BLOCK_SIZE,
                ((uw >> C.CI_V2_USIZE_SHIFT) & _U24) + 1, bool(flags & C.CI_V2_FLAG_COMPRESSED),
                bool(flags & C.CI_V2_FLAG_ZRAN), dw,
            )
            if not e.zran:
                _check_entry(i, e.compressed_offset, e.compressed_size, e.uncompressed_offset, e.uncompressed_size)
            out.append(e)
        return out
    for i, (uw, cw) in enumerate(struct.iter_unpack("<QQ", mv)):
        usize = ((uw >> C.CI_V1_SIZE_LOW_SHIFT) | ((uw >> C.CI_V1_UNCOMP_SIZE_HIGH_SHIFT) & _NIBBLE) << C.CI_V1_SIZE_LOW_BITS) + 1
        csize = ((cw >> C.CI_V1_SIZE_LOW_SHIFT) | ((cw >> C.CI_V1_COMP_SIZE_HIGH_SHIFT) & _NIBBLE) << C.CI_V1_SIZE_LOW_BITS) + 1
        e = CiEntry(cw & C.CI_COMP_OFFSET_MASK, csize, uw & C.CI_V1_UNCOMP_OFFSET_MASK, usize, csize != usize)
        out.append(e)
    return out


@dataclass
class ZranContext:
    """Gzip random-access restart point (§5.9)."""

    in_offset: int
    out_offset: int
    dict_offset: int
    in_len: int
    out_len: int
    dict_size: int
    ctx_byte: int
    ctx_bits: int


def decode_zran_contexts(ci_data: bytes | bytearray | memoryview, header: BlobMetaHeader) -> list[ZranContext]:
    """The ZRan context array of uncompressed CI data, bounds-checked."""
    start, count = header.zran_offset, header.zran_count
    end = start + count * C.ZRAN_CONTEXT_SIZE
    if end > len(ci_data) or end > start + header.zran_size:
        raise FormatError("ZRan context array beyond the CI data")
    dict_area = header.zran_size - count * C.ZRAN_CONTEXT_SIZE
    out = []
    for ctx in (ZranContext(*v) for v in struct.iter_unpack(_ZRAN.format, memoryview(ci_data)[start:end])):
        if ctx.dict_offset + ctx.dict_size > dict_area:
            raise FormatError("ZRan dictionary beyond the CI data")
        out.append(ctx)
    return out


def parse_blob_meta_cache(data: bytes | bytearray | memoryview) -> tuple[BlobMetaHeader, bytes]:
    """nydusd's local `<blob>.blob.meta` cache file: CI data padded to 4 KiB, then the header."""
    if len(data) < C.BLOB_META_HEADER_SIZE or len(data) % C.BLOCK_SIZE:
        raise FormatError("blob meta cache file size is not a multiple of 4096")
    hdr = BlobMetaHeader.decode(bytes(data[-C.BLOB_META_HEADER_SIZE :]))
    if hdr.ci_uncompressed_size > len(data) - C.BLOB_META_HEADER_SIZE:
        raise FormatError("CI data larger than the cache file")
    return hdr, bytes(data[: hdr.ci_uncompressed_size])
