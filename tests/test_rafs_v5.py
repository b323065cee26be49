"""RAFS v5 bootstraps: the reader lists real nydus-image images, the writer regenerates them
byte for byte, every entry kind survives a round trip, and hostile bytes fail cleanly."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.bootstrap import detect_version, read_bootstrap, write_bootstrap
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node
from nydusify_core.rafs.v5 import V5Reader, digest_hasher, read_v5, write_v5

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nydus-v2.2" / "repeatable"
IMAGES = ["sha256-nocompress-repeatable", "blake3-lz4_block-non_repeatable"]
BLOB_ID = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"nydus fixtures not found at {FIXTURES}")


# --- helpers -----------------------------------------------------------------------------


def read_file_data(bs: Bootstrap, node: Node, blob_dir: Path) -> bytes:
    """A file's content, read chunk by chunk from the blob files, each chunk digest verified."""
    out = []
    for ch in node.chunks:
        blob = bs.blobs[ch.blob_index]
        with open(blob_dir / blob.blob_id, "rb") as f:
            f.seek(ch.compressed_offset)
            raw = f.read(ch.compressed_size)
        assert len(raw) == ch.compressed_size
        if ch.compressed:
            if blob.compressor == "zstd":
                import zstandard

                raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=ch.uncompressed_size)
            else:
                import lz4.block

                raw = lz4.block.decompress(raw, uncompressed_size=ch.uncompressed_size)
        assert len(raw) == ch.uncompressed_size
        assert digest_hasher(bs.digester)(raw).digest() == ch.digest
        out.append(raw)
    return b"".join(out)


def tree_listing(node: Node) -> dict:
    """The node in the JSON shape of `tree -J` used by the fixtures' .result files."""
    name = node.name.decode()
    if node.is_dir():
        return {"type": "directory", "name": name, "contents": [tree_listing(c) for c in node.children]}
    if node.is_symlink():
        return {"type": "link", "name": name, "target": node.symlink.decode(), "contents": []}
    return {"type": "file", "name": name}


def parse_result(path: Path) -> tuple[dict, dict[str, str]]:
    text = path.read_text()
    tree_part, _, md5_part = text.partition("\n]\n")
    listing = json.loads(tree_part + "\n]")
    md5s = {}
    for line in md5_part.splitlines():
        if line.strip():
            digest, file_path = line.split(None, 1)
            md5s[file_path] = digest
    return listing[0], md5s


def chunk(i: int, blob_index: int = 0, size: int = 4096) -> ChunkInfo:
    return ChunkInfo(
        digest=hashlib.sha256(b"chunk%d" % i).digest(), blob_index=blob_index, flags=C.CHUNK_COMPRESSED,
        compressed_offset=1000 * i, compressed_size=900, uncompressed_offset=4096 * i,
        uncompressed_size=size, file_offset=0, index=i,
    )


def d(name: bytes, *children: Node, mode: int = 0o755, **kw) -> Node:
    return Node(name=name, mode=stat.S_IFDIR | mode, children=list(children), mtime=1700000000, **kw)


def f(name: bytes, chunks: list[ChunkInfo] = (), size: int | None = None, mode: int = 0o644, **kw) -> Node:
    chunks = list(chunks)
    if size is None:
        size = sum(c.uncompressed_size for c in chunks)
    return Node(name=name, mode=stat.S_IFREG | mode, size=size, chunks=chunks, mtime=1700000001, mtime_nsec=5, **kw)


