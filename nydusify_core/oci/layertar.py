"""Read an image layer blob as a stream of tar entries, safely.

A layer comes from an untrusted registry, so everything here is bounded and strict:
compression is auto-detected (gzip, zstd or plain tar, by magic bytes; the media type only
decides when the stream is too short to carry a magic), every tar header is checksummed,
metadata records (PAX, GNU long names) are capped at 1 MiB, and any malformed input raises
`FormatError` naming the layer. Nothing is written to disk and nothing is followed.

Decompression stays in C (zlib through `gzip`, libzstd through `zstandard`); the tar parser
works per 512-byte header, never per byte. Tar headers are parsed here rather than by
`tarfile`, because `tarfile` in stream mode silently treats a bad checksum or a truncated
header as the end of the archive, and decodes names to `str`.

Path rules (see `normalize_path`): names are bytes exactly as stored (non-UTF-8 kept); a
leading `/` or `./` is dropped; `.` components and repeated slashes collapse; any `..`
component is rejected. The root directory (`./`) is reported with the empty path `b""`.

Duplicate paths in one layer are all yielded, in stream order: consumers must let the later
entry replace the earlier one (what `tar -x`, containerd and nydus-image do).

End of archive follows Go's `archive/tar` (which containerd uses): two zero blocks, one
zero block followed by EOF, EOF exactly at a header boundary, or EOF inside the padding
after the last file's data (umoci writes such layers). Truncation anywhere else
(inside a header, inside file data, inside a gzip/zstd frame) is an error; after the end
the rest of the stream is drained so gzip/zstd trailers and the caller's digest check run.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, Mapping

import zstandard

try:  # ISA-L inflates gzip about twice as fast as zlib, with zlib's API and checks
    from isal import isal_zlib as _inflate_lib
except ImportError:  # a platform without an isal wheel: zlib does the same job, slower
    _inflate_lib = zlib  # type: ignore[assignment]

from nydusify_core.errors import FormatError
from nydusify_core.oci import mediatypes as mt

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_META_SIZE = 1 << 20  # PAX records / GNU long names; Go's archive/tar uses the same cap
MAX_ID = 0xFFFFFFFF  # uid/gid/dev numbers must fit the u32 fields of RAFS
COPY_SIZE = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_FRAME = 0xFD2FB528
_ZSTD_SKIPPABLE_MIN, _ZSTD_SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F

_OCTAL_RE = re.compile(rb"[0-7]+")
_DECIMAL_RE = re.compile(rb"[0-9]{1,20}")
_PAX_TIME_RE = re.compile(rb"(-?)([0-9]{1,20})(?:\.([0-9]*))?")
_HIGH_BYTES = bytes(range(128, 256))
# The fixed fields of a 512-byte header, in one unpack: name, mode, uid, gid, size, mtime,
# chksum, typeflag, linkname, magic+version, uname, gname, devmajor, devminor, prefix.
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
# Parsed octal fields by their raw bytes: most headers repeat the same mode, uid, gid,
# device and mtime fields, so a dict hit replaces split + strip + regex + int per field.
# Only successful octal parses are stored (they do not depend on `signed`/`what`); bounded.
_OCTAL_CACHE: dict[bytes, int] = {}
_OCTAL_CACHE_MAX = 1 << 14
_SCHILY_XATTR = b"SCHILY.xattr."


class EntryType(str, enum.Enum):
    REG = "reg"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


_TYPEFLAGS = {
    b"0": EntryType.REG, b"\0": EntryType.REG, b"7": EntryType.REG,  # '7' = contiguous file
    b"1": EntryType.HARDLINK, b"2": EntryType.SYMLINK, b"3": EntryType.CHAR,
    b"4": EntryType.BLOCK, b"5": EntryType.DIR, b"6": EntryType.FIFO,
}
_S_IFMT = {
    EntryType.REG: 0o100000, EntryType.DIR: 0o040000, EntryType.SYMLINK: 0o120000,
    EntryType.HARDLINK: 0o100000, EntryType.CHAR: 0o020000, EntryType.BLOCK: 0o060000,
    EntryType.FIFO: 0o010000,
}


@dataclass(frozen=True)
class TarEntry:
    """One member of a layer tar, with every attribute a RAFS builder needs.

    `data` is a file-like stream for regular files (None otherwise); it is only valid
    until the iterator advances. `mode` holds the permission bits including setuid, setgid
    and sticky (`st_mode` adds the file-type bits). `link_target` is the verbatim symlink
    target, or the normalised path of an earlier entry for hardlinks.
    """

    path: bytes
    type: EntryType
    mode: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int = 0
    size: int = 0
    link_target: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[bytes, bytes] = field(default_factory=dict)
    data: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.type] | self.mode

    @property
    def is_root(self) -> bool:
        return self.path == b""


# --- compression ----------------------------------------------------------------------


def sniff_compression(head: bytes, media_type: str = "") -> str:
    """`gzip`, `zstd` or `none`. Magic bytes win (registries mislabel layers and containerd
    sniffs too); the media type only decides for streams shorter than a magic."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head and len(head) < len(ZSTD_MAGIC):
        return mt.LAYER_COMPRESSION.get(media_type, "none")
    return "none"


