"""RAFS v6 bootstrap writer and reader (rafs-format.md §3).

Trees are built in memory together with a "cache layout" blob file (every chunk stored
uncompressed at its 4 KiB-aligned uncompressed offset), which is what EROFS (fsck.erofs,
the kernel) reads through the device table (§9).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node
from nydusify_core.rafs.v6 import RafsV6Reader, read_v6, write_v6
from nydusify_core.testing.erofs import kernel_mount, read_chunkwise

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "nydus-v2.2"
FIXTURE_BOOT = FIXTURES / "bootstrap" / "rafs-v6-2.2.boot"
FIXTURE_BLOB = FIXTURES / "blobs" / "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
MTIME = 1_700_000_000
NSEC = 123_456_789


def _need_fixture() -> None:
    if not FIXTURE_BOOT.exists():
        pytest.skip(f"fixture {FIXTURE_BOOT} is absent")


def _need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (erofs-utils) is not installed")
    return path


# --------------------------------------------------------------------------------------
# A tree plus its cache-layout blobs
# --------------------------------------------------------------------------------------
class TreeBuilder:
    """Builds a model tree whose regular files point into cache-layout blob files."""

    def __init__(self, chunk_size: int = 4096, nblobs: int = 1, features: int = C.BLOB_ALIGNED) -> None:
        self.chunk_size = chunk_size
        self.features = features
        self.root = Node(name=b"/", mode=stat.S_IFDIR | 0o755, mtime=0)
        self.blobs = [bytearray() for _ in range(nblobs)]
        self.dedup: list[dict[bytes, ChunkInfo]] = [{} for _ in range(nblobs)]
        self.content: dict[bytes, bytes] = {}
        self.next_ino = 1000

    def _split(self, path: bytes) -> tuple[Node, bytes]:
        parts = [p for p in path.split(b"/") if p]
        node = self.root
        for comp in parts[:-1]:
            node = node.child(comp)
            assert node is not None and node.is_dir(), path
        return node, parts[-1]

    def _add(self, path: bytes, node: Node) -> Node:
        parent, name = self._split(path)
        node.name = name
        parent.children.append(node)
        return node

    def _attrs(self, kw: dict) -> dict:
        base = {"uid": 1000, "gid": 100, "mtime": MTIME, "mtime_nsec": NSEC}
        base.update(kw)
        return base

    def dir(self, path: bytes, mode: int = 0o755, **kw) -> Node:
        return self._add(path, Node(name=b"", mode=stat.S_IFDIR | mode, **self._attrs(kw)))

    def file(self, path: bytes, data: bytes, mode: int = 0o644, blob: int = 0, **kw) -> Node:
        chunks = []
        cs = self.chunk_size
        for k in range(0, len(data), cs):
            piece = data[k:k + cs]
            digest = blake3.blake3(piece).digest()
            known = self.dedup[blob].get(digest)
            if known is None:
                buf = self.blobs[blob]
                off = -len(buf) % C.BLOCK_SIZE + len(buf)
                buf.extend(bytes(off - len(buf)))
                buf.extend(piece)
                known = ChunkInfo(digest=digest, blob_index=blob, flags=0, compressed_offset=off,
                                  compressed_size=len(piece), uncompressed_offset=off,
                                  uncompressed_size=len(piece), file_offset=0, index=len(self.dedup[blob]))
                self.dedup[blob][digest] = known
            chunks.append(ChunkInfo(**{**known.__dict__, "file_offset": k}))
        self.content[path] = data
        self.next_ino += 1
        node = Node(name=b"", mode=stat.S_IFREG | mode, size=len(data), chunks=chunks, ino=self.next_ino,
                    **self._attrs(kw))
        return self._add(path, node)

    def symlink(self, path: bytes, target: bytes, **kw) -> Node:
        return self._add(path, Node(name=b"", mode=stat.S_IFLNK | 0o777, size=len(target), symlink=target,
                                    **self._attrs(kw)))

    def special(self, path: bytes, kind: int, rdev: int = 0, mode: int = 0o644, **kw) -> Node:
        return self._add(path, Node(name=b"", mode=kind | mode, rdev=rdev, **self._attrs(kw)))

    def hardlink(self, path: bytes, target: bytes) -> Node:
        parent, name = self._split(target)
        src = parent.child(name)
        assert src is not None and src.is_reg()
        self.content[path] = self.content[target]
        return self._add(path, Node(**{**src.__dict__, "name": b"", "children": [], "chunks": list(src.chunks)}))

    def blob_bytes(self, i: int) -> bytes:
        buf = bytes(self.blobs[i])
        return buf + bytes(-len(buf) % C.BLOCK_SIZE)

    def bootstrap(self, **kw) -> Bootstrap:
        blobs = []
        for i in range(len(self.blobs)):
            data = self.blob_bytes(i)
            blobs.append(BlobInfo(blob_id=hashlib.sha256(data).hexdigest(), chunk_size=self.chunk_size,
                                  chunk_count=len(self.dedup[i]), compressor="none", digester="blake3",
                                  features=self.features, compressed_size=len(data), uncompressed_size=len(data)))
        return Bootstrap(version=6, root=self.root, blobs=blobs, chunk_size=self.chunk_size, compressor="none",
                         digester="blake3", **kw)

    def write_blobs(self, directory: Path) -> list[Path]:
        paths = []
        for i in range(len(self.blobs)):
            p = directory / f"blob{i}"
            p.write_bytes(self.blob_bytes(i))
            paths.append(p)
        return paths


def noise(seed: bytes, n: int) -> bytes:
    """Incompressible, non-repeating bytes (so that no chunk deduplicates)."""
    return blake3.blake3(seed).digest(length=n)


def populate_everything(tb: TreeBuilder, long_symlink: bool = True) -> None:
    """Every entry kind the format knows, plus the awkward names and sizes."""
    cs = tb.chunk_size
    tb.dir(b"/dir", xattrs={b"user.dir": b"on-a-dir", b"trusted.overlay.opaque": b"y"})
    tb.file(b"/dir/regular", b"hello world\n")
    tb.file(b"/dir/empty", b"")
    tb.file(b"/dir/multi", noise(b"multi", cs * 3) + b"tail", xattrs={
        b"user.a": b"1", b"user.b": b"two", b"trusted.t": b"\x00\x01", b"security.nydus_test": b"sec"})
    tb.file(b"/dir/page", b"p" * 4096)
    tb.file(b"/dir/dedup", b"hello world\n")
    tb.symlink(b"/dir/link-inline", b"regular")
    tb.symlink(b"/dir/link-plain", b"t" * 4090)
    if long_symlink:
        tb.symlink(b"/dir/link-long", b"L" * 5000)
    tb.hardlink(b"/dir/hard1", b"/dir/regular")
    tb.dir(b"/other")
    tb.hardlink(b"/other/hard2", b"/dir/regular")
    tb.special(b"/dev-fifo", stat.S_IFIFO, xattrs={b"trusted.fifo": b"f"})
    tb.special(b"/dev-chr", stat.S_IFCHR, rdev=os.makedev(1, 3))
    tb.special(b"/dev-blk", stat.S_IFBLK, rdev=os.makedev(259, 0x12345), mode=0o600)
    tb.special(b"/dev-sock", stat.S_IFSOCK, mode=0o755)
    tb.file(b"/setuid", b"#!/bin/sh\n", mode=0o4755)
    tb.file(b"/setgid", b"#!/bin/sh\n", mode=0o2755, uid=0, gid=0)
    tb.dir(b"/sticky", mode=0o1777)
    tb.file(b"/" + b"n" * 255, b"long name")
    tb.file("/ünïcødé".encode(), b"utf-8 name")
    tb.file(b"/\xff\xfe-not-utf8", b"raw bytes name")
    tb.file(b"/!x", b"sorts before dot")
    tb.file(b"/+plus", b"also before dot")
    tb.dir(b"/big")
    for i in range(2100):
        tb.file(b"/big/entry-%05d" % i, b"" if i % 7 else b"x%d" % i)
    path = b""
    for _ in range(60):
        path += b"/deep"
        tb.dir(path)
    tb.file(path + b"/bottom", b"bottom of the tree")


def view(bs: Bootstrap) -> dict[bytes, tuple]:
    """Everything a reader must give back, path by path (dir sizes and i_ino are layout)."""
    out = {}
    for path, n in bs.walk():
        chunks = tuple((c.digest, c.blob_index, c.index, c.uncompressed_offset, c.uncompressed_size,
                        c.compressed_offset, c.compressed_size, c.flags, c.file_offset) for c in n.chunks)
        uid, gid = (n.uid, n.gid) if bs.explicit_uid_gid else (0, 0)
        out[path] = (n.mode, uid, gid, n.mtime, n.mtime_nsec, None if n.is_dir() else n.size,
                     n.rdev if n.is_special() else 0, n.symlink, dict(n.xattrs), chunks,
                     [c.name for c in sorted(n.children, key=lambda c: c.name)])
    return out


def expected_nlink(bs: Bootstrap) -> dict[bytes, int]:
    groups: dict[int, list[bytes]] = {}
    out = {}
    for path, n in bs.walk():
        if n.is_dir():
            out[path] = 2 + sum(1 for c in n.children if c.is_dir())
        else:
            groups.setdefault(n.ino or id(n), []).append(path)
    for paths in groups.values():
        for p in paths:
            out[p] = len(paths)
    return out


@pytest.fixture(scope="module")
def everything() -> TreeBuilder:
    tb = TreeBuilder()
    populate_everything(tb)
    return tb


@pytest.fixture(scope="module")
def everything_image(everything: TreeBuilder) -> bytes:
    return write_v6(everything.bootstrap(prefetch=[b"/"]))


# --------------------------------------------------------------------------------------
# (1) The nydus-image fixture
# --------------------------------------------------------------------------------------
def test_fixture_tree_is_read() -> None:
    _need_fixture()
    data = FIXTURE_BOOT.read_bytes()
    bs = read_v6(data)
    tree = {p: (n.mode, n.size, n.nlink, len(n.chunks)) for p, n in bs.walk()}
    assert tree == {
        b"/": (stat.S_IFDIR | 0o755, 67, 2, 0),
        b"/lib.rs": (stat.S_IFREG | 0o644, 16931, 1, 1),
        b"/sync_io.rs": (stat.S_IFREG | 0o644, 13400, 1, 1),
    }
    assert (bs.compressor, bs.digester, bs.chunk_size, bs.explicit_uid_gid) == ("zstd", "blake3", 0x100000, True)
    assert bs.flags == C.SB_COMPRESSION_ZSTD | C.SB_HASH_BLAKE3 | C.SB_EXPLICIT_UID_GID | C.SB_INLINED_CHUNK_DIGEST
    [blob] = bs.blobs
    assert blob.blob_id == FIXTURE_BLOB.name
    assert (blob.chunk_count, blob.compressed_size, blob.uncompressed_size, blob.mapped_blkaddr) == (2, 14554, 0x9000, 512)
    lib = bs.root.child(b"lib.rs")
    assert lib.chunks[0].digest.hex().startswith("f7e2735f1c6ae9cd")
    assert (lib.chunks[0].index, lib.chunks[0].uncompressed_offset, lib.chunks[0].compressed_size) == (0, 0, 0x12DC)
    sync = bs.root.child(b"sync_io.rs")
    assert sync.chunks[0].digest.hex().startswith("8124") and sync.chunks[0].uncompressed_offset == 0x5000


def _dump_inode(tool: str, devices: list[Path], image: Path, path: str) -> dict[str, int]:
    out = subprocess.run([tool, *(f"--device={d}" for d in devices), f"--path={path}", str(image)],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(NID|Links|Layout|Size|Xattr size): (\d+)", out))
    return {k: int(v) for k, v in fields.items()}


def test_fixture_agrees_with_dump_erofs() -> None:
    _need_fixture()
    tool = _need_tool("dump.erofs")
    out = subprocess.run([tool, f"--device={FIXTURE_BLOB}", "-s", "-S", str(FIXTURE_BOOT)],
                         capture_output=True, text=True, check=True).stdout
    reader = RafsV6Reader(FIXTURE_BOOT.read_bytes())
    assert re.search(rf"root nid:\s+{reader.root_nid}\n", out)
    assert re.search(rf"inode count:\s+{reader.inos}\n", out)
    assert "chunked_file device_table" in out
    listing = subprocess.run([tool, f"--device={FIXTURE_BLOB}", "--ls", "--path=/", str(FIXTURE_BOOT)],
                             capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\S+)$", listing, re.M)
    assert [(n.encode(), int(nid), int(ft)) for nid, ft, n in rows] == reader.dirents(reader.inode(reader.root_nid))
    for path in ("/", "/lib.rs", "/sync_io.rs"):
        ino = reader.lookup(path)
        assert _dump_inode(tool, [FIXTURE_BLOB], FIXTURE_BOOT, path) == {
            "NID": ino.nid, "Links": ino.nlink, "Layout": ino.layout, "Size": ino.size, "Xattr size": ino.xattr_size}


def test_fixture_regenerates_byte_for_byte() -> None:
    """Nothing is masked: the bootstrap carries no pre-release quirk (those live in the blob's
    TOC), and its 2 MiB-aligned mapped_blkaddr (512) is this writer's default."""
    _need_fixture()
    data = FIXTURE_BOOT.read_bytes()
    assert write_v6(read_v6(data)) == data


