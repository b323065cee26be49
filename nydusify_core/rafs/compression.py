"""Per-chunk compression exactly as nydus-image frames it (rafs-format.md §2.1, §5.3).

Every unit is compressed alone: zstd = one level-3 frame with the content size and no
checksum, lz4_block = one raw LZ4 block. A unit whose compressed form is not strictly
smaller is stored raw and flagged uncompressed. Decompression always knows the exact
expected size and never allocates more than that, whatever a (hostile) header claims.
"""

from __future__ import annotations

import threading
import zlib

import lz4.block
import zstandard

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C

__all__ = ["ALGORITHMS", "check_algorithm", "compress", "decompress", "zstd_frame_length"]

ALGORITHMS = C.BUILD_COMPRESSORS  # what the writers can produce
_READABLE = ("none", "lz4_block", "zstd", "gzip")

_tls = threading.local()  # zstd contexts are not thread safe; one per thread is cheap

# zstd frame format constants (RFC 8878 §3.1.1)
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_BLOCK_HEADER = 3
_ZSTD_BLOCK_RLE = 1
_ZSTD_BLOCK_RESERVED = 3
_ZSTD_CHECKSUM_SIZE = 4
_ZSTD_CHECKSUM_FLAG = 0x04
_ZSTD_FHD_OFFSET = 4


def check_algorithm(name: str, *, for_writing: bool = True) -> str:
    """Return `name` if it is a supported algorithm, else raise FormatError."""
    allowed = ALGORITHMS if for_writing else _READABLE
    if name not in allowed:
        raise FormatError(f"unsupported compressor {name!r} (expected one of {', '.join(allowed)})")
    return name


def _zstd_compressor() -> zstandard.ZstdCompressor:
    zc = getattr(_tls, "zc", None)
    if zc is None:
        zc = _tls.zc = zstandard.ZstdCompressor(level=C.ZSTD_LEVEL, write_checksum=False, write_content_size=True)
    return zc


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    zd = getattr(_tls, "zd", None)
    if zd is None:
        zd = _tls.zd = zstandard.ZstdDecompressor()
    return zd


def compress(data: bytes | bytearray | memoryview, algorithm: str) -> tuple[bytes, bool]:
    """(stored bytes, compressed?) — the raw input when compressing does not shrink it."""
    raw = bytes(data)
    if algorithm == "none" or not raw:
        check_algorithm(algorithm)
        return raw, False
    if algorithm == "zstd":
        out = _zstd_compressor().compress(raw)
    elif algorithm == "lz4_block":
        out = lz4.block.compress(raw, mode="default", store_size=False)
    else:
        check_algorithm(algorithm)
        raise AssertionError("unreachable")
    if len(out) >= len(raw):
        return raw, False
    return out, True


def zstd_frame_length(data: bytes | bytearray | memoryview) -> int:
    """Length of the single zstd frame at the start of `data`, from its block headers.

    python-zstandard silently ignores bytes after a frame; walking the (at most a few
    dozen) block headers lets us refuse trailing garbage without decoding anything.
    """
    mv = memoryview(data)
    n = len(mv)
    try:
        header = zstandard.frame_header_size(mv)
    except zstandard.ZstdError as exc:
        raise FormatError(f"not a zstd frame: {exc}") from None
    if n < header or int.from_bytes(mv[:4], "little") != _ZSTD_MAGIC:
        raise FormatError("not a zstd frame: bad magic or truncated header")
    has_checksum = bool(mv[_ZSTD_FHD_OFFSET] & _ZSTD_CHECKSUM_FLAG)
    pos = header
    while True:
        if pos + _ZSTD_BLOCK_HEADER > n:
            raise FormatError("truncated zstd frame (block header beyond the data)")
        word = int.from_bytes(mv[pos : pos + _ZSTD_BLOCK_HEADER], "little")
        last, btype, bsize = word & 1, (word >> 1) & 3, word >> 3
        if btype == _ZSTD_BLOCK_RESERVED:
            raise FormatError("corrupt zstd frame (reserved block type)")
        pos += _ZSTD_BLOCK_HEADER + (1 if btype == _ZSTD_BLOCK_RLE else bsize)
        if pos > n:
            raise FormatError("truncated zstd frame (block beyond the data)")
        if last:
            break
    if has_checksum:
        pos += _ZSTD_CHECKSUM_SIZE
    if pos > n:
        raise FormatError("truncated zstd frame (checksum missing)")
    return pos


def _zstd_decompress(data: bytes, size: int) -> bytes:
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise FormatError(f"corrupt zstd frame header: {exc}") from None
    if params.content_size != zstandard.CONTENTSIZE_UNKNOWN and params.content_size != size:
        # refuse before decoding: the library would allocate the claimed size
        raise FormatError(f"zstd frame declares {params.content_size} bytes, expected {size}")
    end = zstd_frame_length(data)
    if end != len(data):
        raise FormatError(f"{len(data) - end} bytes of garbage after the zstd frame")
    try:
        out = _zstd_decompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise FormatError(f"corrupt zstd data: {exc}") from None
    return out


def _gzip_decompress(data: bytes, size: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, size)
        if d.unconsumed_tail or not d.eof:
            raise FormatError("gzip member longer than expected or truncated")
    except zlib.error as exc:
        raise FormatError(f"corrupt gzip data: {exc}") from None
    if d.unused_data:
        raise FormatError(f"{len(d.unused_data)} bytes of garbage after the gzip member")
    return out


def decompress(data: bytes | bytearray | memoryview, algorithm: str, size: int) -> bytes:
    """Decode one unit to exactly `size` bytes; FormatError on any mismatch or corruption."""
    raw = bytes(data)
    if size < 0:
        raise FormatError(f"negative expected size {size}")
    if algorithm == "none":
        out = raw
    elif algorithm == "zstd":
        out = _zstd_decompress(raw, size)
    elif algorithm == "lz4_block":
        if size == 0 or size > 0x7E000000:  # liblz4's LZ4_MAX_INPUT_SIZE
            raise FormatError(f"lz4 block of {size} bytes is not decodable")
        try:
            out = lz4.block.decompress(raw, uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise FormatError(f"corrupt lz4 block: {exc}") from None
    elif algorithm == "gzip":
        out = _gzip_decompress(raw, size)
    else:
        check_algorithm(algorithm, for_writing=False)
        raise AssertionError("unreachable")
    if len(out) != size:
        raise FormatError(f"{algorithm} data decodes to {len(out)} bytes, expected {size}")
    return out