def layer_where(label: str) -> str:
    """How errors name a layer: `label` as given when it says "layer ..." already (the
    converter passes "layer 2 (sha256:...)"), else "layer LABEL"."""
    if not label:
        return "layer"
    return label if label.startswith("layer") else f"layer {label}"


def open_layer_tar(blob: IO[bytes], *, media_type: str = "", layer: str = "") -> IO[bytes]:
    """The uncompressed tar stream of a layer blob; decoding errors become `FormatError`."""
    return io.BufferedReader(decode_layer(blob, media_type=media_type, layer=layer), buffer_size=COPY_SIZE)


def decode_layer(blob: IO[bytes], *, media_type: str = "", layer: str = "") -> "_DecodedStream":
    """`open_layer_tar` without the buffer: `read(n)` hands out the decoder's own blocks,
    for a reader that has its own (a read-ahead thread); `diff_id` once read to the end."""
    return _DecodedStream(blob, media_type, layer)


class BlockReader(io.RawIOBase):
    """A raw stream whose `read(n)` hands out its own blocks (no copy: the layer bytes pass
    several of these); `readinto`, which buffered readers call, copies them."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class _Prefixed(BlockReader):
    """Puts back the bytes read for sniffing in front of the rest of the stream."""

    def __init__(self, head: bytes, src: IO[bytes]) -> None:
        self._head = head
        self._src = src

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """The source's own bytes objects, not copies (the inflater reads through this)."""
        if self._head:
            n = len(self._head) if size is None or size < 0 else min(size, len(self._head))
            head, self._head = self._head[:n], self._head[n:]
            return head
        return self._src.read(size)


