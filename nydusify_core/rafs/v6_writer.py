"""RAFS v6 bootstrap writer that reproduces nydus-image v2.2's layout byte for byte.

The algorithm is rafs-format.md §3.16: number the nodes, lay inodes and directory/symlink
data out in a virtual meta area starting at 4096 (with the 32-byte-unit free-block
allocator that reuses the unused ends of blocks), shift everything behind the tables, then
emit. All records are packed with `struct.pack_into` into one preallocated bytearray.
"""

from __future__ import annotations

import stat
import struct
from collections import deque
from dataclasses import dataclass
from operator import attrgetter

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import Bootstrap, ChunkInfo, Node
from nydusify_core.rafs.v6_layout import (
    BLOB_ENTRY,
    CHUNK_INDEX,
    CHUNK_RECORD,
    DEVICE_SLOT,
    DIRENT,
    EXT_SUPERBLOCK,
    INODE_EXTENDED,
    SUPERBLOCK,
    U32,
    XATTR_ENTRY,
    XATTR_IBODY_HEADER,
    align,
    FILE_TYPES,
    file_type,
    split_xattr_name,
)

BLK = C.BLOCK_SIZE
SLOT = C.EROFS_SLOT_SIZE
_name_of = attrgetter("name")
_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFREG = stat.S_IFREG
_S_IFLNK = stat.S_IFLNK
_LAYOUT_PLAIN = C.EROFS_LAYOUT_FLAT_PLAIN
_LAYOUT_INLINE = C.EROFS_LAYOUT_FLAT_INLINE
_LAYOUT_CHUNK = C.EROFS_LAYOUT_CHUNK_BASED


@dataclass(frozen=True)
class V6WriteOptions:
    """Choices the on-disk format leaves to the builder.

    mapped_blkaddr: "aligned" (default) gives each device slot the 4 KiB block at which the
    blob would start in a composed block device (first at align(bootstrap size, 2 MiB), each
    next one after the previous, rounded up to 2 MiB again), as nydus-image from Feb-2023 on
    and the v2.2 fixture do. "zero" writes 0 like the v2.2.0 release. nydusd 2.2 never reads
    the field and the kernel skips slots whose value is 0 and only consults non-zero ones for
    addresses beyond the bootstrap, so both values mount with ``-o device=``; only "aligned"
    also works for a single flattened device, hence the default.
    root_ino: i_ino of the root (0 = directory builder, 1 = tar builder).
    """

    mapped_blkaddr: str = C.V6_DEFAULT_MAPPED_BLKADDR
    root_ino: int = C.V6_ROOT_INO_DIRECTORY_BUILDER


