"""RAFS v5 bootstrap: byte-exact writer and hostile-input-safe reader (rafs-format.md §4).

The writer reproduces nydus-image v2.2's layout: node numbering (§3.16.1), inode table,
prefetch table, blob table plus extended blob table, then one record per path (§4.7) with
its name, symlink target, xattr block and chunk records. The reader checks every offset
and count before use, walks the tree without recursion and refuses cycles, so a crafted
bootstrap costs at most one visit per inode-table entry and fails with `FormatError`.
"""

from __future__ import annotations

import hashlib
import stat
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import blake3

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node

__all__ = [
    "V5Inode",
    "V5Reader",
    "V5Superblock",
    "digest_hasher",
    "read_v5",
    "write_v5",
]

# Field layouts (little-endian). Sizes are asserted against the constants below.
_SUPER = struct.Struct("<IIIIQQQQQIIIIQ")  # first 80 bytes of the 8192-byte superblock
_INODE = struct.Struct("<32sQQIIIIQQQIIIHHIIQ8x")
_CHUNK = struct.Struct("<32sIIIIQQQI4x")
_EXT_BLOB = struct.Struct("<IIQQ40x")
_BLOB_HEADER = struct.Struct("<II")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
assert _INODE.size == C.V5_INODE_SIZE
assert _CHUNK.size == C.CHUNK_RECORD_SIZE
assert _EXT_BLOB.size == C.V5_EXT_BLOB_ENTRY_SIZE
assert _BLOB_HEADER.size == C.V5_BLOB_ENTRY_HEADER_SIZE