@pytest.fixture
def every_kind() -> Bootstrap:
    """A tree holding every entry kind the format knows."""
    cs = 0x1000
    multi = [chunk(i, blob_index=i % 2) for i in range(1, 4)]
    for k, ch in enumerate(multi):
        ch.file_offset = k * cs
    multi[-1].uncompressed_size = 100
    root = d(
        b"/",
        d(
            b"files",
            f(b"regular", [chunk(0)], uid=1000, gid=1000, xattrs={b"user.comment": b"hello", b"trusted.x": b""}),
            f(b"empty"),
            f(b"multi", multi, size=2 * cs + 100),
            f(b"link-a", [chunk(7)], ino=77),
            f(b"link-b", [chunk(7)], ino=77),
            f(b"x" * 255),
            f("grüße-日本".encode()),
            f(b"\xff\xfe-not-utf8"),
            f(b"!before-dot"),
        ),
        d(
            b"special",
            Node(name=b"fifo", mode=stat.S_IFIFO | 0o600),
            Node(name=b"chr", mode=stat.S_IFCHR | 0o666, rdev=(1 << 8) | 3),
            Node(name=b"blk", mode=stat.S_IFBLK | 0o660, rdev=(8 << 8) | 1),
            Node(name=b"sock", mode=stat.S_IFSOCK | 0o755),
            Node(name=b"sym", mode=stat.S_IFLNK | 0o777, symlink=b"../files/regular", size=16),
            Node(name=b"longsym", mode=stat.S_IFLNK | 0o777, symlink=b"a/" * 3000, size=6000,
                 xattrs={b"security.selinux": b"system_u:object_r:x:s0\0"}),
            f(b"link-c", [chunk(7)], ino=77),
            d(b"empty-dir", xattrs={b"system.posix_acl_default": b"\x02\0\0\0"}),
        ),
    )
    blobs = [
        BlobInfo(blob_id="a" * 64, chunk_size=cs, chunk_count=5, compressor="zstd", digester="sha256",
                 features=C.BLOB_CAP_TAR_TOC, compressed_size=5000, uncompressed_size=20480),
        BlobInfo(blob_id="b" * 64, chunk_size=cs, chunk_count=2, compressor="zstd", digester="sha256",
                 compressed_size=123, uncompressed_size=8192, readahead_size=4096),
    ]
    return Bootstrap(version=5, root=root, blobs=blobs, chunk_size=cs, compressor="zstd", digester="sha256",
                     explicit_uid_gid=True, prefetch=[b"/files/multi", b"/special"])


def by_path(bs: Bootstrap) -> dict[bytes, Node]:
    return dict(bs.walk())


# --- real images -------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("image", IMAGES)
def test_fixture_tree_matches_result_listing(image: str) -> None:
    bs = read_v5((FIXTURES / image).read_bytes())
    expected, _ = parse_result(FIXTURES / f"{image}.result")
    listing = tree_listing(bs.root)
    listing["name"] = ""  # `tree` printed the root as ""
    assert listing == expected


@needs_fixtures
@pytest.mark.parametrize("image", IMAGES)
def test_fixture_file_contents_match_result_md5(image: str) -> None:
    bs = read_v5((FIXTURES / image).read_bytes())
    _, md5s = parse_result(FIXTURES / f"{image}.result")
    got = {
        path.decode(): hashlib.md5(read_file_data(bs, node, FIXTURES / "blobs")).hexdigest()
        for path, node in bs.walk()
        if node.is_reg()
    }
    assert got == md5s


@needs_fixtures
@pytest.mark.parametrize("image", IMAGES)
def test_fixture_superblock_and_blob_table(image: str) -> None:
    bs = read_v5((FIXTURES / image).read_bytes())
    assert (bs.chunk_size, bs.compressor, bs.explicit_uid_gid) == (0x100000, "none", False)
    assert bs.digester == ("sha256" if image.startswith("sha256") else "blake3")
    [blob] = bs.blobs
    assert (blob.blob_id, blob.chunk_count) == (BLOB_ID, 23)
    assert blob.compressed_size == blob.uncompressed_size == (FIXTURES / "blobs" / BLOB_ID).stat().st_size


@needs_fixtures
@pytest.mark.parametrize("image", IMAGES)
def test_fixture_hardlinks_share_first_path(image: str) -> None:
    nodes = by_path(read_v5((FIXTURES / image).read_bytes()))
    group = [nodes[p] for p in (b"/hardlink-test/foo", b"/hardlink-test/test.sh", b"/normal-file-test/test.sh")]
    assert {n.ino for n in group} == {5} and {n.nlink for n in group} == {3}
    assert [n.hardlink_to for n in group] == [None, b"/hardlink-test/foo", b"/hardlink-test/foo"]