class _ZstdFrameCheck(io.RawIOBase):
    """Pass-through that walks zstd frame and block headers (a few operations per block) so
    that a stream cut between blocks is reported: libzstd's streaming reader treats EOF
    inside a frame as a normal end."""

    def __init__(self, src: IO[bytes], where: str) -> None:
        self._src = src
        self._where = where
        self._state = "magic"
        self._need = 4
        self._buf = b""
        self._skip = 0
        self._checksum = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        n = len(data)
        if not n:
            if self._state != "magic" or self._buf or self._skip:
                raise FormatError(f"{self._where}: truncated zstd stream")
            return 0
        b[:n] = data
        self._feed(data)
        return n

    def _feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), end - pos)
            self._buf += data[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_FRAME:
                self._state, self._need = "fhd", 1
            elif _ZSTD_SKIPPABLE_MIN <= magic <= _ZSTD_SKIPPABLE_MAX:
                self._state, self._need = "skippable", 4
            else:
                raise FormatError(f"{self._where}: corrupt zstd stream (bad frame magic)")
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            d = header[0]
            if d & 0x08:
                raise FormatError(f"{self._where}: corrupt zstd stream (reserved frame header bit set)")
            single = (d >> 5) & 1
            self._checksum = bool(d & 0x04)
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + ((1 if single else 0), 2, 4, 8)[d >> 6]
            self._state, self._need = ("fhrest", rest) if rest else ("block", 3)
        elif state == "fhrest":
            self._state, self._need = "block", 3
        elif state == "block":
            h = int.from_bytes(header, "little")
            btype = (h >> 1) & 3
            if btype == 3:
                raise FormatError(f"{self._where}: corrupt zstd stream (reserved block type)")
            self._skip = 1 if btype == 1 else h >> 3
            if h & 1:
                self._state, self._need = ("checksum", 4) if self._checksum else ("magic", 4)
        elif state == "checksum":
            self._state, self._need = "magic", 4


_GZIP_WBITS = 16 + zlib.MAX_WBITS  # the inflater parses the gzip header and checks CRC32 + ISIZE
INFLATE_ERRORS = (zlib.error, _inflate_lib.error)


class _Gunzip(BlockReader):
    """gzip members (RFC 1952; several may follow each other, NUL padding after a member is
    skipped, as `gzip.GzipFile` does) inflated by ISA-L (or zlib) in large blocks.

    `gzip.GzipFile` feeds zlib 8 KiB at a time through several Python calls per block,
    which makes it about twice as slow as zlib itself; here each call inflates into the
    caller's buffer size from 1 MiB input blocks, so the GIL is released for long stretches.
    Errors: `EOFError` for a stream cut inside a member, `INFLATE_ERRORS` for corrupt data.
    """

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._d: Any = None  # current member, None between members
        self._input = b""  # compressed bytes not yet given to zlib
        self._src_eof = False

    def _fill(self) -> bool:
        """More compressed input into `_input`; False at the end of the source."""
        if self._src_eof:
            return False
        data = self._src.read(COPY_SIZE)
        if not data:
            self._src_eof = True
            return False
        self._input = self._input + data if self._input else data
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to `size` bytes (no extra copy: zlib's output object is returned as is)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(COPY_SIZE), b""))
        want = size
        if not want:
            return b""
        while True:
            if self._d is None:  # between members: skip NUL padding, stop at the end
                self._input = self._input.lstrip(b"\0")
                while not self._input:
                    if not self._fill():
                        return b""
                    self._input = self._input.lstrip(b"\0")
                while len(self._input) < len(GZIP_MAGIC) and self._fill():
                    pass
                if not self._input.startswith(GZIP_MAGIC):  # ISA-L would wait for a whole header
                    raise gzip.BadGzipFile("data after a gzip member is not another member")
                self._d = _inflate_lib.decompressobj(_GZIP_WBITS)
            d = self._d
            if not self._input and not self._fill():
                out = d.flush()  # output held back by an earlier size limit, if any
                if not out:
                    raise EOFError("compressed stream ended inside a gzip member")
                if len(out) > want:  # cannot happen with zlib's small internal state; be safe
                    raise EOFError("compressed stream ended inside a gzip member")
            else:
                out = d.decompress(self._input, want)
                self._input = d.unconsumed_tail
            if d.eof:
                self._input = d.unused_data + self._input
                self._d = None
            if out:
                return out

    def close(self) -> None:
        if not self.closed:
            try:
                self._src.close()
            finally:
                super().close()


class _DecodedStream(BlockReader):
    """Decompressed bytes of a layer blob, with codec errors mapped to `FormatError` and a
    running sha256 of the output (the layer's diff_id once EOF is reached)."""

    def __init__(self, blob: IO[bytes], media_type: str, layer: str) -> None:
        self.where = layer_where(layer)
        head = b""
        while len(head) < len(ZSTD_MAGIC):
            more = blob.read(len(ZSTD_MAGIC) - len(head))
            if not more:
                break
            head += more
        self.compression = sniff_compression(head, media_type)
        raw = io.BufferedReader(_Prefixed(head, blob), buffer_size=COPY_SIZE)
        self._blob = blob
        self._decoder: IO[bytes]
        if self.compression == "gzip":
            self._decoder = _Gunzip(_Prefixed(head, blob))
        elif self.compression == "zstd":
            checked = io.BufferedReader(_ZstdFrameCheck(raw, self.where), buffer_size=COPY_SIZE)
            self._decoder = zstandard.ZstdDecompressor().stream_reader(
                checked, read_size=COPY_SIZE, read_across_frames=True, closefd=False
            )
        else:
            self._decoder = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self.eof = False

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to `size` decoded bytes, as the decoder returned them (no copy)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(COPY_SIZE), b""))
        try:
            data = self._decoder.read(size)
        except EOFError:
            raise FormatError(f"{self.where}: truncated {self.compression} stream") from None
        except (gzip.BadGzipFile, *INFLATE_ERRORS) as exc:
            raise FormatError(f"{self.where}: corrupt gzip stream ({exc})") from None
        except zstandard.ZstdError as exc:
            raise FormatError(f"{self.where}: corrupt zstd stream ({exc})") from None
        if data:
            self._hash.update(data)
            self.size += len(data)
        elif size:
            self.eof = True
        return data

    @property
    def diff_id(self) -> str | None:
        return "sha256:" + self._hash.hexdigest() if self.eof else None

    def close(self) -> None:
        if not self.closed:
            try:
                self._decoder.close()
            finally:
                self._blob.close()
                super().close()