_FILE_TYPES = frozenset(
    (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
)
_DEVICE_TYPES = frozenset((stat.S_IFCHR, stat.S_IFBLK))


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _pad(data: bytes) -> bytes:
    return data + bytes(_align(len(data), C.V5_ALIGNMENT) - len(data))


def digest_hasher(digester: str) -> Callable[[], "hashlib._Hash"]:
    """Factory of hash objects for a digest algorithm name ("blake3" or "sha256")."""
    if digester == "blake3":
        return blake3.blake3  # type: ignore[return-value]
    if digester == "sha256":
        return hashlib.sha256
    raise FormatError(f"unknown digest algorithm {digester!r}")


def _hash(digester: str, *parts: bytes) -> bytes:
    h = digest_hasher(digester)()
    for part in parts:
        h.update(part)
    return h.digest()


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass
class V5Superblock:
    """The meaningful first 80 bytes of the v5 superblock (§4.2)."""

    magic: int
    fs_version: int
    sb_size: int
    block_size: int
    flags: int
    inodes_count: int
    inode_table_offset: int
    prefetch_table_offset: int
    blob_table_offset: int
    inode_table_entries: int
    prefetch_table_entries: int
    blob_table_size: int
    ext_blob_table_entries: int
    ext_blob_table_offset: int

    def pack(self) -> bytes:
        head = _SUPER.pack(
            self.magic, self.fs_version, self.sb_size, self.block_size, self.flags, self.inodes_count,
            self.inode_table_offset, self.prefetch_table_offset, self.blob_table_offset,
            self.inode_table_entries, self.prefetch_table_entries, self.blob_table_size,
            self.ext_blob_table_entries, self.ext_blob_table_offset,
        )
        return head + bytes(C.V5_SUPERBLOCK_SIZE - len(head))

    @classmethod
    def unpack(cls, data: bytes) -> "V5Superblock":
        return cls(*_SUPER.unpack_from(data, 0))

    @property
    def compressor(self) -> str:
        """Chunk compressor; no bit means the legacy default lz4_block (§2.3)."""
        found = [name for name, bit in C.SB_COMPRESSION_FLAGS.items() if self.flags & bit]
        if len(found) > 1:
            raise FormatError(f"v5 superblock: several compression flags set ({self.flags:#x})")
        return found[0] if found else "lz4_block"

    @property
    def digester(self) -> str:
        """Digest algorithm; no bit means the legacy default blake3 (§2.3)."""
        found = [name for name, bit in C.SB_DIGEST_FLAGS.items() if self.flags & bit]
        if len(found) > 1:
            raise FormatError(f"v5 superblock: several digest flags set ({self.flags:#x})")
        return found[0] if found else "blake3"


@dataclass
class V5Inode:
    """One 128-byte inode record (§4.7) plus where it and its trailing data live."""

    index: int
    offset: int
    digest: bytes
    parent: int
    ino: int
    uid: int
    gid: int
    projid: int
    mode: int
    size: int
    blocks: int
    flags: int
    nlink: int
    child_index: int
    child_count: int
    name_size: int
    symlink_size: int
    rdev: int
    mtime_nsec: int
    mtime: int

    @property
    def file_type(self) -> int:
        return stat.S_IFMT(self.mode)

    def is_dir(self) -> bool:
        return self.file_type == stat.S_IFDIR

    def is_reg(self) -> bool:
        return self.file_type == stat.S_IFREG

    def is_symlink(self) -> bool:
        return self.file_type == stat.S_IFLNK

    @property
    def name_offset(self) -> int:
        return self.offset + C.V5_INODE_SIZE

    @property
    def symlink_offset(self) -> int:
        return self.name_offset + _align(self.name_size, C.V5_ALIGNMENT)

    @property
    def xattr_offset(self) -> int:
        extra = _align(self.symlink_size, C.V5_ALIGNMENT) if self.is_symlink() else 0
        return self.symlink_offset + extra


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------


class V5Reader:
    """Lazy, bounds-checked access to a v5 bootstrap held in any bytes-like buffer.

    Only the superblock and the small tables are parsed up front; inodes, names, chunks
    and xattrs are decoded on demand, so an `mmap` of a big image can be browsed cheaply.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = data
        self._len = len(data)
        if self._len < C.V5_SUPERBLOCK_SIZE:
            raise FormatError(f"v5 bootstrap truncated: {self._len} bytes, superblock needs {C.V5_SUPERBLOCK_SIZE}")
        sb = V5Superblock.unpack(data)
        if sb.magic != C.V5_MAGIC:
            raise FormatError(f"not a RAFS v5 bootstrap (magic {sb.magic:#x})")
        if sb.fs_version != C.V5_FS_VERSION:
            raise FormatError(f"unsupported RAFS v5 version {sb.fs_version:#x}")
        if sb.sb_size != C.V5_SUPERBLOCK_SIZE:
            raise FormatError(f"v5 superblock size {sb.sb_size} is not {C.V5_SUPERBLOCK_SIZE}")
        bs = sb.block_size
        if bs < C.MIN_CHUNK_SIZE or bs > C.MAX_CHUNK_SIZE or bs & (bs - 1):
            raise FormatError(f"v5 chunk size {bs:#x} is not a power of two in 4 KiB..16 MiB")
        if sb.flags & ~C.SB_KNOWN_FLAGS:
            raise FormatError(f"v5 superblock has unknown flags {sb.flags:#x}")
        self.compressor = sb.compressor
        self.digester = sb.digester
        if sb.inode_table_entries < 1:
            raise FormatError("v5 inode table is empty")
        self._check_range("inode table", sb.inode_table_offset, sb.inode_table_entries * 4)
        if sb.inode_table_offset < C.V5_SUPERBLOCK_SIZE:
            raise FormatError("v5 inode table overlaps the superblock")
        self._check_range("prefetch table", sb.prefetch_table_offset, sb.prefetch_table_entries * 4)
        self._check_range("blob table", sb.blob_table_offset, sb.blob_table_size)
        self._check_range(
            "extended blob table", sb.ext_blob_table_offset, sb.ext_blob_table_entries * C.V5_EXT_BLOB_ENTRY_SIZE
        )
        self.superblock = sb
        self.blobs = self._read_blobs()

    # -- helpers ------------------------------------------------------------------------

    def _check_range(self, what: str, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self._len:
            raise FormatError(f"v5 {what} [{offset}, +{size}) lies outside the {self._len}-byte bootstrap")

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        self._check_range(what, offset, size)
        return bytes(self._data[offset : offset + size])

    def _read_blobs(self) -> list[BlobInfo]:
        sb = self.superblock
        table = self._bytes(sb.blob_table_offset, sb.blob_table_size, "blob table")
        blobs: list[BlobInfo] = []
        pos = 0
        while len(table) - pos > C.V5_BLOB_ENTRY_HEADER_SIZE:
            ra_offset, ra_size = _BLOB_HEADER.unpack_from(table, pos)
            pos += C.V5_BLOB_ENTRY_HEADER_SIZE
            end = table.find(b"\0", pos)
            if end < 0:
                end = len(table)
            raw_id = table[pos:end]
            pos = end + 1
            try:
                blob_id = raw_id.decode("ascii")
            except UnicodeDecodeError:
                raise FormatError(f"v5 blob table: blob id {len(blobs)} is not ASCII") from None
            blobs.append(
                BlobInfo(
                    blob_id=blob_id, chunk_size=sb.block_size, compressor=self.compressor,
                    digester=self.digester, readahead_offset=ra_offset, readahead_size=ra_size,
                )
            )
        if sb.ext_blob_table_entries not in (0, len(blobs)):
            raise FormatError(
                f"v5 extended blob table has {sb.ext_blob_table_entries} entries for {len(blobs)} blobs"
            )
        for i in range(sb.ext_blob_table_entries):
            count, features, usize, csize = _EXT_BLOB.unpack_from(
                self._data, sb.ext_blob_table_offset + i * C.V5_EXT_BLOB_ENTRY_SIZE
            )
            b = blobs[i]
            b.chunk_count, b.features, b.uncompressed_size, b.compressed_size = count, features, usize, csize
        return blobs

    # -- inode level --------------------------------------------------------------------

    @property
    def inode_count(self) -> int:
        """Entries of the inode table (every path counts, root included)."""
        return self.superblock.inode_table_entries

    def inode(self, index: int) -> V5Inode:
        """The record of node `index` (1-based), located through the inode table."""
        if not 1 <= index <= self.inode_count:
            raise FormatError(f"v5 inode index {index} outside 1..{self.inode_count}")
        (value,) = _U32.unpack_from(self._data, self.superblock.inode_table_offset + 4 * (index - 1))
        offset = value << C.V5_INODE_TABLE_SHIFT
        if offset < C.V5_SUPERBLOCK_SIZE or offset + C.V5_INODE_SIZE > self._len:
            raise FormatError(f"v5 inode table entry {index} points outside the bootstrap ({offset})")
        rec = V5Inode(index, offset, *_INODE.unpack_from(self._data, offset))
        if rec.file_type not in _FILE_TYPES:
            raise FormatError(f"v5 inode {index} has unknown file type in mode {rec.mode:#o}")
        return rec

    def name(self, rec: V5Inode) -> bytes:
        """The record's name; the root's is returned as stored, others are validated."""
        name = self._bytes(rec.name_offset, rec.name_size, f"name of inode {rec.index}")
        if rec.index != C.V5_ROOT_INDEX:
            if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
                raise FormatError(f"v5 inode {rec.index} has an invalid name {name[:64]!r}")
        return name

    def symlink(self, rec: V5Inode) -> bytes | None:
        if not rec.is_symlink():
            return None
        return self._bytes(rec.symlink_offset, rec.symlink_size, f"symlink of inode {rec.index}")

    def xattrs(self, rec: V5Inode) -> dict[bytes, bytes]:
        if not rec.flags & C.V5_INODE_XATTR:
            return {}
        where = f"xattrs of inode {rec.index}"
        (payload,) = _U64.unpack(self._bytes(rec.xattr_offset, C.V5_XATTR_HEADER_SIZE, where))
        block = self._bytes(rec.xattr_offset + C.V5_XATTR_HEADER_SIZE, payload, where)
        result: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(block):
            if pos + C.V5_XATTR_PAIR_HEADER_SIZE > len(block):
                raise FormatError(f"v5 {where}: truncated pair header")
            (size,) = _U32.unpack_from(block, pos)
            pos += C.V5_XATTR_PAIR_HEADER_SIZE
            if size > len(block) - pos:
                raise FormatError(f"v5 {where}: pair of {size} bytes overruns the block")
            pair = block[pos : pos + size]
            pos += size
            sep = pair.find(b"\0")
            if sep <= 0:
                raise FormatError(f"v5 {where}: pair without a name")
            name = pair[:sep]
            if name in result:
                raise FormatError(f"v5 {where}: duplicate name {name[:64]!r}")
            result[name] = pair[sep + 1 :]
        return result

    def _xattr_block_size(self, rec: V5Inode) -> int:
        if not rec.flags & C.V5_INODE_XATTR:
            return 0
        (payload,) = _U64.unpack(self._bytes(rec.xattr_offset, C.V5_XATTR_HEADER_SIZE, "xattr header"))
        if payload > self._len:
            raise FormatError(f"v5 xattrs of inode {rec.index} overrun the bootstrap")
        return C.V5_XATTR_HEADER_SIZE + _align(payload, C.V5_ALIGNMENT)

    def chunks(self, rec: V5Inode) -> list[ChunkInfo]:
        """Chunk records of a regular file, with blob indexes checked against the blob table."""
        if not rec.is_reg() or rec.child_count == 0:
            return []
        start = rec.xattr_offset + self._xattr_block_size(rec)
        self._check_range(f"chunks of inode {rec.index}", start, rec.child_count * C.CHUNK_RECORD_SIZE)
        nblobs = len(self.blobs)
        out = []
        for digest, blob_index, flags, csize, usize, coff, uoff, foff, index in _CHUNK.iter_unpack(
            self._data[start : start + rec.child_count * C.CHUNK_RECORD_SIZE]
        ):
            if blob_index >= nblobs:
                raise FormatError(f"v5 inode {rec.index}: chunk refers to blob {blob_index} of {nblobs}")
            out.append(ChunkInfo(bytes(digest), blob_index, flags, coff, csize, uoff, usize, foff, index))
        return out

    def children(self, rec: V5Inode) -> range:
        """Node indexes of a directory's children, range-checked against the inode table."""
        if not rec.is_dir() or rec.child_count == 0:
            return range(0)
        first, count = rec.child_index, rec.child_count
        if first < 1 or first + count - 1 > self.inode_count:
            raise FormatError(
                f"v5 directory inode {rec.index}: children {first}..{first + count - 1} outside 1..{self.inode_count}"
            )
        return range(first, first + count)

    def prefetch_inodes(self) -> list[int]:
        sb = self.superblock
        raw = self._bytes(sb.prefetch_table_offset, 4 * sb.prefetch_table_entries, "prefetch table")
        return [v for (v,) in _U32.iter_unpack(raw) if v]

    # -- tree level ---------------------------------------------------------------------

    def lookup(self, path: bytes) -> V5Inode | None:
        """Resolve an absolute path by binary search over sorted children (§4.9)."""
        rec = self.inode(C.V5_ROOT_INDEX)
        for part in (p for p in path.split(b"/") if p):
            kids = self.children(rec)
            lo, hi = 0, len(kids)
            found = None
            while lo < hi:
                mid = (lo + hi) // 2
                cand = self.inode(kids[mid])
                cname = self.name(cand)
                if cname == part:
                    found = cand
                    break
                if cname < part:
                    lo = mid + 1
                else:
                    hi = mid
            if found is None:
                return None
            rec = found
        return rec

    def walk(self) -> Iterator[tuple[int, V5Inode, bytes, int]]:
        """Pre-order walk yielding (parent index, record, name, depth); root's parent is 0.

        Iterative; every node index may be reached once only, which rules out cycles and
        shared subtrees, and bounds the work by the inode table size.
        """
        root = self.inode(C.V5_ROOT_INDEX)
        if not root.is_dir():
            raise FormatError("v5 root inode is not a directory")
        seen = {C.V5_ROOT_INDEX}
        stack: list[tuple[int, V5Inode, bytes, int]] = [(0, root, self.name(root), 0)]
        while stack:
            parent, rec, name, depth = stack.pop()
            yield parent, rec, name, depth
            if not rec.is_dir():
                continue
            if depth >= C.V5_MAX_DEPTH:
                raise FormatError(f"v5 tree deeper than {C.V5_MAX_DEPTH} levels")
            kids = []
            names: set[bytes] = set()
            for idx in self.children(rec):
                if idx in seen:
                    raise FormatError(f"v5 inode {idx} reached twice (cycle or shared child range)")
                seen.add(idx)
                child = self.inode(idx)
                cname = self.name(child)
                if cname in names:
                    raise FormatError(f"v5 directory inode {rec.index} lists {cname[:64]!r} twice")
                names.add(cname)
                kids.append((rec.index, child, cname, depth + 1))
            stack.extend(reversed(kids))

    def to_bootstrap(self) -> Bootstrap:
        """Decode the whole tree into model records."""
        sb = self.superblock
        nodes: dict[int, Node] = {}
        parents: dict[int, tuple[int, bytes]] = {}
        pending_links: list[tuple[Node, int]] = []
        for parent, rec, name, _depth in self.walk():
            node = self._node(rec, name if parent else C.V5_ROOT_NAME)
            nodes[rec.index] = node
            parents[rec.index] = (parent, node.name)
            if parent:
                nodes[parent].children.append(node)
            if not rec.is_dir() and rec.ino != rec.index:
                pending_links.append((node, rec.ino))
        for node in nodes.values():
            if node.children:
                node.sort_children()
        for node, first in pending_links:
            if first in nodes and first != C.V5_ROOT_INDEX:
                node.hardlink_to = self._path(parents, first)
        prefetch = []
        for ino in self.prefetch_inodes():
            if ino not in nodes:
                raise FormatError(f"v5 prefetch table names inode {ino} that is not in the tree")
            prefetch.append(self._path(parents, ino))
        return Bootstrap(
            version=5, root=nodes[C.V5_ROOT_INDEX], blobs=self.blobs, chunk_size=sb.block_size,
            compressor=self.compressor, digester=self.digester,
            explicit_uid_gid=bool(sb.flags & C.SB_EXPLICIT_UID_GID), flags=sb.flags, prefetch=prefetch,
        )

    @staticmethod
    def _path(parents: dict[int, tuple[int, bytes]], index: int) -> bytes:
        parts = []
        while index and index != C.V5_ROOT_INDEX:
            index, name = parents[index]
            parts.append(name)
        return b"/" + b"/".join(reversed(parts))

    def _node(self, rec: V5Inode, name: bytes) -> Node:
        ftype = rec.file_type
        rdev = rec.rdev
        if ftype not in _DEVICE_TYPES and rdev == C.V5_TAR_NO_RDEV:
            rdev = 0
        return Node(
            name=name, mode=rec.mode, uid=rec.uid, gid=rec.gid, mtime=rec.mtime, mtime_nsec=rec.mtime_nsec,
            size=rec.size, rdev=rdev, nlink=rec.nlink, ino=rec.ino, symlink=self.symlink(rec),
            xattrs=self.xattrs(rec), chunks=self.chunks(rec),
        )


def read_v5(data: bytes | bytearray | memoryview) -> Bootstrap:
    """Parse a whole RAFS v5 bootstrap; raises `FormatError` on any inconsistency."""
    try:
        return V5Reader(data).to_bootstrap()
    except struct.error as exc:  # defensive: every read is range-checked first
        raise FormatError(f"v5 bootstrap truncated: {exc}") from None


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


def _check_name(name: bytes, what: str) -> None:
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FormatError(f"invalid {what} name {name[:64]!r}")
    if len(name) > 0xFFFF:
        raise FormatError(f"{what} name longer than 65535 bytes")


def _xattr_block(xattrs: dict[bytes, bytes]) -> tuple[bytes, int]:
    """Encoded xattr block and its payload size, pairs in ascending name order (§4.7)."""
    pairs = []
    for name in sorted(xattrs):
        if b"\0" in name or not any(name.startswith(prefix) for prefix, _ in C.XATTR_PREFIXES):
            raise FormatError(f"unsupported xattr name {name[:64]!r}")
        pair = name + b"\0" + xattrs[name]
        pairs.append(_U32.pack(len(pair)) + pair)
    body = b"".join(pairs)
    return _pad(_U64.pack(len(body)) + body), len(body)


def _sort_key(path: bytes) -> tuple[bytes, ...]:
    return tuple(p for p in path.split(b"/") if p)


def write_v5(bs: Bootstrap, *, hardlink_flag: bool = False, tar_rdev: bool = False) -> bytes:
    """Lay out `bs` as a RAFS v5 bootstrap, byte-identical to nydus-image v2.2 (§4.11).

    `hardlink_flag` and `tar_rdev` select the tar builder's conventions: later paths of a
    hardlink group carry the HARDLINK flag, and non-devices get i_rdev 0xFFFFFFFF. With
    both off (directory builder) i_rdev is the node's rdev for every type.
    """
    cs = bs.chunk_size
    if cs < C.MIN_CHUNK_SIZE or cs > C.MAX_CHUNK_SIZE or cs & (cs - 1):
        raise FormatError(f"chunk size {cs:#x} is not a power of two in 4 KiB..16 MiB")
    if bs.compressor not in C.SB_COMPRESSION_FLAGS:
        raise FormatError(f"unknown compressor {bs.compressor!r}")
    hasher = digest_hasher(bs.digester)
    if not bs.root.is_dir():
        raise FormatError("the root node must be a directory")

    # 1. Numbering (§3.16.1): children of a directory get consecutive indexes, then each
    #    child directory is processed depth first.
    order: list[Node] = [bs.root]
    parent_of: list[int] = [0]
    index_of: dict[int, int] = {id(bs.root): 1}
    kids_of: dict[int, tuple[int, int]] = {}  # node index -> (child_index, child_count)
    stack = [(bs.root, 0)]
    while stack:
        d, depth = stack.pop()
        if depth >= C.V5_MAX_DEPTH:
            raise FormatError(f"tree deeper than {C.V5_MAX_DEPTH} levels")
        didx = index_of[id(d)]
        kids = sorted(d.children, key=lambda n: n.name)
        kids_of[didx] = (len(order) + 1, len(kids))
        prev = None
        for k in kids:
            _check_name(k.name, "file")
            if k.name == prev:
                raise FormatError(f"duplicate name {k.name[:64]!r} in one directory")
            prev = k.name
            if id(k) in index_of:
                raise FormatError(f"node {k.name[:64]!r} appears twice in the tree")
            order.append(k)
            parent_of.append(didx)
            index_of[id(k)] = len(order)
        stack.extend((k, depth + 1) for k in reversed(kids) if k.is_dir())
    n = len(order)

    # 2. Hardlink groups: non-directories sharing a non-zero `ino`, or linked by
    #    `hardlink_to`; i_ino is the lowest index of the group, nlink its size.
    group: list[int] = list(range(n + 1))  # union-find over node indexes

    def find(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    by_ino: dict[int, int] = {}
    paths: dict[bytes, int] | None = None
    for i, node in enumerate(order, 1):
        if node.is_dir():
            continue
        if node.ino:
            first = by_ino.setdefault(node.ino, i)
            group[find(i)] = find(first)
        if node.hardlink_to is not None:
            if paths is None:
                paths = _index_paths(order, parent_of)
            target = paths.get(b"/" + b"/".join(_sort_key(node.hardlink_to)))
            if target is not None and not order[target - 1].is_dir():
                group[find(i)] = find(target)
    members: dict[int, list[int]] = {}
    for i in range(1, n + 1):
        if not order[i - 1].is_dir():
            members.setdefault(find(i), []).append(i)
    i_ino = list(range(n + 1))
    nlink = [0] * (n + 1)
    for idxs in members.values():
        for i in idxs:
            i_ino[i] = idxs[0]
            nlink[i] = len(idxs)
    inodes_count = len(members) + sum(1 for node in order[1:] if node.is_dir())

    # 3. Per-record sizes and bodies.
    explicit = bs.explicit_uid_gid
    nblobs = len(bs.blobs)
    has_xattr = False
    records: list[tuple] = []  # per index: (fields for _INODE minus digest, tail bytes)
    sizes = [0] * (n + 1)
    for i, node in enumerate(order, 1):
        ftype = stat.S_IFMT(node.mode)
        if ftype not in _FILE_TYPES:
            raise FormatError(f"node {node.name[:64]!r} has unknown file type in mode {node.mode:#o}")
        flags = 0
        child_index = child_count = 0
        symlink = b""
        if ftype == stat.S_IFDIR:
            child_index, child_count = kids_of[i]
            total = sum(len(c.name) + C.V5_DIRENT_PSEUDO_OVERHEAD for c in node.children)
            size = _align(total, C.BLOCK_SIZE) if total else C.BLOCK_SIZE
            nl = 2 + sum(1 for c in node.children if c.is_dir())
        else:
            nl = nlink[i]
            size = node.size
            if ftype == stat.S_IFLNK:
                if node.symlink is None:
                    raise FormatError(f"symlink {node.name[:64]!r} has no target")
                symlink = node.symlink
                if len(symlink) > 0xFFFF:
                    raise FormatError("symlink target longer than 65535 bytes")
                size = len(symlink)
                flags |= C.V5_INODE_SYMLINK
            elif ftype == stat.S_IFREG:
                child_count = len(node.chunks)
                for ch in node.chunks:
                    if not 0 <= ch.blob_index < nblobs:
                        raise FormatError(f"chunk of {node.name[:64]!r} refers to blob {ch.blob_index} of {nblobs}")
            if hardlink_flag and i_ino[i] != i:
                flags |= C.V5_INODE_HARDLINK
        xblock, xpayload = (b"", 0)
        if node.xattrs:
            xblock, xpayload = _xattr_block(node.xattrs)
            flags |= C.V5_INODE_XATTR
            has_xattr = True
        blocks = -(-(size + (_align(xpayload, C.V5_ALIGNMENT) if node.xattrs else 0)) // C.STAT_BLOCK_SIZE)
        if tar_rdev:
            rdev = node.rdev & 0xFFFFFFFF if ftype in _DEVICE_TYPES else C.V5_TAR_NO_RDEV
        else:
            rdev = node.rdev & 0xFFFFFFFF
        name = C.V5_ROOT_NAME if i == C.V5_ROOT_INDEX else node.name
        tail = [_pad(name)]
        if symlink or ftype == stat.S_IFLNK:
            tail.append(_pad(symlink))
        tail.append(xblock)
        if ftype == stat.S_IFREG:
            tail.extend(
                _CHUNK.pack(
                    ch.digest, ch.blob_index, ch.flags, ch.compressed_size, ch.uncompressed_size,
                    ch.compressed_offset, ch.uncompressed_offset, ch.file_offset, ch.index,
                )
                for ch in node.chunks
            )
        body = b"".join(tail)
        fields = (
            parent_of[i - 1] if i > 1 else 0, i_ino[i], node.uid if explicit else 0, node.gid if explicit else 0,
            0, node.mode, size, blocks, flags, nl, child_index, child_count, len(name), len(symlink), rdev,
            node.mtime_nsec, node.mtime,
        )
        records.append((fields, body))
        sizes[i] = C.V5_INODE_SIZE + len(body)

    # 4. Digest tree (§4.10), bottom-up: children always have larger indexes.
    digests: list[bytes] = [b""] * (n + 1)
    for i in range(n, 0, -1):
        node = order[i - 1]
        h = hasher()
        if node.is_dir():
            first, count = kids_of[i]
            for c in range(first, first + count):
                h.update(digests[c])
        elif node.is_reg():
            for ch in node.chunks:
                h.update(ch.digest)
        elif node.is_symlink():
            h.update(node.symlink or b"")
        digests[i] = h.digest()

    # 5. Tables.
    prefetch = _prefetch_entries(bs.prefetch, order, parent_of, i_ino)
    inode_table_offset = C.V5_SUPERBLOCK_SIZE
    prefetch_offset = inode_table_offset + _align(4 * n, C.V5_ALIGNMENT)
    blob_table = _blob_table(bs.blobs)
    blob_offset = prefetch_offset + _align(C.V5_PREFETCH_ENTRY_SIZE * len(prefetch), C.V5_ALIGNMENT)
    ext_offset = blob_offset + len(blob_table)
    offset = ext_offset + C.V5_EXT_BLOB_ENTRY_SIZE * nblobs
    table = []
    for i in range(1, n + 1):
        value = offset >> C.V5_INODE_TABLE_SHIFT
        if value >= C.V5_INODE_TABLE_MAX_VALUE:
            raise FormatError("bootstrap too large for RAFS v5 (inode offset beyond 4 GiB)")
        table.append(value)
        offset += sizes[i]

    flags = C.SB_COMPRESSION_FLAGS[bs.compressor] | C.SB_DIGEST_FLAGS[bs.digester]
    if explicit:
        flags |= C.SB_EXPLICIT_UID_GID
    if has_xattr:
        flags |= C.SB_HAS_XATTR
    sb = V5Superblock(
        C.V5_MAGIC, C.V5_FS_VERSION, C.V5_SUPERBLOCK_SIZE, cs, flags, inodes_count, inode_table_offset,
        prefetch_offset, blob_offset, n, len(prefetch), len(blob_table), nblobs, ext_offset,
    )
    out = [
        sb.pack(),
        _pad(struct.pack(f"<{n}I", *table)),
        _pad(struct.pack(f"<{len(prefetch)}I", *prefetch)),
        blob_table,
    ]
    out.extend(
        _EXT_BLOB.pack(b.chunk_count, b.features, b.uncompressed_size, b.compressed_size) for b in bs.blobs
    )
    for i, (fields, body) in enumerate(records, 1):
        out.append(_INODE.pack(digests[i], *fields))
        out.append(body)
    return b"".join(out)


def _index_paths(order: Sequence[Node], parent_of: Sequence[int]) -> dict[bytes, int]:
    paths: dict[int, bytes] = {1: b"/"}
    result = {b"/": 1}
    for i in range(2, len(order) + 1):
        parent = paths[parent_of[i - 1]]
        path = (b"" if parent == b"/" else parent) + b"/" + order[i - 1].name
        paths[i] = path
        result[path] = i
    return result


def _prefetch_entries(
    patterns: Sequence[bytes], order: Sequence[Node], parent_of: Sequence[int], i_ino: Sequence[int]
) -> list[int]:
    """Inode numbers of the prefetch patterns (§4.4): absolute paths in path order, a
    pattern inside an earlier one's subtree dropped, missing or empty nodes skipped."""
    if not patterns:
        return []
    keys = sorted({_sort_key(p) for p in patterns if p.startswith(b"/")})
    kept: list[tuple[bytes, ...]] = []
    for k in keys:
        if not any(k[: len(prev)] == prev for prev in kept):
            kept.append(k)
    paths = _index_paths(order, parent_of)
    entries = []
    for k in kept:
        idx = paths.get(b"/" + b"/".join(k))
        if idx is None:
            continue
        node = order[idx - 1]
        if not node.is_dir() and (node.size if not node.is_symlink() else len(node.symlink or b"")) == 0:
            continue
        entries.append(i_ino[idx])
    return entries


def _blob_table(blobs: Sequence[BlobInfo]) -> bytes:
    entries = []
    for b in blobs:
        try:
            raw = b.blob_id.encode("ascii")
        except UnicodeEncodeError:
            raise FormatError(f"blob id {b.blob_id!r} is not ASCII") from None
        if b"\0" in raw:
            raise FormatError("blob id contains NUL")
        entries.append(_BLOB_HEADER.pack(b.readahead_offset, b.readahead_size) + raw)
    return _pad(b"\0".join(entries)) if entries else b""