@needs_fixtures
@pytest.mark.parametrize("image", IMAGES)
def test_fixture_regenerated_byte_for_byte(image: str) -> None:
    data = (FIXTURES / image).read_bytes()
    assert write_v5(read_v5(data)) == data


@needs_fixtures
def test_dispatch_reads_and_writes_v5() -> None:
    data = (FIXTURES / IMAGES[0]).read_bytes()
    assert detect_version(data) == 5
    bs = read_bootstrap(data)
    assert bs.version == 5
    assert write_bootstrap(bs) == data


V6_FIXTURE = FIXTURES.parent / "bootstrap" / "rafs-v6-2.2.boot"


@pytest.mark.skipif(not V6_FIXTURE.is_file(), reason=f"nydus fixture not found at {V6_FIXTURE}")
def test_dispatch_reads_v6_by_erofs_magic() -> None:
    data = V6_FIXTURE.read_bytes()
    assert detect_version(data) == 6
    bs = read_bootstrap(data)
    assert bs.version == 6 and sum(1 for _, n in bs.walk() if n.is_reg()) == 2


def test_detect_version_rejects_unknown_bytes() -> None:
    with pytest.raises(FormatError):
        detect_version(bytes(4096))


@needs_fixtures
def test_lazy_reader_looks_up_paths() -> None:
    reader = V5Reader((FIXTURES / IMAGES[0]).read_bytes())
    rec = reader.lookup(b"/symlink-test/root-2")
    assert rec is not None and reader.symlink(rec) == b"/foobar"
    assert reader.lookup(b"/symlink-test/nope") is None
    layer = reader.lookup(b"/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar")
    assert layer is not None and len(reader.chunks(layer)) == 2


# --- round trips -------------------------------------------------------------------------


def comparable(node: Node) -> tuple:
    size = 0 if node.is_dir() else node.size
    return (node.mode, node.uid, node.gid, node.mtime, node.mtime_nsec, size, node.rdev, node.symlink,
            node.xattrs, node.chunks)


def test_every_entry_kind_round_trips(every_kind: Bootstrap) -> None:
    data = write_v5(every_kind)
    back = read_v5(data)
    want, got = by_path(every_kind), by_path(back)
    assert sorted(got) == sorted(want)
    for path, node in want.items():
        assert comparable(got[path]) == comparable(node), path
    assert back.blobs == every_kind.blobs
    assert (back.chunk_size, back.compressor, back.digester, back.explicit_uid_gid) == (0x1000, "zstd", "sha256", True)
    assert back.prefetch == [b"/files/multi", b"/special"]
    assert write_v5(back) == data


def test_hardlink_group_shares_ino_and_nlink(every_kind: Bootstrap) -> None:
    got = by_path(read_v5(write_v5(every_kind)))
    links = [got[b"/files/link-a"], got[b"/files/link-b"], got[b"/special/link-c"]]
    assert len({n.ino for n in links}) == 1
    assert [n.nlink for n in links] == [3, 3, 3]
    assert [n.hardlink_to for n in links] == [None, b"/files/link-a", b"/files/link-a"]
    assert got[b"/files/regular"].nlink == 1


def test_directory_sizes_and_nlink_are_derived(every_kind: Bootstrap) -> None:
    got = by_path(read_v5(write_v5(every_kind)))
    assert got[b"/special/empty-dir"].size == 4096
    assert got[b"/files"].size == 4096
    assert got[b"/"].nlink == 4 and got[b"/special"].nlink == 3


def test_hardlink_to_groups_nodes_without_ino() -> None:
    bs = Bootstrap(version=5, root=d(b"/", f(b"a", [chunk(1)]), f(b"b", [chunk(1)], hardlink_to=b"/a")),
                   blobs=[BlobInfo("c" * 64)], digester="sha256")
    got = by_path(read_v5(write_v5(bs)))
    assert got[b"/a"].ino == got[b"/b"].ino and got[b"/b"].nlink == 2


