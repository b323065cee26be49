"""RAFS v6 bootstrap reader, safe on hostile input.

Every offset, count, name offset and nid read from the image is bounds-checked before use and
no allocation is sized by an unchecked field. The tree walk is iterative (depth capped), a
directory reached twice is a cycle, and every problem is a one-line `FormatError`.
`RafsV6Reader` reads lazily (look up a path, list one directory, walk the tree as a
generator); `read_v6` materialises the whole `Bootstrap`.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from typing import Iterator

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node, tree_building
from nydusify_core.rafs.v6_layout import (
    BLOB_ENTRY,
    CHUNK_INDEX,
    CHUNK_RECORD,
    DEVICE_SLOT,
    DIRENT,
    EXT_SUPERBLOCK,
    INODE_COMPACT,
    INODE_EXTENDED,
    SB_COMPRESSION_BY_FLAG,
    SB_COMPRESSION_MASK,
    SB_DIGEST_BY_FLAG,
    SB_DIGEST_MASK,
    SUPERBLOCK,
    U32,
    XATTR_ENTRY,
    XATTR_IBODY_HEADER,
    align,
    file_type,
)

BLK = C.BLOCK_SIZE
_KNOWN_TYPES = frozenset((stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK))
_S_IFMT = 0o170000
_S_IFREG = stat.S_IFREG
_SLOT = C.EROFS_SLOT_SIZE
_COMPACT_SIZE, _EXTENDED_SIZE = C.V6_INODE_COMPACT_SIZE, C.V6_INODE_EXTENDED_SIZE
_XATTR_HEADER = C.V6_XATTR_IBODY_HEADER_SIZE
_I_EXTENDED = C.EROFS_I_VERSION_EXTENDED
_LAYOUT_SHIFT, _LAYOUT_MASK = C.EROFS_I_DATALAYOUT_SHIFT, C.EROFS_I_DATALAYOUT_MASK
_I_FORMAT_KNOWN = _I_EXTENDED | _LAYOUT_MASK << _LAYOUT_SHIFT
_CHUNK_BASED = C.EROFS_LAYOUT_CHUNK_BASED
_SPECIAL_TYPES = frozenset((stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK))
_FLAT = (C.EROFS_LAYOUT_FLAT_PLAIN, C.EROFS_LAYOUT_FLAT_INLINE)
_CHUNK_FORMAT_ALL = C.V6_CHUNK_FORMAT_INDEXES | C.EROFS_CHUNK_FORMAT_BLKBITS_MASK


@dataclass(frozen=True, slots=True)
class V6Inode:
    """One decoded on-disk inode (compact or extended) and where its pieces live."""

    nid: int
    offset: int  # absolute byte offset of the inode
    extended: bool
    layout: int
    mode: int
    size: int
    i_u: int
    ino: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int
    nlink: int
    xattr_size: int

    @property
    def inode_size(self) -> int:
        return C.V6_INODE_EXTENDED_SIZE if self.extended else C.V6_INODE_COMPACT_SIZE

    @property
    def tail_offset(self) -> int:
        """Where inline data (directory/symlink tail) or the chunk-index area starts."""
        # `inode_size` spelled out: this runs for every directory and file of a read-back
        return self.offset + (C.V6_INODE_EXTENDED_SIZE if self.extended else C.V6_INODE_COMPACT_SIZE) + self.xattr_size

    @property
    def file_type(self) -> int:
        return stat.S_IFMT(self.mode)

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def rdev(self) -> int:
        """Device number (Linux "new" encoding, equal to glibc's dev_t for major < 4096)."""
        return self.i_u if self.mode & _S_IFMT in _SPECIAL_TYPES else 0


_NAME_MAX = C.EROFS_NAME_LEN


def _check_name(name: bytes, nid: int) -> None:
    if not name or len(name) > _NAME_MAX or b"/" in name or b"\0" in name or name == b"." or name == b"..":
        raise FormatError(f"invalid name {name[:64]!r} in directory nid {nid}")


class RafsV6Reader:
    """Random access to a RAFS v6 bootstrap held in memory (bytes, bytearray, mmap)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._d = data
        self._n = n = len(data)
        if n < BLK or n % BLK:
            raise FormatError(f"RAFS v6 bootstrap size {n} is not a non-zero multiple of {BLK}")
        (magic, checksum, compat, blkszbits, extslots, root_nid, inos, _bt, _btn, blocks, meta_blkaddr,
         xattr_blkaddr, _uuid, _vol, incompat, u, extra_devices, devt_slotoff) = SUPERBLOCK.unpack_from(data, C.EROFS_SUPER_OFFSET)
        if magic != C.EROFS_SUPER_MAGIC:
            raise FormatError(f"bad EROFS magic {magic:#x}")
        if blkszbits != C.EROFS_BLKSZ_BITS:
            raise FormatError(f"unsupported EROFS block size bits {blkszbits}")
        if checksum or extslots or u or xattr_blkaddr:
            raise FormatError("unsupported EROFS superblock fields (checksum/extslots/union/shared xattrs)")
        if not compat & C.EROFS_FEATURE_COMPAT_RAFS_V6 or incompat != C.EROFS_FEATURE_INCOMPAT_RAFS:
            raise FormatError(f"not a RAFS v6 image (compat {compat:#x}, incompat {incompat:#x})")
        if devt_slotoff != C.V6_DEVT_SLOTOFF:
            raise FormatError(f"unexpected device table slot offset {devt_slotoff}")
        if inos == 0:
            raise FormatError("superblock inode count is 0")
        self.meta = meta_blkaddr * BLK
        if self.meta >= n:
            raise FormatError(f"meta block address {meta_blkaddr} beyond the image")
        self.root_nid = root_nid
        self.inos = inos
        self.blocks = blocks
        (flags, bt_off, bt_size, chunk_size, ct_off, ct_size, pf_off, pf_size) = EXT_SUPERBLOCK.unpack_from(
            data, C.V6_EXT_SUPER_OFFSET)[:8]
        if flags & ~C.SB_KNOWN_FLAGS:
            raise FormatError(f"unknown RAFS superblock flags {flags:#x}")
        comp, dig = flags & SB_COMPRESSION_MASK, flags & SB_DIGEST_MASK
        if comp not in SB_COMPRESSION_BY_FLAG or dig not in SB_DIGEST_BY_FLAG:
            raise FormatError(f"superblock flags {flags:#x} need exactly one compressor and one digester")
        if chunk_size & (chunk_size - 1) or not C.MIN_CHUNK_SIZE <= chunk_size <= C.MAX_CHUNK_SIZE:
            raise FormatError(f"invalid chunk size {chunk_size:#x}")
        self.flags = flags
        self.compressor = SB_COMPRESSION_BY_FLAG[comp]
        self.digester = SB_DIGEST_BY_FLAG[dig]
        self.chunk_size = chunk_size
        if bt_size != C.V6_BLOB_ENTRY_SIZE * extra_devices:
            raise FormatError(f"blob table size {bt_size} does not match {extra_devices} devices")
        dev_end = C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE * extra_devices
        if extra_devices and (bt_off < dev_end or bt_off % BLK or bt_off + bt_size > n):
            raise FormatError(f"blob table [{bt_off}, +{bt_size}) outside the image")
        if dev_end > n:
            raise FormatError("device table runs past the end of the image")
        if ct_size % C.CHUNK_RECORD_SIZE or ct_off + ct_size > n or (ct_size and ct_off < BLK):
            raise FormatError(f"chunk table [{ct_off}, +{ct_size}) invalid")
        if pf_size % C.V6_PREFETCH_ENTRY_SIZE or pf_off + pf_size > n or (pf_size and pf_off < BLK):
            raise FormatError(f"prefetch table [{pf_off}, +{pf_size}) invalid")
        self.blobs = [self._read_blob(i, bt_off) for i in range(extra_devices)]
        self._ct = (ct_off, ct_size)
        self._pf = (pf_off, pf_size)
        self._chunk_map: dict[tuple[int, int], tuple] | None = None
        self._chunk_counts: list[int] = []  # chunk_count per blob, set with _chunk_map

    # -- tables ---------------------------------------------------------------------------
    def _read_blob(self, i: int, bt_off: int) -> BlobInfo:
        tag, blocks, mapped = DEVICE_SLOT.unpack_from(self._d, C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE * i)
        (raw_id, index, chunk_size, chunk_count, comp, dig, features, csize, usize, toc_size, ci_comp, ci_off,
         ci_csize, ci_usize, toc_digest, meta_digest, meta_size) = BLOB_ENTRY.unpack_from(self._d, bt_off + C.V6_BLOB_ENTRY_SIZE * i)
        blob_id = raw_id.split(b"\0", 1)[0]
        if not blob_id or not blob_id.isascii() or not blob_id.isalnum():
            raise FormatError(f"blob {i}: invalid blob id {blob_id[:64]!r}")
        if tag.split(b"\0", 1)[0] != blob_id:
            raise FormatError(f"blob {i}: device tag differs from the blob table id")
        if index != i or chunk_size != self.chunk_size:
            raise FormatError(f"blob {i}: index {index} / chunk size {chunk_size:#x} inconsistent")
        if comp not in C.COMPRESSOR_NAMES or ci_comp not in C.COMPRESSOR_NAMES or dig not in C.DIGESTER_NAMES:
            raise FormatError(f"blob {i}: unknown compression/digest algorithm")
        return BlobInfo(
            blob_id=blob_id.decode("ascii"), chunk_size=chunk_size, chunk_count=chunk_count,
            compressor=C.COMPRESSOR_NAMES[comp], digester=C.DIGESTER_NAMES[dig], features=features,
            compressed_size=csize, uncompressed_size=usize, toc_size=toc_size, toc_digest=toc_digest,
            ci_compressor=C.COMPRESSOR_NAMES[ci_comp], ci_offset=ci_off, ci_compressed_size=ci_csize,
            ci_uncompressed_size=ci_usize, meta_digest=meta_digest, meta_size=meta_size, mapped_blkaddr=mapped,
        )

    def chunk_table(self) -> list[ChunkInfo]:
        """The chunk info table (§3.15) in on-disk order."""
        off, size = self._ct
        return [
            ChunkInfo(digest=r[0], blob_index=r[1], flags=r[2], compressed_size=r[3], uncompressed_size=r[4],
                      compressed_offset=r[5], uncompressed_offset=r[6], file_offset=r[7], index=r[8])
            for r in CHUNK_RECORD.iter_unpack(self._d[off:off + size])
        ]

    def _chunks_by_index(self) -> dict[tuple[int, int], tuple]:
        if self._chunk_map is None:
            off, size = self._ct
            m: dict[tuple[int, int], tuple] = {}
            for r in CHUNK_RECORD.iter_unpack(self._d[off:off + size]):
                m.setdefault((r[1], r[8]), r)
            self._chunk_map = m
            self._chunk_counts = [b.chunk_count for b in self.blobs]
        return self._chunk_map

    def prefetch_nids(self) -> list[int]:
        """nids of the prefetch table, up to the first 0 entry."""
        off, size = self._pf
        nids = []
        for (nid,) in U32.iter_unpack(self._d[off:off + size]):
            if nid == 0:
                break
            nids.append(nid)
        return nids

    # -- inodes ---------------------------------------------------------------------------
    def inode(self, nid: int) -> V6Inode:
        """Decode the inode `nid`, checking that it and its xattr area lie inside the image."""
        # module-level copies of the C constants: this runs for every inode of every read-back
        pos = self.meta + _SLOT * nid
        if nid < 0 or pos + _COMPACT_SIZE > self._n:
            raise FormatError(f"nid {nid} out of range")
        d = self._d
        fmt = d[pos] | d[pos + 1] << 8
        if fmt & ~_I_FORMAT_KNOWN:
            raise FormatError(f"nid {nid}: unknown i_format bits {fmt:#x}")
        layout = fmt >> _LAYOUT_SHIFT & _LAYOUT_MASK
        if fmt & _I_EXTENDED:
            if pos + _EXTENDED_SIZE > self._n:
                raise FormatError(f"nid {nid} out of range")
            (_, icount, mode, _, size, i_u, ino, uid, gid, mtime, nsec, nlink) = INODE_EXTENDED.unpack_from(d, pos)
            extended, isz = True, _EXTENDED_SIZE
        else:
            (_, icount, mode, nlink, size, _, i_u, ino, uid, gid) = INODE_COMPACT.unpack_from(d, pos)
            mtime = nsec = 0
            extended, isz = False, _COMPACT_SIZE
        xsize = _XATTR_HEADER + 4 * (icount - 1) if icount else 0
        if pos + isz + xsize > self._n:
            raise FormatError(f"nid {nid}: xattr area runs past the image")
        ftype = mode & _S_IFMT
        if ftype not in _KNOWN_TYPES:
            raise FormatError(f"nid {nid}: unknown file type in mode {mode:#o}")
        if ftype == _S_IFREG:
            if layout != _CHUNK_BASED and not (layout in _FLAT and size == 0):
                raise FormatError(f"nid {nid}: regular file with unsupported data layout {layout}")
            if layout == _CHUNK_BASED and (i_u & ~_CHUNK_FORMAT_ALL or not i_u & C.V6_CHUNK_FORMAT_INDEXES):
                raise FormatError(f"nid {nid}: unsupported chunk format {i_u:#x}")
        elif layout not in _FLAT:
            raise FormatError(f"nid {nid}: data layout {layout} invalid for mode {mode:#o}")
        return V6Inode(nid, pos, extended, layout, mode, size, i_u, ino, uid, gid, mtime, nsec, nlink, xsize)

    def xattrs(self, ino: V6Inode) -> dict[bytes, bytes]:
        """Inline extended attributes (full names with prefix)."""
        if not ino.xattr_size:
            return {}
        d = self._d
        start = ino.offset + ino.inode_size
        end = start + ino.xattr_size
        _, shared = XATTR_IBODY_HEADER.unpack_from(d, start)
        if shared:
            raise FormatError(f"nid {ino.nid}: shared xattrs are not used by RAFS v6")
        pos = start + C.V6_XATTR_IBODY_HEADER_SIZE
        out: dict[bytes, bytes] = {}
        while pos < end:
            if pos + C.EROFS_XATTR_ENTRY_HEADER_SIZE > end:
                raise FormatError(f"nid {ino.nid}: truncated xattr entry")
            name_len, index, vsize = XATTR_ENTRY.unpack_from(d, pos)
            body = pos + C.EROFS_XATTR_ENTRY_HEADER_SIZE
            if body + name_len + vsize > end:
                raise FormatError(f"nid {ino.nid}: xattr entry runs past its area")
            prefix = C.XATTR_INDEX_PREFIX.get(index)
            if prefix is None:
                raise FormatError(f"nid {ino.nid}: unknown xattr name index {index}")
            name = prefix + bytes(d[body:body + name_len])
            if name in out:
                raise FormatError(f"nid {ino.nid}: duplicate xattr {name[:64]!r}")
            out[name] = bytes(d[body + name_len:body + name_len + vsize])
            pos = align(body + name_len + vsize, C.EROFS_XATTR_ALIGN)
        return out

    # -- directory and symlink data -------------------------------------------------------
    def _data_extents(self, ino: V6Inode) -> list[tuple[int, int]]:
        """(absolute offset, length) of each 4 KiB block of a flat inode's data, bounds-checked."""
        size = ino.size
        n = self._n
        if ino.layout == C.EROFS_LAYOUT_FLAT_INLINE:
            tail = size % BLK
            full = size - tail
        else:
            tail, full = 0, size
        base = ino.i_u * BLK
        if full and base + full > n:
            raise FormatError(f"nid {ino.nid}: data blocks [{base}, +{full}) outside the image")
        ext = [(base + k, min(BLK, full - k)) for k in range(0, full, BLK)]
        if tail:
            t = ino.tail_offset
            if t + tail > n or t % BLK + tail > BLK:
                raise FormatError(f"nid {ino.nid}: inline data crosses its block or the image end")
            ext.append((t, tail))
        return ext

    def readlink(self, ino: V6Inode) -> bytes:
        if not ino.is_symlink():
            raise FormatError(f"nid {ino.nid} is not a symlink")
        return b"".join(bytes(self._d[o:o + ln]) for o, ln in self._data_extents(ino))

    def _parse_block(self, nid: int, off: int, length: int) -> list[tuple[bytes, int, int]]:
        d = self._d
        if length < C.V6_DIRENT_SIZE:
            raise FormatError(f"nid {nid}: directory block too short")
        first_off = d[off + 8] | d[off + 9] << 8
        if first_off % C.V6_DIRENT_SIZE or not C.V6_DIRENT_SIZE <= first_off < length:
            raise FormatError(f"nid {nid}: bad first name offset {first_off}")
        heads = list(DIRENT.iter_unpack(d[off:off + first_off]))
        out = []
        last = len(heads) - 1
        for j, (cnid, nameoff, ft) in enumerate(heads):
            end = heads[j + 1][1] if j < last else length
            if not first_off <= nameoff < end <= length:
                raise FormatError(f"nid {nid}: name offsets out of order or out of the block")
            name = bytes(d[off + nameoff:off + end])
            if j == last:
                name = name.split(b"\0", 1)[0]
                if not name:
                    raise FormatError(f"nid {nid}: empty directory entry name")
            out.append((name, cnid, ft))
        return out

    def dirents(self, ino: V6Inode) -> list[tuple[bytes, int, int]]:
        """All entries of a directory, "." and ".." included: (name, nid, file type).

        Checks raw-byte order (which also rules out duplicates) and the children's names.
        """
        if not ino.is_dir():
            raise FormatError(f"nid {ino.nid} is not a directory")
        entries: list[tuple[bytes, int, int]] = []
        for off, length in self._data_extents(ino):
            entries.extend(self._parse_block(ino.nid, off, length))
        prev = b""
        seen_dot = seen_dotdot = False
        for name, cnid, _ in entries:
            if name <= prev:
                raise FormatError(f"nid {ino.nid}: directory entries not strictly sorted")
            prev = name
            if name == b".":
                seen_dot = True
                if cnid != ino.nid:
                    raise FormatError(f"nid {ino.nid}: '.' points to nid {cnid}")
            elif name == b"..":
                seen_dotdot = True
            else:
                _check_name(name, ino.nid)
        if not (seen_dot and seen_dotdot):
            raise FormatError(f"nid {ino.nid}: directory lacks '.' or '..'")
        return entries

    def listdir(self, ino: V6Inode | int) -> list[tuple[bytes, int, int]]:
        """Children of a directory (no "." / ".."), in on-disk (sorted) order."""
        if isinstance(ino, int):
            ino = self.inode(ino)
        return [e for e in self.dirents(ino) if e[0] not in (b".", b"..")]

    def lookup(self, path: bytes | str) -> V6Inode:
        """Resolve an absolute path (no symlink following); FileNotFoundError if absent."""
        if isinstance(path, str):
            path = path.encode()
        ino = self.inode(self.root_nid)
        for comp in (c for c in path.split(b"/") if c):
            if not ino.is_dir():
                raise NotADirectoryError(path.decode(errors="replace"))
            found = self._find(ino, comp)
            if found is None:
                raise FileNotFoundError(path.decode(errors="replace"))
            ino = self.inode(found)
        return ino

    def _find(self, ino: V6Inode, name: bytes) -> int | None:
        """Binary search over blocks by their first name, then over the chosen block."""
        ext = self._data_extents(ino)
        lo, hi = 0, len(ext)
        while lo < hi:
            mid = (lo + hi) // 2
            first = self._parse_block(ino.nid, *ext[mid])[0][0]
            if first <= name:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            return None
        for ename, cnid, _ in self._parse_block(ino.nid, *ext[lo - 1]):
            if ename == name:
                return cnid
        return None

    # -- regular files ------------------------------------------------------------------
    def chunk_indexes(self, ino: V6Inode) -> list[tuple[int, int, int]]:
        """(blob_index, ci_index, blkaddr) per chunk of a regular file."""
        if not ino.is_reg():
            raise FormatError(f"nid {ino.nid} is not a regular file")
        if ino.layout != C.EROFS_LAYOUT_CHUNK_BASED:
            return []
        count = -(-ino.size // self.chunk_size)
        base = align(ino.tail_offset, C.V6_CHUNK_INDEX_ALIGN)
        if base + C.V6_CHUNK_INDEX_SIZE * count > self._n:
            raise FormatError(f"nid {ino.nid}: chunk indexes for size {ino.size} run past the image")
        nblobs = len(self.blobs)
        out = []
        for lo, hi, blkaddr in CHUNK_INDEX.iter_unpack(self._d[base:base + C.V6_CHUNK_INDEX_SIZE * count]):
            dev = hi & 0xFF
            if not 1 <= dev <= nblobs:
                raise FormatError(f"nid {ino.nid}: chunk refers to device {dev}, image has {nblobs} blobs")
            out.append((dev - 1, lo | (hi >> 8) << 16, blkaddr))
        return out

    def chunks(self, ino: V6Inode) -> list[ChunkInfo]:
        """ChunkInfo per chunk of a regular file, joined with the chunk info table."""
        table = self._chunks_by_index()
        cs = self.chunk_size
        counts = self._chunk_counts
        out = []
        for k, (blob, ci, blkaddr) in enumerate(self.chunk_indexes(ino)):
            r = table.get((blob, ci))
            if r is None or r[6] != blkaddr * BLK or ci >= counts[blob]:
                raise FormatError(f"nid {ino.nid}: chunk {k} (blob {blob}, index {ci}) not in the chunk table")
            # positional: digest, blob_index, flags, compressed offset/size, uncompressed offset/size,
            # file_offset, index (the table record is digest, blob, flags, csize, usize, coff, uoff, ...)
            out.append(ChunkInfo(r[0], blob, r[2], r[5], r[3], r[6], r[4], k * cs, ci))
        return out

    # -- tree walk ------------------------------------------------------------------------
    def _walk(self) -> Iterator[tuple[int, int, bytes, bytes, V6Inode]]:
        """Yield (parent seq, seq, path, name, inode): each directory's children, then subtrees."""
        root = self.inode(self.root_nid)
        if not root.is_dir():
            raise FormatError("root inode is not a directory")
        yield -1, 0, b"/", b"/", root
        seen = {root.nid}
        claimed: set[int] = set()  # directory data blocks: sharing them would make the walk quadratic
        seq = 0
        stack = [(0, b"", root, root.nid, 0)]
        while stack:
            dseq, dpath, dino, parent_nid, depth = stack.pop()
            for off, length in self._data_extents(dino):
                if length == BLK or dino.layout == C.EROFS_LAYOUT_FLAT_PLAIN:
                    if off in claimed:
                        raise FormatError(f"nid {dino.nid}: directory data block {off // BLK} shared with another directory")
                    claimed.add(off)
            subdirs = []
            for name, cnid, ft in self.dirents(dino):
                if name == b".":
                    continue
                if name == b"..":
                    if cnid != parent_nid:
                        raise FormatError(f"{dpath or b'/'!r}: '..' points to nid {cnid}, parent is {parent_nid}")
                    continue
                child = self.inode(cnid)
                if ft != file_type(child.mode):
                    raise FormatError(f"{dpath + b'/' + name!r}: dirent type {ft} disagrees with the inode")
                seq += 1
                path = dpath + b"/" + name
                yield dseq, seq, path, name, child
                if child.is_dir():
                    if cnid in seen:
                        raise FormatError(f"directory cycle: nid {cnid} reached twice ({path[:200]!r})")
                    if depth + 1 > C.V6_MAX_DEPTH:
                        raise FormatError(f"directory tree deeper than {C.V6_MAX_DEPTH}")
                    seen.add(cnid)
                    subdirs.append((seq, path, child, dino.nid, depth + 1))
            stack.extend(reversed(subdirs))

    def walk(self) -> Iterator[tuple[bytes, V6Inode]]:
        """Lazily yield (absolute path, inode) for every path; hardlinks appear once per path."""
        for _, _, path, _, ino in self._walk():
            yield path, ino

    def iter_inodes(self) -> Iterator[V6Inode]:
        """Each distinct inode once (hardlinked regular files share one)."""
        seen: set[int] = set()
        for _, ino in self.walk():
            if ino.nid not in seen:
                seen.add(ino.nid)
                yield ino

    def to_bootstrap(self) -> Bootstrap:
        """Materialise the whole tree as model records."""
        with tree_building():
            return self._to_bootstrap()

    def _to_bootstrap(self) -> Bootstrap:
        nodes: list[Node] = []
        first_path: dict[int, bytes] = {}
        first_by_ino: dict[int, bytes] = {}
        # Paths of one inode (hardlinks) share its chunk list, xattr dict and target: they are one
        # inode, and copying per path would let a hostile image cost O(paths x inode size).
        shared: dict[int, tuple[list[ChunkInfo], dict[bytes, bytes], bytes | None]] = {}
        root: Node | None = None
        for pseq, _, path, name, ino in self._walk():
            ftype = ino.mode & _S_IFMT
            cached = shared.get(ino.nid)
            if cached is None:
                cached = shared[ino.nid] = (
                    self.chunks(ino) if ftype == _S_IFREG else [],
                    self.xattrs(ino),
                    self.readlink(ino) if ftype == stat.S_IFLNK else None,
                )
                first_path[ino.nid] = path
            chunks, xattrs, symlink = cached
            node = Node(
                name=name, mode=ino.mode, uid=ino.uid, gid=ino.gid, mtime=ino.mtime, mtime_nsec=ino.mtime_nsec,
                size=ino.size, rdev=ino.rdev, nlink=ino.nlink, ino=ino.ino,
                symlink=symlink, xattrs=xattrs, chunks=chunks,
            )
            if ino.ino and ftype != stat.S_IFDIR:
                linked = first_by_ino.setdefault(ino.ino, path)
                if linked != path:
                    node.hardlink_to = linked
            if pseq < 0:
                root = node
            else:
                nodes[pseq].children.append(node)
            nodes.append(node)
        assert root is not None
        prefetch = []
        for nid in self.prefetch_nids():
            if nid not in first_path:
                raise FormatError(f"prefetch table names nid {nid}, which is not in the tree")
            prefetch.append(first_path[nid])
        return Bootstrap(
            version=6, root=root, blobs=list(self.blobs), chunk_size=self.chunk_size, compressor=self.compressor,
            digester=self.digester, explicit_uid_gid=bool(self.flags & C.SB_EXPLICIT_UID_GID), flags=self.flags,
            prefetch=prefetch,
        )


def read_v6(data: bytes | bytearray | memoryview) -> Bootstrap:
    """Parse a whole RAFS v6 bootstrap; FormatError on anything malformed."""
    try:
        return RafsV6Reader(data).to_bootstrap()
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"malformed RAFS v6 bootstrap: {exc}") from None