def test_mapped_blkaddr_zero_differs_only_in_the_device_slot() -> None:
    """v2.2.0 proper wrote 0; the fixture's builder (Feb 2023) already wrote 512."""
    _need_fixture()
    data = FIXTURE_BOOT.read_bytes()
    zero = write_v6(read_v6(data), mapped_blkaddr="zero")
    slot = C.V6_DEVTABLE_OFFSET + 68
    assert zero[slot:slot + 4] == bytes(4) and data[slot:slot + 4] == struct.pack("<I", 512)
    assert zero[:slot] + zero[slot + 4:] == data[:slot] + data[slot + 4:]


# --------------------------------------------------------------------------------------
# (2) Round trips and layout rules
# --------------------------------------------------------------------------------------
def test_every_entry_kind_round_trips(everything: TreeBuilder, everything_image: bytes) -> None:
    bs = everything.bootstrap(prefetch=[b"/"])
    back = read_v6(everything_image)
    assert view(back) == view(bs)
    nlinks = expected_nlink(bs)
    assert {p: n.nlink for p, n in back.walk()} == nlinks
    assert back.prefetch == [b"/"]
    assert write_v6(back) == everything_image


def test_hardlinked_regular_files_share_one_inode(everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    nids = {r.lookup(p).nid for p in (b"/dir/regular", b"/dir/hard1", b"/other/hard2")}
    assert len(nids) == 1
    assert r.lookup(b"/dir/regular").nlink == 3
    back = read_v6(everything_image)
    assert back.root.child(b"other").child(b"hard2").hardlink_to == b"/dir/hard1"


def test_repeatable_build_writes_zero_ids() -> None:
    tb = TreeBuilder()
    tb.file(b"/f", b"data", uid=5, gid=6)
    back = read_v6(write_v6(tb.bootstrap(explicit_uid_gid=False)))
    f = back.root.child(b"f")
    assert (f.uid, f.gid, back.explicit_uid_gid) == (0, 0, False)
    assert not back.flags & C.SB_EXPLICIT_UID_GID


def test_directory_entries_sort_by_raw_bytes_including_dot_entries(everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    names = [e[0] for e in r.dirents(r.inode(r.root_nid))]
    assert names == sorted(names)
    assert names.index(b"!x") < names.index(b".") < names.index(b"..") < names.index(b"big")


def test_big_directory_spans_blocks_and_lookup_binary_searches(everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    big = r.lookup("/big")
    assert big.size > 10 * C.BLOCK_SIZE
    assert len(r.listdir(big)) == 2100
    assert r.lookup(b"/big/entry-01234").size == 0
    assert r.lookup(b"/big/entry-01232").size == len(b"x1232")  # 1232 % 7 == 0
    with pytest.raises(FileNotFoundError):
        r.lookup(b"/big/entry-99999")


def test_layouts_follow_the_inline_rule(everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    assert r.lookup(b"/dir/link-inline").layout == C.EROFS_LAYOUT_FLAT_INLINE
    assert r.lookup(b"/dir/link-plain").layout == C.EROFS_LAYOUT_FLAT_PLAIN  # 64 + 4090 > 4096
    long = r.lookup(b"/dir/link-long")
    assert long.layout == C.EROFS_LAYOUT_FLAT_INLINE and r.readlink(long) == b"L" * 5000
    assert r.lookup(b"/dir").layout == C.EROFS_LAYOUT_FLAT_INLINE
    assert r.lookup(b"/dev-chr").layout == C.EROFS_LAYOUT_FLAT_PLAIN
    assert r.lookup(b"/dev-chr").i_u == (3 | 1 << 8)
    blk = r.lookup(b"/dev-blk")
    assert blk.rdev == (0x45 | 259 << 8 | 0x12300 << 12) and os.major(blk.rdev) == 259


def test_directory_whose_data_fills_whole_blocks_is_plain() -> None:
    tb = TreeBuilder()
    tb.dir(b"/d")
    # "." + ".." cost 27; 15 entries of 12+243 bytes reach 3852, one of 12+232 makes exactly 4096
    for i in range(15):
        tb.file(b"/d/%s" % (b"%02d" % i + b"a" * 241), b"")
    tb.file(b"/d/" + b"z" * 232, b"")
    r = RafsV6Reader(write_v6(tb.bootstrap()))
    d = r.lookup(b"/d")
    assert d.size == C.BLOCK_SIZE and d.layout == C.EROFS_LAYOUT_FLAT_PLAIN
    assert len(r.listdir(d)) == 16


def test_inodes_reuse_the_free_end_of_a_plain_directory_block() -> None:
    tb = TreeBuilder()
    # "." + ".." (27) + 15 entries of 12+243 + one of 12+232 fill exactly one block: FLAT_PLAIN
    for i in range(15):
        tb.file(b"/%02d" % i + b"a" * 241, b"")
    tb.file(b"/" + b"z" * 232, b"")
    r = RafsV6Reader(write_v6(tb.bootstrap()))
    root = r.inode(r.root_nid)
    assert (root.layout, root.size, r.root_nid) == (C.EROFS_LAYOUT_FLAT_PLAIN, C.BLOCK_SIZE, 128)
    assert root.i_u * C.BLOCK_SIZE == r.meta + 2 * C.BLOCK_SIZE  # data block after the inode's block
    nids = [nid for _, nid, _ in r.listdir(root)]
    # the files fill the rest of the root inode's block, 64 bytes (2 slots) each
    assert nids == [128 + 2 * (k + 1) for k in range(16)]


def test_prefetch_patterns_become_nids() -> None:
    tb = TreeBuilder()
    tb.dir(b"/etc")
    tb.file(b"/etc/conf", b"c")
    tb.file(b"/empty", b"")
    bs = tb.bootstrap(prefetch=[b"/etc/conf", b"/etc/conf/../x", b"relative", b"/empty", b"/etc"])
    r = RafsV6Reader(write_v6(bs))
    # relative lines and lines inside an earlier line's subtree are dropped; empty files never
    # match; "/etc" stays (it is not inside "/etc/conf")
    assert r.prefetch_nids() == [r.lookup(b"/etc/conf").nid, r.lookup(b"/etc").nid]
    assert r._pf[1] == 4 * 3  # one slot per kept pattern: /etc/conf, /empty, /etc


def test_contiguous_multi_chunk_file_advertises_one_extent(everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    multi = r.lookup(b"/dir/multi")
    assert multi.size == 3 * 4096 + 4
    assert multi.i_u == C.V6_CHUNK_FORMAT_INDEXES | (14 - 12)  # next_power_of_two(12292) = 2**14
    assert len(r.chunk_indexes(multi)) == 4
    assert r.lookup(b"/dir/page").i_u == C.V6_CHUNK_FORMAT_INDEXES  # a single chunk: the image chunk size


def test_chunk_table_is_sorted_and_keeps_the_last_file_offset() -> None:
    tb = TreeBuilder()
    tb.file(b"/a", b"A" * 4096 + b"B" * 10)
    tb.file(b"/b", b"B" * 10)  # same chunk as /a's second one, at file offset 0
    bs = tb.bootstrap()
    table = RafsV6Reader(write_v6(bs)).chunk_table()
    assert [(c.digest, c.blob_index) for c in table] == sorted((c.digest, c.blob_index) for c in table)
    shared = [c for c in table if c.digest == blake3.blake3(b"B" * 10).digest()]
    assert len(table) == 2 and shared[0].file_offset == 0


def test_superblock_counts_and_flags(everything: TreeBuilder, everything_image: bytes) -> None:
    r = RafsV6Reader(everything_image)
    paths = sum(1 for _ in everything.bootstrap().walk())
    assert r.inos == paths  # every path counts, hardlinks included
    assert r.blocks == len(everything.blob_bytes(0)) // C.BLOCK_SIZE
    assert r.flags & C.SB_HAS_XATTR and not r.flags & C.SB_INLINED_CHUNK_DIGEST
    assert r.prefetch_nids() == [r.root_nid]
    assert r.root_nid == C.BLOCK_SIZE // C.EROFS_SLOT_SIZE


def test_inlined_chunk_digest_needs_every_blob() -> None:
    both = TreeBuilder(nblobs=2, features=C.BLOB_ALIGNED | C.BLOB_INLINED_CHUNK_DIGEST)
    both.file(b"/a", b"a", blob=0)
    both.file(b"/b", b"b", blob=1)
    assert read_v6(write_v6(both.bootstrap())).flags & C.SB_INLINED_CHUNK_DIGEST
    bs = both.bootstrap()
    bs.blobs[1].features = C.BLOB_ALIGNED
    assert not read_v6(write_v6(bs)).flags & C.SB_INLINED_CHUNK_DIGEST


def test_mapped_blkaddr_follows_2mib_segments() -> None:
    tb = TreeBuilder(nblobs=2)
    tb.file(b"/a", noise(b"a", 3 * 1024 * 1024), blob=0)
    tb.file(b"/b", b"b", blob=1)
    r = RafsV6Reader(write_v6(tb.bootstrap()))
    assert r.blobs[0].mapped_blkaddr == 512  # align(bootstrap size, 2 MiB)
    assert r.blobs[1].mapped_blkaddr == 512 + 1024  # after 3 MiB, rounded up to 4 MiB


def test_empty_tree_without_blobs() -> None:
    bs = Bootstrap(version=6, root=Node(name=b"/", mode=stat.S_IFDIR | 0o755))
    data = write_v6(bs)
    r = RafsV6Reader(data)
    assert (len(data), r.meta, r.root_nid, r.inos, r.blocks) == (2 * C.BLOCK_SIZE, 0, 128, 1, 0)
    assert read_v6(data).root.children == []


def test_writer_rejects_what_the_format_cannot_hold() -> None:
    for bad in (b"a/b", b".", b"..", b"", b"x" * 256, b"nul\0"):
        tb = TreeBuilder()
        tb.file(b"/ok", b"")
        tb.root.children[0].name = bad
        with pytest.raises(FormatError):
            write_v6(tb.bootstrap())
    tb = TreeBuilder()
    tb.file(b"/f", b"x", xattrs={b"os2.name": b"v"})
    with pytest.raises(FormatError):
        write_v6(tb.bootstrap())


# --------------------------------------------------------------------------------------
# (3) erofs-utils accept written images
# --------------------------------------------------------------------------------------
def _fsck_extract(image: Path, blobs: list[Path], dest: Path) -> None:
    tool = _need_tool("fsck.erofs")
    args = [tool, *(f"--device={b}" for b in blobs), f"--extract={dest}", str(image)]
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("nblobs", [1, 2])
def test_fsck_erofs_extracts_written_images(tmp_path: Path, nblobs: int) -> None:
    tb = TreeBuilder(nblobs=nblobs)
    populate_everything(tb, long_symlink=False)  # Linux refuses symlink targets >= 4096 bytes
    if nblobs == 2:
        tb.file(b"/second-blob", b"0123456789" * 2000, blob=1)
    bs = tb.bootstrap(prefetch=[b"/"])
    image = tmp_path / "image.boot"
    image.write_bytes(write_v6(bs))
    blobs = tb.write_blobs(tmp_path)
    dump = subprocess.run([_need_tool("dump.erofs"), *(f"--device={b}" for b in blobs), "-s", "-S", str(image)],
                          capture_output=True, text=True)
    assert dump.returncode == 0 and "chunked_file device_table" in dump.stdout, dump.stderr
    reader = RafsV6Reader(image.read_bytes())
    for path in ("/dir/multi", "/dir", "/dev-fifo", "/big", "/dir/link-plain"):
        ino = reader.lookup(path)
        assert _dump_inode(_need_tool("dump.erofs"), blobs, image, path) == {
            "NID": ino.nid, "Links": ino.nlink, "Layout": ino.layout, "Size": ino.size, "Xattr size": ino.xattr_size}
    dest = tmp_path / "out"
    _fsck_extract(image, blobs, dest)
    for path, node in bs.walk():
        on_disk = Path(os.fsdecode(bytes(dest) + path)) if path != b"/" else dest
        st_ = os.lstat(on_disk)
        assert stat.S_IFMT(st_.st_mode) == stat.S_IFMT(node.mode), path
        if node.is_reg():
            assert on_disk.read_bytes() == tb.content[path], path
        elif node.is_symlink():
            assert os.readlink(os.fsencode(on_disk)) == node.symlink
        elif stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
            assert st_.st_rdev == node.rdev, path
        elif node.is_dir():
            assert sorted(os.listdir(os.fsencode(on_disk))) == sorted(c.name for c in node.children)


# --------------------------------------------------------------------------------------
# (4) The kernel mounts written images
# --------------------------------------------------------------------------------------
def _user_xattrs_visible(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


@pytest.mark.root
@pytest.mark.parametrize(("nblobs", "mapped_blkaddr"), [(1, "aligned"), (2, "aligned"), (2, "zero")])
def test_kernel_mount_shows_the_model(tmp_path: Path, nblobs: int, mapped_blkaddr: str) -> None:
    """Both mapped_blkaddr choices mount with one device= per blob."""
    tb = TreeBuilder(nblobs=nblobs)
    populate_everything(tb, long_symlink=False)
    if nblobs == 2:
        tb.file(b"/second-blob", bytes(range(251)) * 100, blob=1)
        tb.file(b"/dir/second-too", b"q" * 9000, blob=1)
    bs = tb.bootstrap(prefetch=[b"/"])
    image = tmp_path / "image.boot"
    image.write_bytes(write_v6(bs, mapped_blkaddr=mapped_blkaddr))
    blobs = tb.write_blobs(tmp_path)
    nlinks = expected_nlink(bs)
    with kernel_mount(image, blobs, tmp_path / "mnt") as mnt:
        inodes: dict[int, set[bytes]] = {}
        for path, node in bs.walk():
            p = os.fsencode(mnt) + (path if path != b"/" else b"")
            st_ = os.lstat(p)
            assert st_.st_mode == node.mode, path
            assert (st_.st_uid, st_.st_gid) == (node.uid, node.gid), path
            assert st_.st_mtime_ns == node.mtime * 10**9 + node.mtime_nsec, path
            assert st_.st_nlink == nlinks[path], path
            if not node.is_dir():
                assert st_.st_size == node.size, path
                inodes.setdefault(st_.st_ino, set()).add(path)
            if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
                assert st_.st_rdev == node.rdev, path
            if node.is_symlink():
                assert os.readlink(p) == node.symlink
            if node.is_reg():
                assert read_chunkwise(p, tb.chunk_size) == tb.content[path], path
            expected = {k: v for k, v in node.xattrs.items()
                        if _user_xattrs_visible(node.mode) or not k.startswith(b"user.")}
            names = os.listxattr(p, follow_symlinks=False)
            got = {os.fsencode(k): os.getxattr(p, k, follow_symlinks=False) for k in names}
            assert got == expected, path
        hard = {b"/dir/regular", b"/dir/hard1", b"/other/hard2"}
        assert hard in inodes.values()


# --------------------------------------------------------------------------------------
# (5) Hostile input
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_image() -> bytes:
    tb = TreeBuilder()
    tb.dir(b"/a")
    tb.dir(b"/a/b")
    tb.file(b"/a/b/f", b"f" * 5000, xattrs={b"user.k": b"v"})
    tb.file(b"/g", b"g")
    tb.symlink(b"/s", b"target")
    tb.special(b"/c", stat.S_IFCHR, rdev=os.makedev(4, 5))
    return write_v6(tb.bootstrap(prefetch=[b"/"]))


def _dirent_pos(data: bytes, dir_path: bytes, name: bytes) -> int:
    r = RafsV6Reader(data)
    ino = r.lookup(dir_path)
    for off, length in r._data_extents(ino):
        count = struct.unpack_from("<H", data, off + 8)[0] // C.V6_DIRENT_SIZE
        for j in range(count):
            pos = off + j * C.V6_DIRENT_SIZE
            start = struct.unpack_from("<H", data, pos + 8)[0]
            if data[off + start:off + start + len(name)] == name:
                return pos
    raise AssertionError(name)


def _patch(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, pos, value)
    return bytes(buf)


def _hostile_cases(img: bytes) -> dict[str, bytes]:
    r = RafsV6Reader(img)
    f = r.lookup(b"/a/b/f")
    a = r.lookup(b"/a")
    return {
        "truncated to a non-block size": img[:5000],
        "truncated by a block": img[:-C.BLOCK_SIZE],
        "bad magic": _patch(img, C.EROFS_SUPER_OFFSET, "<I", 0x12345678),
        "root nid out of range": _patch(img, C.EROFS_SUPER_OFFSET + 14, "<H", 0xFFFF),
        "dirent nid out of range": _patch(img, _dirent_pos(img, b"/", b"g"), "<Q", 1 << 40),
        "directory cycle": _patch(_patch(img, _dirent_pos(img, b"/a/b", b"f"), "<Q", a.nid),
                                  _dirent_pos(img, b"/a/b", b"f") + 10, "<B", C.EROFS_FT_DIR),
        "nameoff overflow": _patch(img, _dirent_pos(img, b"/", b"s") + 8, "<H", 0xFFFF),
        "huge file i_size": _patch(img, f.offset + 8, "<Q", 1 << 62),
        "huge directory i_size": _patch(img, a.offset + 8, "<Q", 1 << 62),
        "chunk index names a nonexistent blob": _patch(img, (f.tail_offset + 7) // 8 * 8 + 2, "<B", 7),
        "prefetch nid not in the tree": _patch(img, RafsV6Reader(img)._pf[0], "<I", 3),
    }


@pytest.mark.parametrize("case", [
    "truncated to a non-block size", "truncated by a block", "bad magic", "root nid out of range",
    "dirent nid out of range", "directory cycle", "nameoff overflow", "huge file i_size",
    "huge directory i_size", "chunk index names a nonexistent blob", "prefetch nid not in the tree",
])
def test_hostile_bootstrap_is_a_format_error(small_image: bytes, case: str) -> None:
    bad = _hostile_cases(small_image)[case]
    with pytest.raises(FormatError) as info:
        read_v6(bad)
    assert "\n" not in str(info.value)


def test_names_with_slash_or_dot_children_are_rejected(small_image: bytes) -> None:
    pos = _dirent_pos(small_image, b"/", b"g")
    start = struct.unpack_from("<H", small_image, pos + 8)[0]
    block = pos - pos % C.BLOCK_SIZE
    slash = bytearray(small_image)
    slash[block + start:block + start + 1] = b"/"
    with pytest.raises(FormatError):
        read_v6(bytes(slash))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_images_only_raise_format_error(small_image: bytes, data: st.DataObject) -> None:
    buf = bytearray(small_image)
    # bias mutations towards the metadata (superblock, tables, inodes, dirents)
    hot = [(C.EROFS_SUPER_OFFSET, C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE), (4096, 4096 + 256),
           (RafsV6Reader(small_image).meta + 4096, RafsV6Reader(small_image).meta + 8192), (0, len(buf))]
    for _ in range(data.draw(st.integers(1, 8))):
        lo, hi = data.draw(st.sampled_from(hot))
        pos = data.draw(st.integers(lo, hi - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        read_v6(bytes(buf))
    except FormatError:
        pass