def test_tar_options_set_hardlink_flag_and_no_rdev(every_kind: Bootstrap) -> None:
    data = write_v5(every_kind, hardlink_flag=True, tar_rdev=True)
    reader = V5Reader(data)
    flags = {reader.name(rec): rec.flags for _, rec, _, _ in reader.walk()}
    rdevs = {reader.name(rec): rec.rdev for _, rec, _, _ in reader.walk()}
    assert not flags[b"link-a"] & C.V5_INODE_HARDLINK
    assert flags[b"link-b"] & C.V5_INODE_HARDLINK and flags[b"link-c"] & C.V5_INODE_HARDLINK
    assert rdevs[b"regular"] == rdevs[b"fifo"] == 0xFFFFFFFF
    assert rdevs[b"chr"] == (1 << 8) | 3
    assert by_path(read_v5(data))[b"/special/fifo"].rdev == 0


def test_directory_builder_writes_rdev_of_every_type(every_kind: Bootstrap) -> None:
    reader = V5Reader(write_v5(every_kind))
    rdevs = {reader.name(rec): rec.rdev for _, rec, _, _ in reader.walk()}
    assert rdevs[b"regular"] == 0 and rdevs[b"blk"] == (8 << 8) | 1


def test_repeatable_image_zeroes_uid_gid(every_kind: Bootstrap) -> None:
    every_kind.explicit_uid_gid = False
    back = read_v5(write_v5(every_kind))
    assert by_path(back)[b"/files/regular"].uid == 0
    assert not back.flags & C.SB_EXPLICIT_UID_GID


def test_superblock_flags_and_inode_count(every_kind: Bootstrap) -> None:
    reader = V5Reader(write_v5(every_kind))
    sb = reader.superblock
    assert sb.flags == C.SB_COMPRESSION_ZSTD | C.SB_HASH_SHA256 | C.SB_EXPLICIT_UID_GID | C.SB_HAS_XATTR
    nodes = sum(1 for _ in every_kind.walk())
    assert sb.inode_table_entries == nodes
    assert sb.inodes_count == nodes - 1 - 2  # root excluded, hardlink group counted once


def test_blake3_image_digests_match_blake3(every_kind: Bootstrap) -> None:
    every_kind.digester = "blake3"
    reader = V5Reader(write_v5(every_kind))
    rec = reader.lookup(b"/special/sym")
    import blake3

    assert rec.digest == blake3.blake3(b"../files/regular").digest()


def test_writer_rejects_unrepresentable_trees() -> None:
    for bad in (b"a/b", b"", b"..", b"nul\0"):
        with pytest.raises(FormatError):
            write_v5(Bootstrap(version=5, root=d(b"/", f(bad))))
    with pytest.raises(FormatError):
        write_v5(Bootstrap(version=5, root=d(b"/", f(b"a"), f(b"a"))))
    with pytest.raises(FormatError):
        write_v5(Bootstrap(version=5, root=d(b"/", f(b"a", [chunk(1, blob_index=3)]))))
    with pytest.raises(FormatError):
        write_v5(Bootstrap(version=5, root=d(b"/", f(b"a", xattrs={b"bogus.name": b"1"}))))


def chain(depth: int) -> Bootstrap:
    root = d(b"/")
    cur = root
    for _ in range(depth):
        cur.children = [d(b"d")]
        cur = cur.children[0]
    return Bootstrap(version=5, root=root)


def test_deep_tree_round_trips_without_recursion() -> None:
    back = read_v5(write_v5(chain(2000)))
    assert sum(1 for _ in back.walk()) == 2001


def test_too_deep_tree_is_refused() -> None:
    with pytest.raises(FormatError, match="deeper"):
        write_v5(chain(C.V5_MAX_DEPTH + 1))


# --- hostile input -----------------------------------------------------------------------