# --- paths ----------------------------------------------------------------------------


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def normalize_path(name: bytes) -> bytes:
    """Canonical relative form of a member name; `ValueError` for `..` or NUL.

    `..` is rejected rather than clamped at the root: clamping would silently turn
    `a/../../etc/passwd` into `etc/passwd`, i.e. make the layer overwrite a different file
    than the one its author named, and no legitimate image tool writes such names (they are
    the classic tar path-traversal attack). Refusing keeps the meaning of the layer exact.
    """
    if b"\0" in name:
        raise ValueError("name contains a NUL byte")
    split = name.split(b"/")
    if b"" not in split and b"." not in split and b".." not in split:
        return name  # already canonical (the common case): joining the parts gives it back
    parts = []
    for part in split:
        if part == b"..":
            raise ValueError("name has a '..' component")
        if part and part != b".":
            parts.append(part)
    return b"/".join(parts)


# --- tar parsing ----------------------------------------------------------------------


def _num(field_: bytes, what: str, *, signed: bool = False) -> int:
    """Octal (NUL/space terminated) or GNU base-256 number field."""
    cached = _OCTAL_CACHE.get(field_)
    if cached is not None:
        return cached
    first = field_[0] if field_ else 0
    if first == 0x80:
        return int.from_bytes(field_[1:], "big")
    if first == 0xFF:
        if not signed:
            raise ValueError(f"negative {what}")
        return int.from_bytes(field_[1:], "big") - (1 << (8 * (len(field_) - 1)))
    if first & 0x80:
        raise ValueError(f"invalid base-256 {what}")
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not _OCTAL_RE.fullmatch(text):
        raise ValueError(f"invalid {what} field {text!r}")
    value = int(text, 8)
    if len(_OCTAL_CACHE) < _OCTAL_CACHE_MAX:
        _OCTAL_CACHE[field_] = value
    return value


def _nts(field_: bytes) -> bytes:
    return field_.split(b"\0", 1)[0]


def _parse_pax(data: bytes) -> list[tuple[bytes, bytes]]:
    """PAX records `"<len> <key>=<value>\\n"`; values stay raw bytes (binary xattrs)."""
    records = []
    pos, end = 0, len(data)
    while pos < end:
        if not data[pos:].strip(b"\0"):
            break  # NUL padding after the last record
        space = data.find(b" ", pos, min(end, pos + 21))
        if space < 0 or not _DECIMAL_RE.fullmatch(data[pos:space]):
            raise ValueError("malformed PAX record length")
        length = int(data[pos:space])
        if length <= space - pos + 1 or pos + length > end:
            raise ValueError("PAX record length out of range")
        record = data[space + 1:pos + length]
        if not record.endswith(b"\n"):
            raise ValueError("PAX record not terminated by a newline")
        key, eq, value = record[:-1].partition(b"=")
        if not eq or not key:
            raise ValueError("PAX record without a keyword")
        records.append((key, value))
        pos += length
    return records


def _pax_decimal(value: bytes, what: str) -> int:
    if not _DECIMAL_RE.fullmatch(value):
        raise ValueError(f"invalid PAX {what} {value!r}")
    return int(value)


