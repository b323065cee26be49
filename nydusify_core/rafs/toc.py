"""Blob packaging records: the trailing GNU tar headers and the TOC (rafs-format.md §6.2-§6.3).

nydus puts a 512-byte tar header *after* each section it describes, so a blob can be
streamed; the TOC ("rafs.blob.toc") is the last section and indexes all the others.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C

__all__ = ["TocEntry", "decode_toc", "encode_toc", "encode_toc_entries", "parse_tar_header", "tar_header"]

_ENTRY = struct.Struct("<II16s32sQQQ48s")
_FLAG_NAMES = {v: k for k, v in C.TOC_FLAGS.items()}
_CHKSUM_SPACES = b" " * C.TAR_CHKSUM_FIELD


def _encode_size(size: int) -> bytes:
    if size < 0:
        raise FormatError(f"negative tar entry size {size}")
    if size < C.TAR_OCTAL_SIZE_LIMIT:
        return b"%011o\x00" % size
    raw = size.to_bytes(C.TAR_SIZE_FIELD, "big")  # GNU base-256 for sizes >= 8 GiB
    if raw[0]:
        raise FormatError(f"tar entry size {size} too large")
    return bytes([C.TAR_BASE256_FLAG]) + raw[1:]


def _decode_size(field: bytes) -> int:
    if field[0] & C.TAR_BASE256_FLAG:
        return int.from_bytes(bytes([field[0] & ~C.TAR_BASE256_FLAG & 0xFF]) + field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise FormatError(f"bad tar size field {field!r}") from None


def tar_header(name: str, size: int) -> bytes:
    """The 512-byte GNU header nydus writes after a section (§6.2), byte-exact."""
    raw = name.encode()
    if not raw or len(raw) >= C.TAR_NAME_SIZE:
        raise FormatError(f"tar entry name {name!r} is empty or too long")
    buf = bytearray(C.TAR_BLOCK)
    buf[: len(raw)] = raw
    buf[C.TAR_SIZE_OFFSET : C.TAR_SIZE_OFFSET + C.TAR_SIZE_FIELD] = _encode_size(size)
    buf[C.TAR_MTIME_OFFSET : C.TAR_MTIME_OFFSET + C.TAR_SIZE_FIELD] = b"%011o\x00" % 0
    buf[C.TAR_TYPEFLAG_OFFSET] = C.TAR_TYPE_REGULAR[0]
    buf[C.TAR_MAGIC_OFFSET : C.TAR_MAGIC_OFFSET + len(C.TAR_GNU_MAGIC)] = C.TAR_GNU_MAGIC
    buf[C.TAR_CHKSUM_OFFSET : C.TAR_CHKSUM_OFFSET + C.TAR_CHKSUM_FIELD] = _CHKSUM_SPACES
    buf[C.TAR_CHKSUM_OFFSET : C.TAR_CHKSUM_OFFSET + C.TAR_CHKSUM_FIELD] = b"%07o\x00" % sum(buf)
    return bytes(buf)


def parse_tar_header(block: bytes | bytearray | memoryview) -> tuple[str, int]:
    """(name, size) of a trailing header; FormatError unless it is a valid regular-file header."""
    b = bytes(block)
    if len(b) != C.TAR_BLOCK:
        raise FormatError(f"tar header is {len(b)} bytes, expected {C.TAR_BLOCK}")
    stored = b[C.TAR_CHKSUM_OFFSET : C.TAR_CHKSUM_OFFSET + C.TAR_CHKSUM_FIELD]
    try:
        expected = int(stored.split(b"\x00", 1)[0].strip(b" ") or b"x", 8)
    except ValueError:
        raise FormatError("tar header has no valid checksum") from None
    total = sum(b[: C.TAR_CHKSUM_OFFSET]) + sum(_CHKSUM_SPACES) + sum(b[C.TAR_CHKSUM_OFFSET + C.TAR_CHKSUM_FIELD :])
    if total != expected:
        raise FormatError("tar header checksum mismatch")
    if b[C.TAR_TYPEFLAG_OFFSET] not in (C.TAR_TYPE_REGULAR[0], 0):
        raise FormatError("tar header is not a regular file entry")
    name_raw = b[: C.TAR_NAME_SIZE].split(b"\x00", 1)[0]
    try:
        name = name_raw.decode()
    except UnicodeDecodeError:
        raise FormatError(f"tar entry name {name_raw!r} is not UTF-8") from None
    return name, _decode_size(b[C.TAR_SIZE_OFFSET : C.TAR_SIZE_OFFSET + C.TAR_SIZE_FIELD])


@dataclass
class TocEntry:
    """One 128-byte TOC entry; `digest` is sha256 of the uncompressed content."""

    name: str
    compressor: str
    digest: bytes
    compressed_offset: int
    compressed_size: int
    uncompressed_size: int
    reserved: bytes = field(default=bytes(48), repr=False)  # pre-2.2.0 builds left garbage here

    def encode(self) -> bytes:
        raw = self.name.encode()
        if len(raw) > C.TOC_NAME_SIZE or len(self.digest) != C.DIGEST_SIZE or len(self.reserved) != 48:
            raise FormatError(f"TOC entry {self.name!r}: name, digest or reserved field has a bad length")
        try:
            return _ENTRY.pack(
                C.TOC_FLAGS[self.compressor], 0, raw, self.digest, self.compressed_offset, self.compressed_size,
                self.uncompressed_size, self.reserved,
            )
        except (KeyError, struct.error) as exc:
            raise FormatError(f"TOC entry {self.name!r}: field out of range ({exc})") from None

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "TocEntry":
        flags, _, name, dig, coff, csize, usize, reserved = _ENTRY.unpack(bytes(data))
        comp = [n for bit, n in _FLAG_NAMES.items() if flags & bit]
        if len(comp) != 1:
            raise FormatError(f"TOC entry flags {flags:#x} do not name exactly one compressor")
        try:
            text = name.split(b"\x00", 1)[0].decode()
        except UnicodeDecodeError:
            raise FormatError(f"TOC entry name {name!r} is not UTF-8") from None
        return cls(text, comp[0], dig, coff, csize, usize, reserved)


def encode_toc_entries(entries: list[TocEntry]) -> bytes:
    return b"".join(e.encode() for e in entries)


def encode_toc(entries: list[TocEntry]) -> bytes:
    """TOC entries followed by their `rafs.blob.toc` header: the blob's last bytes."""
    data = encode_toc_entries(entries)
    return data + tar_header(C.ENTRY_TOC, len(data))


def decode_toc(data: bytes | bytearray | memoryview) -> list[TocEntry]:
    """Entries of a TOC payload (without its tar header)."""
    if len(data) % C.TOC_ENTRY_SIZE or len(data) // C.TOC_ENTRY_SIZE > C.TOC_MAX_ENTRIES:
        raise FormatError(f"TOC of {len(data)} bytes is not a sane multiple of {C.TOC_ENTRY_SIZE}")
    mv = memoryview(data)
    return [TocEntry.decode(mv[i : i + C.TOC_ENTRY_SIZE]) for i in range(0, len(data), C.TOC_ENTRY_SIZE)]