class _FreeBlocks:
    """Partially used 4 KiB blocks bucketed by free 32-byte units (FIFO per bucket)."""

    __slots__ = ("buckets", "mask")

    def __init__(self) -> None:
        self.buckets: list[deque[int]] = [deque() for _ in range(BLK // SLOT)]
        self.mask = 0  # bit k set <=> bucket k non-empty

    def register(self, pos: int) -> None:
        rem = pos % BLK
        if rem:
            k = (BLK - rem) // SLOT
            self.buckets[k].append(pos - rem)
            self.mask |= 1 << k

    def take(self, size: int) -> int:
        """Start of `size` bytes carved from a registered block, or 0 when none fits."""
        if size >= BLK:
            return 0
        need = -(-size // SLOT)
        m = self.mask >> need
        if not m:
            return 0
        k = need + (m & -m).bit_length() - 1
        bucket = self.buckets[k]
        start = bucket.popleft() + BLK - SLOT * k
        if not bucket:
            self.mask &= ~(1 << k)
        self.register(start + SLOT * need)
        return start


def encode_xattrs(xattrs: dict[bytes, bytes]) -> bytes:
    """Inline xattr area (§3.9), entries in ascending full-name order; b"" without xattrs."""
    if not xattrs:
        return b""
    parts = [XATTR_IBODY_HEADER.pack(0, 0)]
    for name in sorted(xattrs):
        value = xattrs[name]
        split = split_xattr_name(name)
        if split is None:
            raise FormatError(f"xattr name {name!r} has no prefix RAFS v6 can store")
        index, suffix = split
        if len(suffix) > 0xFF or len(value) > 0xFFFF:
            raise FormatError(f"xattr {name!r} is too long for RAFS v6")
        entry = XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
        parts.append(entry + bytes(-len(entry) % C.EROFS_XATTR_ALIGN))
    area = b"".join(parts)
    if (len(area) - C.V6_XATTR_IBODY_HEADER_SIZE) // 4 + 1 > 0xFFFF:
        raise FormatError("extended attributes of one inode exceed the RAFS v6 limit")
    return area


_NAME_MAX = C.EROFS_NAME_LEN


def _check_name(name: bytes) -> None:
    if not name or len(name) > _NAME_MAX or b"/" in name or b"\0" in name or name == b"." or name == b"..":
        raise FormatError(f"invalid file name {name!r}")


def _pack_dirents(names: list[bytes]) -> tuple[int, list[int]]:
    """Greedy block filling of §3.10: (i_size, start entry index of each block)."""
    used = 0
    starts = [0]
    for i, name in enumerate(names):
        cost = C.V6_DIRENT_SIZE + len(name)
        if used + cost > BLK:
            starts.append(i)
            used = 0
        used += cost
    return BLK * (len(starts) - 1) + used, starts


class _Writer:
    def __init__(self, bs: Bootstrap, opts: V6WriteOptions) -> None:
        self.bs = bs
        self.opts = opts
        if opts.mapped_blkaddr not in C.V6_MAPPED_BLKADDR_MODES:
            raise FormatError(f"unknown mapped_blkaddr mode {opts.mapped_blkaddr!r}")
        cs = bs.chunk_size
        if cs & (cs - 1) or not C.MIN_CHUNK_SIZE <= cs <= C.MAX_CHUNK_SIZE:
            raise FormatError(f"invalid chunk size {cs:#x}")
        if len(bs.blobs) > C.V6_MAX_BLOBS:
            raise FormatError(f"RAFS v6 holds at most {C.V6_MAX_BLOBS} blobs, got {len(bs.blobs)}")
        if bs.compressor not in C.SB_COMPRESSION_FLAGS or bs.digester not in C.SB_DIGEST_FLAGS:
            raise FormatError(f"unsupported compressor/digester {bs.compressor}/{bs.digester}")

    # -- pass 1: numbering (§3.16.1) --------------------------------------------------
    def number(self) -> None:
        root = self.bs.root
        if not root.is_dir():
            raise FormatError("the root of a bootstrap must be a directory")
        nodes: list[Node] = [root]
        parent = [0]
        kid_start = [0]
        kid_end = [0]
        dir_order: list[int] = []
        stack = [0]
        while stack:
            d = stack.pop()
            dir_order.append(d)
            kids = sorted(nodes[d].children, key=_name_of)
            start = len(nodes)
            kid_start[d] = start
            kid_end[d] = start + len(kids)
            prev = None
            for kid in kids:
                name = kid.name
                _check_name(name)
                if name == prev:
                    raise FormatError(f"duplicate name {name!r} in one directory")
                prev = name
            nodes.extend(kids)
            parent.extend([d] * len(kids))
            kid_start.extend([0] * len(kids))
            kid_end.extend([0] * len(kids))
            for i in range(start + len(kids) - 1, start - 1, -1):
                if nodes[i].mode & _S_IFMT == _S_IFDIR:
                    stack.append(i)
        self.nodes, self.parent, self.kid_start, self.kid_end, self.dir_order = nodes, parent, kid_start, kid_end, dir_order

    # -- pass 2: sizes, hardlinks, layout (§3.16.2-§3.16.4) ----------------------------
    def layout(self) -> None:
        nodes = self.nodes
        n = len(nodes)
        cs = self.bs.chunk_size
        nblobs = len(self.bs.blobs)
        kid_start, kid_end = self.kid_start, self.kid_end
        ino = list(range(1, n + 1))
        ino[0] = self.opts.root_ino
        nlink = [1] * n
        first = list(range(n))  # index of the node owning the shared inode
        groups: dict[int, list[int]] = {}
        xattr_cache: dict[int, bytes] = {}
        xattr = [b""] * n
        isz = [C.V6_INODE_EXTENDED_SIZE] * n
        size = [0] * n
        for i, node in enumerate(nodes):
            fmt = node.mode & _S_IFMT
            if node.xattrs:
                key = id(node.xattrs)
                xb = xattr_cache.get(key)
                if xb is None:
                    xb = xattr_cache[key] = encode_xattrs(node.xattrs)
                xattr[i] = xb
                isz[i] += len(xb)
            if fmt == _S_IFDIR:
                nlink[i] = 2 + sum(1 for k in range(kid_start[i], kid_end[i]) if nodes[k].mode & _S_IFMT == _S_IFDIR)
                continue
            if node.ino or node.hardlink_to is not None:
                groups.setdefault(node.ino or -i, []).append(i)
            if fmt == _S_IFREG:
                size[i] = node.size
                nchunks = -(-node.size // cs)
                if len(node.chunks) != nchunks:
                    raise FormatError(f"{node.name!r}: {len(node.chunks)} chunks for size {node.size} (expected {nchunks})")
                for ch in node.chunks:
                    if not 0 <= ch.blob_index < nblobs:
                        raise FormatError(f"{node.name!r}: chunk refers to blob {ch.blob_index}, image has {nblobs}")
                    if ch.uncompressed_offset % BLK or not 0 <= ch.index <= C.MAX_CHUNKS_PER_BLOB:
                        raise FormatError(f"{node.name!r}: chunk offset/index not addressable in RAFS v6")
            elif fmt == _S_IFLNK:
                if node.symlink is None:
                    raise FormatError(f"symlink {node.name!r} has no target")
                size[i] = len(node.symlink)
        for members in self.hardlink_groups(groups):
            if len(members) > 1:
                head = members[0]
                for m in members:
                    nlink[m] = len(members)
                    ino[m] = ino[head]
                    if nodes[m].mode & _S_IFMT == _S_IFREG and nodes[head].mode & _S_IFMT == _S_IFREG:
                        first[m] = head
        # directory entries: ".", ".." and the children, sorted by raw bytes
        dir_entries: dict[int, list[tuple[bytes, int]]] = {}
        dir_starts: dict[int, list[int]] = {}
        parent = self.parent
        for d in self.dir_order:
            entries = [(b".", d), (b"..", parent[d])]
            ks, ke = kid_start[d], kid_end[d]
            entries.extend(zip(map(_name_of, nodes[ks:ke]), range(ks, ke)))
            if ke > ks and nodes[ks].name < b"..":
                entries.sort(key=lambda e: e[0])
            size[d], dir_starts[d] = _pack_dirents([e[0] for e in entries])
            dir_entries[d] = entries

        off = [0] * n
        doff = [0] * n
        layout = [_LAYOUT_CHUNK] * n
        fl = _FreeBlocks()
        cursor = BLK

        def place_with_tail(i: int, data_size: int) -> None:
            nonlocal cursor
            inode_size = isz[i]
            tail = data_size % BLK
            if tail and inode_size + tail <= BLK:
                o = fl.take(inode_size + tail)
                if not o:
                    if BLK - cursor % BLK < inode_size + tail:
                        fl.register(cursor)
                        cursor = align(cursor, BLK)
                    o = cursor
                    cursor += inode_size + tail
                if data_size != tail:
                    fl.register(cursor)
                    cursor = align(cursor, BLK)
                doff[i] = cursor
                cursor += data_size - tail
                layout[i] = _LAYOUT_INLINE
            else:
                o = fl.take(inode_size)
                if not o:
                    o = cursor
                    cursor += inode_size
                fl.register(cursor)
                cursor = align(cursor, BLK)
                doff[i] = cursor
                cursor = align(cursor + data_size, BLK)
                layout[i] = _LAYOUT_PLAIN
            off[i] = o

        for d in self.dir_order:
            place_with_tail(d, size[d])
            cursor = (cursor + 31) & ~31
            for k in range(kid_start[d], kid_end[d]):
                fmt = nodes[k].mode & _S_IFMT
                if fmt == _S_IFDIR:
                    continue
                if fmt == _S_IFREG:
                    if first[k] != k:
                        off[k] = off[first[k]]
                    else:
                        total = align(isz[k], C.V6_CHUNK_INDEX_ALIGN) + C.V6_CHUNK_INDEX_SIZE * len(nodes[k].chunks)
                        o = fl.take(total)
                        if not o:
                            o = cursor
                            cursor = align(cursor + isz[k], C.V6_CHUNK_INDEX_ALIGN) + C.V6_CHUNK_INDEX_SIZE * len(nodes[k].chunks)
                        off[k] = o
                elif fmt == _S_IFLNK:
                    place_with_tail(k, size[k])
                else:
                    off[k] = cursor
                    cursor += isz[k]
                    layout[k] = _LAYOUT_PLAIN
                cursor = (cursor + 31) & ~31
        self.ino, self.nlink, self.first, self.xattr, self.isz, self.size = ino, nlink, first, xattr, isz, size
        self.dir_entries, self.dir_starts = dir_entries, dir_starts
        self.off, self.doff, self.layout, self.meta_end = off, doff, layout, cursor

    def hardlink_groups(self, by_ino: dict[int, list[int]]) -> list[list[int]]:
        """Merge the `ino` groups with `hardlink_to` links: the groups of two or more nodes,
        members in node-index order (a node alone needs no inode sharing)."""
        nodes = self.nodes
        group: dict[int, int] = {}

        def find(i: int) -> int:
            while group.get(i, i) != i:
                i = group[i]
            return i

        for members in by_ino.values():
            for m in members[1:]:
                group[find(m)] = find(members[0])
        for members in by_ino.values():
            for m in members:
                target = nodes[m].hardlink_to
                if target is None:
                    continue
                t = self.resolve(b"/" + b"/".join(c for c in target.split(b"/") if c))
                if t is not None and t != m and nodes[t].mode & _S_IFMT != _S_IFDIR:
                    a, b = find(m), find(t)
                    if a != b:
                        group[max(a, b)] = min(a, b)
        # every member of a group of two or more took part in a union above; a node that
        # did not (most nodes of a read-back or merged tree carry an ino) is alone
        merged: dict[int, list[int]] = {}
        for m in set(group).union(group.values()):
            merged.setdefault(find(m), []).append(m)
        return [sorted(v) for v in merged.values()]

    # -- prefetch (§3.6) ------------------------------------------------------------------
    def prefetch_patterns(self) -> list[bytes]:
        kept: list[bytes] = []
        for raw in self.bs.prefetch:
            p = raw.encode() if isinstance(raw, str) else bytes(raw)
            if not p.startswith(b"/"):
                continue
            p = b"/" + b"/".join(c for c in p.split(b"/") if c)
            if any(p == k or k == b"/" or p.startswith(k + b"/") for k in kept):
                continue
            kept.append(p)
        return kept

    def resolve(self, path: bytes) -> int | None:
        i = 0
        nodes = self.nodes
        for comp in (c for c in path.split(b"/") if c):
            if nodes[i].mode & _S_IFMT != _S_IFDIR:
                return None
            lo, hi = self.kid_start[i], self.kid_end[i]
            while lo < hi:
                mid = (lo + hi) // 2
                if nodes[mid].name < comp:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == self.kid_end[i] or nodes[lo].name != comp:
                return None
            i = lo
        return i

    # -- pass 3: emission (§3.16.5-§3.16.6) -------------------------------------------
    def emit(self) -> bytes:
        bs = self.bs
        blobs = bs.blobs
        nblobs = len(blobs)
        nodes, off, doff, layout, isz, size = self.nodes, self.off, self.doff, self.layout, self.isz, self.size
        cs = bs.chunk_size
        table_off = align(C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE * nblobs, BLK)
        patterns = self.prefetch_patterns() if nblobs else []
        prefetch_off = table_off + C.V6_BLOB_ENTRY_SIZE * nblobs
        prefetch_size = C.V6_PREFETCH_ENTRY_SIZE * len(patterns)
        meta = align(prefetch_off + prefetch_size, BLK) if nblobs else 0
        # the chunk info table: last referencing file (node order) wins, sorted by key
        chunk_table: dict[tuple[bytes, int], ChunkInfo] = {}
        for node in nodes:
            if node.chunks and node.mode & _S_IFMT == _S_IFREG:
                for ch in node.chunks:
                    chunk_table[(ch.digest, ch.blob_index)] = ch
        ctab_off = align(meta + self.meta_end, BLK)
        ctab_size = C.CHUNK_RECORD_SIZE * len(chunk_table)
        total = align(ctab_off + ctab_size, BLK)
        buf = bytearray(total)

        explicit = bs.explicit_uid_gid
        chunk_bits_default = cs.bit_length() - 1 - C.EROFS_BLKSZ_BITS
        pack_inode = INODE_EXTENDED.pack_into
        pack_index = CHUNK_INDEX.pack_into
        pack_dirent = DIRENT.pack_into
        ino, nlink, first, xattr = self.ino, self.nlink, self.first, self.xattr
        has_xattr = False
        # constants of the per-node loop as locals (module attribute lookups add up over every node)
        i_format = {lay: C.EROFS_I_VERSION_EXTENDED | (lay << C.EROFS_I_DATALAYOUT_SHIFT)
                    for lay in (_LAYOUT_PLAIN, _LAYOUT_INLINE, _LAYOUT_CHUNK)}
        inode_size, xattr_header = C.V6_INODE_EXTENDED_SIZE, C.V6_XATTR_IBODY_HEADER_SIZE
        index_align, index_size, chunk_format = C.V6_CHUNK_INDEX_ALIGN, C.V6_CHUNK_INDEX_SIZE, C.V6_CHUNK_FORMAT_INDEXES
        dirent_size = C.V6_DIRENT_SIZE
        dirent_type, ft_unknown = FILE_TYPES.get, C.EROFS_FT_UNKNOWN  # = file_type(), inlined
        dir_entries, dir_starts = self.dir_entries, self.dir_starts
        for i, node in enumerate(nodes):
            if first[i] != i:
                continue  # a later path of a hardlinked regular file: same inode bytes
            fmt = node.mode & _S_IFMT
            pos = meta + off[i]
            lay = layout[i]
            xb = xattr[i]
            if fmt == _S_IFREG:
                chunks = node.chunks
                bits = chunk_bits_default
                if len(chunks) > 1 and node.size > cs:
                    b0 = chunks[0].blob_index
                    o0 = chunks[0].uncompressed_offset
                    if all(c.blob_index == b0 and c.uncompressed_offset == o0 + k * cs for k, c in enumerate(chunks)):
                        bits = (node.size - 1).bit_length() - C.EROFS_BLKSZ_BITS
                i_u = chunk_format | bits
            elif fmt == _S_IFDIR or fmt == _S_IFLNK:
                i_u = (meta + doff[i]) // BLK
            else:
                i_u = node.rdev & 0xFFFFFFFF
            if explicit:
                uid, gid = node.uid, node.gid
            else:
                uid = gid = 0
            try:
                pack_inode(
                    buf, pos, i_format[lay], (len(xb) - xattr_header) // 4 + 1 if xb else 0,
                    node.mode & 0xFFFF, 0, size[i], i_u, ino[i], uid, gid,
                    node.mtime, node.mtime_nsec, nlink[i],
                )
            except struct.error as exc:
                raise FormatError(f"{node.name!r}: inode field out of range ({exc})") from None
            end = pos + inode_size
            if xb:
                has_xattr = True
                buf[end:end + len(xb)] = xb
                end += len(xb)
            if fmt == _S_IFREG:
                p = align(end, index_align)
                for ch in node.chunks:
                    ci = ch.index
                    pack_index(buf, p, ci & 0xFFFF, (ch.blob_index + 1) | ((ci >> 16) << 8), ch.uncompressed_offset // BLK)
                    p += index_size
            elif fmt == _S_IFDIR:
                entries = dir_entries[i]
                starts = dir_starts[i]
                nblocks = len(starts)
                starts = starts + [len(entries)]
                for b in range(nblocks):
                    if b == nblocks - 1 and lay == _LAYOUT_INLINE:
                        p = end
                    else:
                        p = meta + doff[i] + b * BLK
                    s, e = starts[b], starts[b + 1]
                    nameoff = dirent_size * (e - s)
                    names = []
                    for name, k in entries[s:e]:
                        k = first[k]
                        pack_dirent(buf, p, off[k] // SLOT, nameoff, dirent_type(nodes[k].mode & _S_IFMT, ft_unknown))
                        p += dirent_size
                        nameoff += len(name)
                        names.append(name)
                    blob = b"".join(names)
                    buf[p:p + len(blob)] = blob
            elif fmt == _S_IFLNK:
                target = node.symlink or b""
                tail = len(target) % BLK if lay == _LAYOUT_INLINE else 0
                full = len(target) - tail
                if full:
                    p = meta + doff[i]
                    buf[p:p + full] = target[:full]
                if tail:
                    buf[end:end + tail] = target[full:]
        if ctab_size:
            p = ctab_off
            for key in sorted(chunk_table):
                ch = chunk_table[key]
                CHUNK_RECORD.pack_into(
                    buf, p, ch.digest, ch.blob_index, ch.flags, ch.compressed_size, ch.uncompressed_size,
                    ch.compressed_offset, ch.uncompressed_offset, ch.file_offset, ch.index, 0,
                )
                p += C.CHUNK_RECORD_SIZE
        self.write_tables(buf, meta, table_off, prefetch_off, patterns, ctab_off, ctab_size, has_xattr)
        return bytes(buf)

    def write_tables(
        self, buf: bytearray, meta: int, table_off: int, prefetch_off: int, patterns: list[bytes],
        ctab_off: int, ctab_size: int, has_xattr: bool,
    ) -> None:
        bs = self.bs
        blobs = bs.blobs
        nblobs = len(blobs)
        total = len(buf)
        blocks = 0
        mapped = total
        inlined_digest = True
        for i, blob in enumerate(blobs):
            blob_id = blob.blob_id.encode("ascii", "replace")
            if not blob_id.isascii() or b"?" in blob_id or not blob_id or len(blob_id) > 64:
                raise FormatError(f"blob id {blob.blob_id!r} must be 1..64 ASCII characters")
            if blob.chunk_size != bs.chunk_size:
                raise FormatError(f"blob {blob.blob_id}: chunk size differs from the bootstrap's")
            cnt = blob.uncompressed_size // BLK
            blocks += cnt
            if self.opts.mapped_blkaddr == "aligned":
                blkaddr = align(mapped, C.V6_MAPPED_BLKADDR_ALIGN) // BLK
                mapped = (blkaddr + cnt) * BLK
            else:
                blkaddr = 0
            if not blob.features & C.BLOB_INLINED_CHUNK_DIGEST:
                inlined_digest = False
            try:
                DEVICE_SLOT.pack_into(buf, C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE * i, blob_id, cnt, blkaddr)
                BLOB_ENTRY.pack_into(
                    buf, table_off + C.V6_BLOB_ENTRY_SIZE * i, blob_id, i, blob.chunk_size, blob.chunk_count,
                    C.COMPRESSOR_IDS[blob.compressor], C.DIGESTER_IDS[blob.digester], blob.features,
                    blob.compressed_size, blob.uncompressed_size, blob.toc_size, C.COMPRESSOR_IDS[blob.ci_compressor],
                    blob.ci_offset, blob.ci_compressed_size, blob.ci_uncompressed_size, blob.toc_digest,
                    blob.meta_digest, blob.meta_size,
                )
            except (KeyError, struct.error) as exc:
                raise FormatError(f"blob {blob.blob_id}: field out of range ({exc})") from None
        matched = 0
        if patterns:
            p = prefetch_off
            for pat in patterns:
                k = self.resolve(pat)
                if k is None:
                    continue
                node = self.nodes[k]
                if node.mode & _S_IFMT == _S_IFREG and node.size == 0:
                    continue
                U32.pack_into(buf, p, self.off[self.first[k]] // SLOT)
                p += C.V6_PREFETCH_ENTRY_SIZE
                matched += 1
        flags = C.SB_COMPRESSION_FLAGS[bs.compressor] | C.SB_DIGEST_FLAGS[bs.digester]
        if bs.explicit_uid_gid:
            flags |= C.SB_EXPLICIT_UID_GID
        if has_xattr:
            flags |= C.SB_HAS_XATTR
        if inlined_digest:
            flags |= C.SB_INLINED_CHUNK_DIGEST
        SUPERBLOCK.pack_into(
            buf, C.EROFS_SUPER_OFFSET, C.EROFS_SUPER_MAGIC, 0, C.EROFS_FEATURE_COMPAT_RAFS_V6, C.EROFS_BLKSZ_BITS, 0,
            self.off[0] // SLOT, len(self.nodes), 0, 0, blocks & 0xFFFFFFFF, meta // BLK, 0, bytes(16), bytes(16),
            C.EROFS_FEATURE_INCOMPAT_RAFS, 0, nblobs, C.V6_DEVT_SLOTOFF,
        )
        EXT_SUPERBLOCK.pack_into(
            buf, C.V6_EXT_SUPER_OFFSET, flags, table_off, C.V6_BLOB_ENTRY_SIZE * nblobs, bs.chunk_size,
            # like nydus-image, the space stays reserved but the table is absent when no pattern matched
            ctab_off, ctab_size, prefetch_off if matched else 0,
            C.V6_PREFETCH_ENTRY_SIZE * len(patterns) if matched else 0, 0,
        )


def write_v6(
    bs: Bootstrap,
    *,
    mapped_blkaddr: str = C.V6_DEFAULT_MAPPED_BLKADDR,
    root_ino: int = C.V6_ROOT_INO_DIRECTORY_BUILDER,
) -> bytes:
    """Serialize `bs` as a RAFS v6 bootstrap laid out exactly like nydus-image v2.2.

    Node.nlink and the size of directories are derived (§3.16); hardlinks are the non-directory
    nodes sharing a non-zero `ino`. See `V6WriteOptions` for the two keyword options. Raises
    FormatError when the tree cannot be represented.
    """
    w = _Writer(bs, V6WriteOptions(mapped_blkaddr=mapped_blkaddr, root_ino=root_ino))
    w.number()
    w.layout()
    return w.emit()