def _pax_time(value: bytes) -> tuple[int, int]:
    """PAX timestamps keep nanoseconds (a float would lose them): `(sec, nsec)`, nsec ≥ 0."""
    match = _PAX_TIME_RE.fullmatch(value)
    if not match:
        raise ValueError(f"invalid PAX mtime {value!r}")
    sign, secs, frac = match.groups()
    sec = int(secs)
    nsec = int(((frac or b"") + b"000000000")[:9])
    if sign:
        sec = -sec
        if nsec:
            sec, nsec = sec - 1, 1_000_000_000 - nsec
    return sec, nsec


class _EntryData(io.RawIOBase):
    """A regular file's bytes, read straight from the tar stream."""

    def __init__(self, reader: "_TarReader", size: int, name: bytes) -> None:
        self._reader = reader
        self.size = size
        self._left = size
        self._name = name
        self._valid = True

    def readable(self) -> bool:
        return True

    def _check(self) -> None:
        if not self._valid:
            raise ValueError(f"data of tar entry {_show(self._name)!r} is only readable until the next entry")

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        self._check()
        if size is None or size < 0:
            chunks = []
            while self._left:
                chunks.append(self.read(COPY_SIZE))
            return b"".join(chunks)
        n = min(size, self._left)
        if not n:
            return b""
        data = self._reader.stream.read(n)
        if len(data) != n:
            raise FormatError(f"{self._reader.where}: truncated in the data of {_show(self._name)!r}")
        self._left -= n
        return data

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _finish(self) -> int:
        """Invalidate; return how many data bytes were never read (to be skipped)."""
        self._valid = False
        left, self._left = self._left, 0
        return left


class _TarReader:
    def __init__(self, stream: IO[bytes], where: str) -> None:
        self.stream = stream
        self.where = where

    def fail(self, message: str, name: bytes | None = None) -> FormatError:
        if name is not None:
            return FormatError(f"{self.where}: entry {_show(name)!r}: {message}")
        return FormatError(f"{self.where}: {message}")

    def block(self) -> bytes | None:
        data = self.stream.read(BLOCK)
        if not data:
            return None
        if len(data) != BLOCK:
            raise self.fail("truncated tar header")
        return data

    def skip(self, n: int) -> None:
        while n:
            got = len(self.stream.read(min(n, COPY_SIZE)))
            if not got:
                raise self.fail("truncated tar stream")
            n -= got

    def meta(self, size: int, what: str) -> bytes:
        if size > MAX_META_SIZE:
            raise self.fail(f"{what} record of {size} bytes exceeds the {MAX_META_SIZE}-byte limit")
        data = self.stream.read(size)
        if len(data) != size:
            raise self.fail(f"truncated {what} record")
        self.skip(-size % BLOCK)
        return data

    def drain(self) -> None:
        while self.stream.read(COPY_SIZE):
            pass


def _byte_sum(block: bytes) -> int:
    """`sum(block)` of a 512-byte block, in C: Adler-32's low half is 1 + the byte sum modulo
    65521, exact for 256 bytes (at most 65280), so two halves give the sum ~5x faster."""
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


def _checksum_ok(block: bytes, field_: bytes) -> bool:
    """Whether `field_` (the chksum bytes 148:156 of `block`) matches the header's sum."""
    try:
        stored = _num(field_, "checksum")
    except ValueError:
        return False
    unsigned = _byte_sum(block) - sum(field_) + 8 * 0x20  # the chksum field counts as 8 spaces
    if stored == unsigned:
        return True
    rest = block[:148] + block[156:]
    high = len(rest) - len(rest.translate(None, _HIGH_BYTES))
    return stored == unsigned - 256 * high  # old tars summed signed chars