@pytest.fixture
def image(every_kind: Bootstrap) -> bytes:
    return write_v5(every_kind)


def patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


def inode_offset(data: bytes, index: int) -> int:
    return struct.unpack_from("<I", data, C.V5_SUPERBLOCK_SIZE + 4 * (index - 1))[0] * 8


INODE_CHILD_INDEX, INODE_CHILD_COUNT, INODE_NAME_SIZE = 92, 96, 100


@pytest.mark.parametrize("size", [0, 100, 8191, 8200])
def test_truncated_image_is_rejected(image: bytes, size: int) -> None:
    with pytest.raises(FormatError):
        read_v5(image[:size])


def test_truncated_tail_is_rejected(image: bytes) -> None:
    with pytest.raises(FormatError):
        read_v5(image[:-1])


def test_bad_magic_is_rejected(image: bytes) -> None:
    with pytest.raises(FormatError, match="magic"):
        read_v5(patch(image, 0, "<I", 0x12345678))


def test_inode_table_entry_out_of_range(image: bytes) -> None:
    with pytest.raises(FormatError, match="inode table entry"):
        read_v5(patch(image, C.V5_SUPERBLOCK_SIZE + 4, "<I", 0xFFFFFFFF))


def test_inode_table_entry_into_superblock(image: bytes) -> None:
    with pytest.raises(FormatError):
        read_v5(patch(image, C.V5_SUPERBLOCK_SIZE + 4, "<I", 1))


def test_huge_inode_table_count(image: bytes) -> None:
    with pytest.raises(FormatError, match="inode table"):
        read_v5(patch(image, 56, "<I", 0xFFFFFFFF))


def test_child_range_out_of_range(image: bytes) -> None:
    root = inode_offset(image, 1)
    with pytest.raises(FormatError, match="children"):
        read_v5(patch(image, root + INODE_CHILD_COUNT, "<I", 0xFFFFFFFF))


def test_directory_cycle_is_rejected(image: bytes) -> None:
    sub = inode_offset(image, 2)  # /files: make its children the root's range
    with pytest.raises(FormatError, match="reached twice"):
        read_v5(patch(image, sub + INODE_CHILD_INDEX, "<II", 1, 3))


def test_name_overflow_is_rejected(image: bytes) -> None:
    last = inode_offset(image, V5Reader(image).inode_count)
    with pytest.raises(FormatError):
        read_v5(patch(image, last + INODE_NAME_SIZE, "<H", 0xFFFF))


def test_name_with_slash_is_rejected(image: bytes) -> None:
    sub = inode_offset(image, 2)
    buf = bytearray(image)
    buf[sub + 128] = ord("/")
    with pytest.raises(FormatError, match="invalid name"):
        read_v5(bytes(buf))


def test_chunk_blob_index_out_of_range(image: bytes) -> None:
    rec = V5Reader(image).lookup(b"/files/empty")  # next to a file with one chunk
    reader = V5Reader(image)
    regular = reader.lookup(b"/files/regular")
    start = regular.xattr_offset + reader._xattr_block_size(regular)
    assert rec is not None
    with pytest.raises(FormatError, match="blob"):
        read_v5(patch(image, start + 32, "<I", 9))


def test_unknown_superblock_flags_are_rejected(image: bytes) -> None:
    with pytest.raises(FormatError, match="flags"):
        read_v5(patch(image, 16, "<Q", 1 << 40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_fuzzed_images_fail_only_with_format_error(image: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    buf = bytearray(image)
    # Bias mutations towards the superblock, tables and inode headers where they matter.
    for pos, value in edits:
        target = pos % len(buf) if pos % 3 else C.V5_SUPERBLOCK_SIZE + pos % (len(buf) - C.V5_SUPERBLOCK_SIZE)
        if pos % 5 == 0:
            target = pos % 96
        buf[target] = value
    if cut is not None:
        del buf[cut % (len(buf) + 1) :]
    try:
        read_v5(bytes(buf))
    except FormatError:
        pass