def iter_tar_entries(stream: IO[bytes], *, layer: str = "") -> Iterator[TarEntry]:
    """Yield the entries of an uncompressed tar stream (see the module docstring)."""
    where = layer_where(layer)
    reader = _TarReader(stream, where)
    seen: dict[bytes, EntryType] = {}
    pax: dict[bytes, bytes] = {}
    xattrs: dict[bytes, bytes] = {}
    gnu_name: bytes | None = None
    gnu_link: bytes | None = None
    pending: _EntryData | None = None
    while True:
        if pending is not None:
            reader.skip(pending._finish())
            reader.stream.read(-pending.size % BLOCK)  # EOF inside the padding = end (Go, umoci layers)
            pending = None
        block = reader.block()
        if block is None:
            if pax or xattrs or gnu_name is not None or gnu_link is not None:
                raise reader.fail("tar stream ends after an extended header, before its entry")
            break
        if block == ZERO_BLOCK:
            second = reader.block()
            if second is not None and second != ZERO_BLOCK:
                raise reader.fail("data after a single end-of-archive block")
            break
        fields = _HEADER.unpack(block)
        if not _checksum_ok(block, fields[6]):
            raise reader.fail("bad tar header checksum")
        try:
            entry_or_meta = _parse_header(fields)
        except ValueError as exc:
            raise reader.fail(str(exc), _nts(block[:100])) from None
        typeflag, name, linkname, size, header = entry_or_meta
        if typeflag in (b"x", b"X"):
            try:
                records = _parse_pax(reader.meta(size, "PAX"))
            except ValueError as exc:
                raise reader.fail(str(exc), name) from None
            for key, value in records:
                if key.startswith(_SCHILY_XATTR):
                    xname = key[len(_SCHILY_XATTR):]
                    if not xname or b"\0" in xname:
                        raise reader.fail("invalid xattr name in PAX header", name)
                    xattrs[xname] = value
                elif key.startswith(b"GNU.sparse."):
                    raise reader.fail("GNU sparse files are not supported (re-create the layer without --sparse)", name)
                elif value:
                    pax[key] = value
                else:
                    pax.pop(key, None)  # an empty value unsets the keyword
            continue
        if typeflag == b"g":
            reader.meta(size, "PAX global")  # like Go/containerd: global headers are not applied
            continue
        if typeflag in (b"L", b"K"):
            data = _nts(reader.meta(size, "GNU long name"))
            if typeflag == b"L":
                gnu_name = data
            else:
                gnu_link = data
            continue
        if typeflag == b"S":
            raise reader.fail("GNU sparse files are not supported (re-create the layer without --sparse)", name)
        etype = _TYPEFLAGS.get(typeflag)
        if etype is None:
            raise reader.fail(f"unsupported tar entry type {typeflag!r}", name)

        raw_name = pax.get(b"path", gnu_name if gnu_name is not None else name)
        raw_link = pax.get(b"linkpath", gnu_link if gnu_link is not None else linkname)
        try:
            if typeflag == b"\0" and raw_name.endswith(b"/"):
                etype = EntryType.DIR
            if b"size" in pax:
                size = _pax_decimal(pax[b"size"], "size")
            uid = _pax_decimal(pax[b"uid"], "uid") if b"uid" in pax else header["uid"]
            gid = _pax_decimal(pax[b"gid"], "gid") if b"gid" in pax else header["gid"]
            if b"mtime" in pax:
                mtime, mtime_nsec = _pax_time(pax[b"mtime"])
            else:
                mtime, mtime_nsec = header["mtime"], 0
            if uid > MAX_ID or gid > MAX_ID:
                raise ValueError(f"uid/gid {uid}/{gid} does not fit 32 bits")
            path = normalize_path(raw_name)
        except ValueError as exc:
            raise reader.fail(str(exc), raw_name) from None
        if not raw_name:
            raise reader.fail("empty entry name")
        if path == b"" and etype is not EntryType.DIR:
            raise reader.fail(f"the root can only be a directory, not a {etype.value}", raw_name)
        devmajor = devminor = 0
        link_target = b""
        if etype is EntryType.SYMLINK:
            if not raw_link:
                raise reader.fail("symlink with an empty target", raw_name)
            if b"\0" in raw_link:
                raise reader.fail("symlink target contains a NUL byte", raw_name)
            link_target = raw_link
        elif etype is EntryType.HARDLINK:
            try:
                link_target = normalize_path(raw_link)
            except ValueError as exc:
                raise reader.fail(f"hardlink target {_show(raw_link)!r}: {exc}", raw_name) from None
            kind = seen.get(link_target)
            if kind is None or link_target == path:
                raise reader.fail(f"hardlink target {_show(raw_link)!r} is not an earlier entry of this layer", raw_name)
            if kind is EntryType.DIR:
                raise reader.fail(f"hardlink target {_show(raw_link)!r} is a directory", raw_name)
        elif etype in (EntryType.CHAR, EntryType.BLOCK):
            devmajor, devminor = header["devmajor"], header["devminor"]
            if devmajor > MAX_ID or devminor > MAX_ID:
                raise reader.fail("device number does not fit 32 bits", raw_name)
        if etype is not EntryType.REG:
            size = 0  # header-only types carry no data, whatever the size field says (Go, tarfile)
        data = None
        if etype is EntryType.REG:
            pending = _EntryData(reader, size, raw_name)
            data = pending
        seen[path] = etype
        # every field given: fill the frozen record's dict at once (its generated __init__
        # sets 13 fields one object.__setattr__ call at a time, 3x slower per entry)
        entry = object.__new__(TarEntry)
        entry.__dict__.update(
            path=path, type=etype, mode=header["mode"] & 0o7777, uid=uid, gid=gid,
            mtime=mtime, mtime_nsec=mtime_nsec, size=size, link_target=link_target,
            devmajor=devmajor, devminor=devminor, xattrs=xattrs, data=data,
        )
        pax, xattrs, gnu_name, gnu_link = {}, {}, None, None
        yield entry
    reader.drain()


def _parse_header(fields: tuple) -> tuple[bytes, bytes, bytes, int, dict[str, int]]:
    """(typeflag, name, linkname, size, numeric fields) of one header (`_HEADER` fields)."""
    (raw_name, mode, uid, gid, size, mtime, _, typeflag, linkname, magic, _, _,
     devmajor, devminor, prefix) = fields
    name = _nts(raw_name)
    if magic[:6] == b"ustar\0":
        prefix = _nts(prefix)
        if prefix:
            name = prefix + b"/" + name
    # cache hits first (they cannot fail), `_num` for the rest in field order, so the
    # first invalid field is still the one reported
    get = _OCTAL_CACHE.get
    n_mode, n_uid, n_gid, n_mtime = get(mode), get(uid), get(gid), get(mtime)
    numbers = {
        "mode": _num(mode, "mode") if n_mode is None else n_mode,
        "uid": _num(uid, "uid") if n_uid is None else n_uid,
        "gid": _num(gid, "gid") if n_gid is None else n_gid,
        "mtime": _num(mtime, "mtime", signed=True) if n_mtime is None else n_mtime,
        "devmajor": 0,
        "devminor": 0,
    }
    if magic[:5] == b"ustar":  # POSIX ustar or GNU: device numbers present
        n_major, n_minor = get(devmajor), get(devminor)
        numbers["devmajor"] = _num(devmajor, "devmajor") if n_major is None else n_major
        numbers["devminor"] = _num(devminor, "devminor") if n_minor is None else n_minor
    n_size = get(size)
    return typeflag, name, _nts(linkname), _num(size, "size") if n_size is None else n_size, numbers


class LayerTar:
    """A layer blob opened for reading: `for entry in layer_tar: ...`.

    Single use. After the iteration completes, `diff_id` is the sha256 of the whole
    uncompressed stream (what the image config lists) and `compression` tells what was
    detected. Closing closes the blob stream.
    """

    def __init__(self, blob: IO[bytes], *, media_type: str = "", layer: str = "") -> None:
        self.layer = layer
        self._decoded = _DecodedStream(blob, media_type, layer)
        self._stream = io.BufferedReader(self._decoded, buffer_size=COPY_SIZE)
        self._started = False

    @property
    def compression(self) -> str:
        return self._decoded.compression

    @property
    def diff_id(self) -> str | None:
        return self._decoded.diff_id

    @property
    def uncompressed_size(self) -> int:
        return self._decoded.size

    def __iter__(self) -> Iterator[TarEntry]:
        if self._started:
            raise RuntimeError("a LayerTar can only be iterated once")
        self._started = True
        return iter_tar_entries(self._stream, layer=self.layer)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "LayerTar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_layer_entries(blob: IO[bytes], *, media_type: str = "", layer: str = "") -> Iterator[TarEntry]:
    """Convenience: decompress and iterate a layer blob, closing it at the end."""
    with LayerTar(blob, media_type=media_type, layer=layer) as tar:
        yield from tar
