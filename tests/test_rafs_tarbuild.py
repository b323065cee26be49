"""Tar builder (`nydus-image create --type tar-rafs`): a layer tar in, a blob with inline
bootstrap and TOC out, file data streamed chunk by chunk in tar entry order.

Layers are written with Python's `tarfile` (GNU and PAX) or taken from the upstream
fixtures; results are judged by reading the blob alone, by the bootstrap's tree and by
unpacking the image and comparing it with what GNU tar extracts from the same layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from nydusify_core.errors import FormatError, UsageError
from nydusify_core.oci.layertar import iter_tar_entries
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.rafs.model import Bootstrap
from nydusify_core.rafs.tarbuild import TarBuildResult, build_tar_layer, inherit_implied_dirs
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir
from nydusify_core.rafs.v5 import V5Reader
from nydusify_core.testing.trees import diff_trees, snapshot

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nydus-v2.2"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"nydus fixtures not found at {FIXTURES}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (device nodes, owners, trusted.* xattrs)")

MiB = 1 << 20
T0 = 1_600_000_000


# -- layer tars ------------------------------------------------------------------------------


@dataclass
class Member:
    info: tarfile.TarInfo
    data: bytes | None = None


def _info(name: bytes | str, kind: bytes, *, mode: int, uid: int = 0, gid: int = 0, mtime: int = T0,
          xattrs: dict[bytes, bytes] | None = None, pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(os.fsdecode(name))
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    headers = dict(pax or {})
    for key, value in (xattrs or {}).items():
        headers["SCHILY.xattr." + os.fsdecode(key)] = os.fsdecode(value)
    info.pax_headers = headers
    return info


def reg(name, data: bytes = b"", mode: int = 0o644, **kw) -> Member:
    info = _info(name, tarfile.REGTYPE, mode=mode, **kw)
    info.size = len(data)
    return Member(info, data)


def dir_(name, mode: int = 0o755, **kw) -> Member:
    return Member(_info(name, tarfile.DIRTYPE, mode=mode, **kw))


def sym(name, target: bytes | str, **kw) -> Member:
    info = _info(name, tarfile.SYMTYPE, mode=0o777, **kw)
    info.linkname = os.fsdecode(target)
    return Member(info)


def hard(name, target: bytes | str, **kw) -> Member:
    info = _info(name, tarfile.LNKTYPE, mode=kw.pop("mode", 0o644), **kw)
    info.linkname = os.fsdecode(target)
    return Member(info)


def dev(name, kind: bytes, major: int, minor: int, mode: int = 0o600, **kw) -> Member:
    info = _info(name, kind, mode=mode, **kw)
    info.devmajor, info.devminor = major, minor
    return Member(info)


def make_tar(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.data is not None else None)
    return buf.getvalue()


def options(fs_version: int = 6, **kw) -> BuildOptions:
    """What nydusify passes per layer (§6.6)."""
    base = dict(fs_version=fs_version, blob_inline_meta=True, blob_toc=fs_version == 6, whiteout_spec="none",
                prefetch=("/",))
    base.update(kw)
    return BuildOptions(**base)


def build(tmp_path: Path, tar: bytes, *, name: str = "out", label: str = "test-layer", keep_mtime_nsec: bool = False,
          **kw) -> TarBuildResult:
    out = tmp_path / name
    out.mkdir(parents=True, exist_ok=True)
    return build_tar_layer(
        iter_tar_entries(io.BytesIO(tar), layer=label), options(**kw), out / "blob", out / "bootstrap", label=label,
        keep_mtime_nsec=keep_mtime_nsec,
    )


def tree_of(bs: Bootstrap) -> dict[bytes, object]:
    return {path: node for path, node in bs.walk()}


def file_bytes(result: TarBuildResult, path: bytes) -> bytes:
    node = tree_of(result.bootstrap)[path]
    with open(result.blob_path, "rb") as f:
        reader = BlobReader(f, result.bootstrap.blobs[0] if result.bootstrap.blobs else None)
        return b"".join(reader.read_chunk(c) for c in node.chunks)


def unpack(result: TarBuildResult, dest: Path) -> Path:
    bs = read_bootstrap(result.bootstrap_path.read_bytes())
    opener, close = blob_dir_opener(result.blob_path.parent, result.blob_path)
    try:
        unpack_to_dir(bs, opener, dest)
    finally:
        close()
    return dest


def gnu_extract(tar: bytes, dest: Path) -> Path:
    dest.mkdir(parents=True)
    src = dest.parent / (dest.name + ".tar")
    src.write_bytes(tar)
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-owner", "-p", "-xf", src,
                    "-C", dest], check=True)
    # GNU tar creates some links and symlinks after restoring directory times; put them back
    with tarfile.open(src) as tar:
        for member in reversed(tar.getmembers()):
            if member.isdir():
                path = os.path.join(os.fsencode(dest), os.fsencode(member.name))
                os.utime(path, ns=(int(member.mtime * 10**9),) * 2, follow_symlinks=False)
    return dest


def noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# -- a layer with every kind of entry -----------------------------------------------------------


def rich_members() -> list[Member]:
    long_dir = b"/".join([b"d" * 60, b"e" * 60, b"f" * 60])
    return [
        dir_("./", mode=0o755, mtime=T0 - 10),
        dir_("etc", mode=0o750, uid=10, gid=20, xattrs={b"user.dir": b"yes"}),
        reg("etc/empty", b""),
        reg("etc/one-byte", b"x", mode=0o600, uid=1000, gid=2000),
        reg("etc/page", noise(1, 4096), mode=0o4755),
        reg("etc/page-minus-one", noise(2, 4095), mode=0o2755),
        reg("etc/multi-chunk", noise(3, 2 * MiB + 17), xattrs={b"user.bin": b"\x00\xff\x80", b"trusted.t": b"1",
                                                               b"security.s": b"\x01\x02"}),
        reg("etc/compressible", b"abc" * 300_000, mtime=T0 + 5),
        hard("etc/hard1", "etc/one-byte"),
        hard("hard2", "etc/hard1"),
        sym("etc/link", "one-byte"),
        sym("abs-link", "/" + "t" * 4000),
        dir_("tmp", mode=0o1777),
        dev("dev-null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        dev("dev-sda", tarfile.BLKTYPE, 8, 1),
        dev("dev-big", tarfile.CHRTYPE, 300, 70000),
        Member(_info("fifo", tarfile.FIFOTYPE, mode=0o644)),
        dir_(long_dir),
        reg(long_dir + b"/" + b"n" * 120, b"long name\n"),
        reg(b"caf\xe9-\xff.bin", b"not utf-8\n"),
        reg("later/parent/implied", b"parents of this file have no entries\n"),
        reg(".wh.removed-below", b""),
        reg("opaque/.wh..wh..opq", b""),
    ]


BY_DESIGN = ("dir:size",)


@needs_root
@pytest.mark.parametrize("fs_version", [5, 6])
@pytest.mark.parametrize("compressor", ["none", "lz4_block", "zstd"])
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_unpacked_image_is_the_tree_gnu_tar_extracts(tmp_path: Path, fs_version: int, compressor: str, fmt: int) -> None:
    tar = make_tar(rich_members(), fmt)
    result = build(tmp_path, tar, fs_version=fs_version, compressor=compressor)
    expected = snapshot(gnu_extract(tar, tmp_path / "expected"))
    got = snapshot(unpack(result, tmp_path / "got"))
    # parents missing from the tar: GNU tar gives them "now", nydus mtime 0
    assert not diff_trees(expected, got, ignore=BY_DESIGN, ignore_paths={p: ("mtime",) for p in result.implied_dirs})
    assert sorted(result.implied_dirs) == [b"/" + b"d" * 60, b"/" + b"d" * 60 + b"/" + b"e" * 60, b"/later",
                                           b"/later/parent", b"/opaque"]


def test_blob_sha256_is_the_reported_digest_and_the_blob_describes_itself(tmp_path: Path) -> None:
    tar = make_tar(rich_members())
    result = build(tmp_path, tar)
    blob = result.blob_path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == result.blob_digest
    assert result.blob_size == len(blob) and result.has_data
    with open(result.blob_path, "rb") as f:
        reader = BlobReader(f)  # no bootstrap: everything comes from the blob
        assert [e.name for e in reader.toc()] == [C.ENTRY_BLOB_DATA, C.ENTRY_BLOB_META, C.ENTRY_BLOB_META_HEADER,
                                                   C.ENTRY_BLOB_DIGEST, C.ENTRY_BOOTSTRAP]
        inline = reader.inline_bootstrap()
        assert [b.blob_id for b in inline.blobs] == [C.INLINE_BLOB_ID_PLACEHOLDER]
        assert reader.verify() == result.chunk_count
        digests = reader.chunk_digests()
    # the tar-builder layout of §6.1 (d): each section's 512-byte header follows its data
    names = [s.name for s in BlobReader(io.BytesIO(blob)).sections()]
    assert names == [C.ENTRY_BLOB_DATA, C.ENTRY_BLOB_META, C.ENTRY_BLOB_DIGEST, C.ENTRY_BOOTSTRAP, C.ENTRY_TOC]
    own = result.bootstrap.blobs[0]
    assert own.blob_id == result.blob_digest and own.compressed_size == len(blob)
    assert own.features & (C.BLOB_INLINED_FS_META | C.BLOB_HAS_TOC | C.BLOB_INLINED_CHUNK_DIGEST | C.BLOB_ALIGNED)
    separate = read_bootstrap(result.bootstrap_path.read_bytes())

    def shape(bs: Bootstrap) -> dict:
        return {p: (n.mode, n.size, n.mtime, n.xattrs, [c.digest for c in n.chunks]) for p, n in bs.walk()}

    assert shape(inline) == shape(separate)  # the same tree; only the blob's id and size differ
    assert len(digests) == result.chunk_count
    assert set(digests) == {c.digest for _, n in separate.walk() for c in n.chunks}


def test_separate_bootstrap_names_the_blob_by_the_layer_digest(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("f", b"data")]))
    on_disk = read_bootstrap(result.bootstrap_path.read_bytes())
    assert [b.blob_id for b in on_disk.blobs] == [result.blob_digest]
    assert on_disk.blobs[0].compressed_size == result.blob_size
    assert on_disk.prefetch == [b"/"]


def test_v5_layer_inlines_the_raw_bootstrap_after_the_chunk_data(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar(rich_members()), fs_version=5, compressor="lz4_block")
    blob = result.blob_path.read_bytes()
    reader = BlobReader(io.BytesIO(blob))
    assert [s.name for s in reader.sections()] == [C.ENTRY_BLOB_DATA, C.ENTRY_BOOTSTRAP]
    assert reader.toc() is None
    inline = reader.inline_bootstrap()
    assert inline.version == 5 and [b.blob_id for b in inline.blobs] == [C.INLINE_BLOB_ID_PLACEHOLDER]
    assert hashlib.sha256(blob).hexdigest() == result.blob_digest


# -- the upstream fixture, rebuilt from a tar ------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("keep_nsec", [False, True])
def test_v6_fixture_tree_rebuilt_from_a_tar(tmp_path: Path, keep_nsec: bool) -> None:
    fixture = read_bootstrap((FIXTURES / "bootstrap" / "rafs-v6-2.2.boot").read_bytes())
    blob_info = fixture.blobs[0]
    members = [dir_("./", mode=stat.S_IMODE(fixture.root.mode), mtime=fixture.root.mtime)]
    with open(FIXTURES / "blobs" / blob_info.blob_id, "rb") as f:
        reader = BlobReader(f, blob_info)
        for path, node in fixture.walk():
            if node.is_reg():
                data = b"".join(reader.read_chunk(c) for c in node.chunks)
                pax = {"mtime": f"{node.mtime}.{node.mtime_nsec:09d}"}
                members.append(reg(path[1:], data, mode=stat.S_IMODE(node.mode), uid=node.uid, gid=node.gid,
                                   mtime=node.mtime, pax=pax))
    result = build(tmp_path, make_tar(members), keep_mtime_nsec=keep_nsec)
    built = read_bootstrap(result.bootstrap_path.read_bytes())

    def shape(bs: Bootstrap, with_nsec: bool) -> dict:
        return {p: (n.mode, n.uid, n.gid, n.mtime, n.mtime_nsec if with_nsec else 0, n.size, n.nlink, n.xattrs,
                    [(c.digest, c.uncompressed_size, c.uncompressed_offset, c.index) for c in n.chunks])
                for p, n in bs.walk()}

    assert shape(built, True) == shape(fixture, keep_nsec)
    assert all(n.mtime_nsec == 0 for _, n in built.walk()) != keep_nsec
    mine, theirs = built.blobs[0], blob_info
    assert (mine.chunk_count, mine.uncompressed_size, mine.compressor, mine.digester, mine.chunk_size) == (
        theirs.chunk_count, theirs.uncompressed_size, theirs.compressor, theirs.digester, theirs.chunk_size)
    assert built.explicit_uid_gid and built.prefetch == [b"/"]


@needs_fixtures
def test_upstream_all_entry_type_tar_builds(tmp_path: Path) -> None:
    tar = (FIXTURES / "tar" / "all-entry-type.tar").read_bytes()
    result = build(tmp_path, tar)
    tree = tree_of(result.bootstrap)
    group = [p for p in tree if p.endswith((b"hardlink1.txt", b"xfile.txt", b"hardlink2.txt", b"hardlink3.txt"))]
    assert len(group) == 4 and len({tree[p].ino for p in group}) == 1
    assert file_bytes(result, b"/tar/dir2/hardlink3.txt") == file_bytes(result, b"/tar/dir1/dir3/hardlink1.txt")
    assert tree[b"/tar/dir2/symlink1.txt"].symlink == b"../dir1/dir3/file1.txt"
    unpacked = snapshot(unpack(result, tmp_path / "u"))
    assert unpacked[b"/tar/dir1/hardlink2.txt"].nlink == 4


# -- tree rules -------------------------------------------------------------------------------------


def test_missing_parents_are_directories_0755_root_owned_at_mtime_0(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("a/b/c", b"c", uid=5, gid=6)]))
    tree = tree_of(result.bootstrap)
    for path in (b"/", b"/a", b"/a/b"):
        node = tree[path]
        assert (node.mode, node.uid, node.gid, node.mtime, node.mtime_nsec) == (stat.S_IFDIR | 0o755, 0, 0, 0, 0)
    assert (tree[b"/a/b/c"].uid, tree[b"/a/b/c"].gid) == (5, 6)
    assert result.implied_dirs == {b"/", b"/a", b"/a/b"}


def test_root_attributes_come_from_a_dot_entry(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([dir_("./", mode=0o700, uid=3, gid=4, mtime=T0), reg("f", b"")]))
    root = result.bootstrap.root
    assert (root.mode, root.uid, root.gid, root.mtime) == (stat.S_IFDIR | 0o700, 3, 4, T0)
    assert result.implied_dirs == frozenset()


def test_a_later_directory_entry_gives_an_implied_parent_its_attributes(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("a/f", b"f"), dir_("a", mode=0o710, mtime=T0)]))
    node = tree_of(result.bootstrap)[b"/a"]
    assert (node.mode, node.mtime, [c.name for c in node.children]) == (stat.S_IFDIR | 0o710, T0, [b"f"])
    assert b"/a" not in result.implied_dirs


def test_a_path_under_a_non_directory_is_an_error_naming_layer_and_path(tmp_path: Path) -> None:
    tar = make_tar([reg("f", b"x"), reg("f/g", b"y")])
    with pytest.raises(FormatError, match=r"test-layer.*'/f/g'.*parent '/f' is not a directory"):
        build(tmp_path, tar)
    assert not (tmp_path / "out" / "blob").exists() and not list((tmp_path / "out").glob(".blob.*"))


def test_duplicate_entries_later_one_wins(tmp_path: Path) -> None:
    tar = make_tar([
        reg("f", b"old content"), reg("f", b"new content", mode=0o600),
        dir_("d", mode=0o700), reg("d/kept", b"k"), dir_("d", mode=0o750, mtime=T0 + 1),
        dir_("e"), reg("e/dropped", b"gone"), reg("e", b"e is a file now"),
        reg("g", b"g was a file"), dir_("g", mode=0o711),
    ])
    result = build(tmp_path, tar)
    tree = tree_of(result.bootstrap)
    assert file_bytes(result, b"/f") == b"new content" and tree[b"/f"].mode == stat.S_IFREG | 0o600
    assert (tree[b"/d"].mode, tree[b"/d"].mtime) == (stat.S_IFDIR | 0o750, T0 + 1) and b"/d/kept" in tree
    assert tree[b"/e"].is_reg() and b"/e/dropped" not in tree
    assert tree[b"/g"].is_dir() and tree[b"/g"].children == []
    assert result.chunk_count == 6  # replaced files' chunks stay in the blob, unreferenced (as nydus-image)


def test_chunks_are_written_in_tar_entry_order(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("z", noise(1, 10)), reg("a", noise(2, 10)), reg("m", noise(3, MiB + 1))]))
    tree = tree_of(result.bootstrap)
    assert [c.index for p in (b"/z", b"/a", b"/m") for c in tree[p].chunks] == [0, 1, 2, 3]


def test_identical_chunks_are_stored_once(tmp_path: Path) -> None:
    same = noise(7, 5000)
    result = build(tmp_path, make_tar([reg("a", same), reg("b", same)]))
    tree = tree_of(result.bootstrap)
    assert result.chunk_count == 1 and result.dedup_chunks == 1
    assert tree[b"/a"].chunks[0].compressed_offset == tree[b"/b"].chunks[0].compressed_offset


@pytest.mark.parametrize("fs_version", [5, 6])
def test_hardlinks_share_the_target_inode_and_chunks(tmp_path: Path, fs_version: int) -> None:
    tar = make_tar([reg("a", b"shared", mode=0o640, uid=7), hard("b", "a"), hard("sub/c", "b")])
    result = build(tmp_path, tar, fs_version=fs_version)
    assert result.chunk_count == 1
    data = result.bootstrap_path.read_bytes()
    tree = tree_of(read_bootstrap(data))
    nodes = [tree[p] for p in (b"/a", b"/b", b"/sub/c")]
    assert len({n.ino for n in nodes}) == 1 and {n.nlink for n in nodes} == {3}
    assert {(n.mode, n.uid, n.size) for n in nodes} == {(stat.S_IFREG | 0o640, 7, 6)}
    assert len({tuple(c.digest for c in n.chunks) for n in nodes}) == 1
    if fs_version == 5:  # the tar builder flags every later path of a group
        reader = V5Reader(data)
        flags = {p: bool(reader.lookup(p).flags & C.V5_INODE_HARDLINK) for p in (b"/a", b"/b", b"/sub/c")}
        assert flags == {b"/a": False, b"/b": True, b"/sub/c": True}


def test_a_hardlink_keeps_the_old_file_when_its_target_is_replaced(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("a", b"one"), hard("b", "a"), reg("a", b"two")]))
    tree = tree_of(read_bootstrap(result.bootstrap_path.read_bytes()))
    assert file_bytes(result, b"/a") == b"two" and file_bytes(result, b"/b") == b"one"
    assert tree[b"/a"].nlink == 1 and tree[b"/b"].nlink == 1


def test_whiteouts_are_kept_as_ordinary_entries(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("d/.wh.gone", b""), reg("d/.wh..wh..opq", b""), reg(".wh.top", b"")]))
    tree = tree_of(result.bootstrap)
    assert {b"/d/.wh.gone", b"/d/.wh..wh..opq", b"/.wh.top"} <= set(tree)
    assert not result.has_data


def test_xattrs_keep_binary_values_and_acl_names(tmp_path: Path) -> None:
    acl = b"\x02\x00\x00\x00\x01\x00\x06\x00\xff\xff\xff\xff"
    xattrs = {b"user.bin": b"\x00\xff\x80", b"security.capability": b"\x01\x00\x00\x02",
              b"system.posix_acl_access": acl, b"trusted.overlay.opaque": b"y"}
    for fs_version in (5, 6):
        result = build(tmp_path, make_tar([dir_("d", xattrs=xattrs)]), name=f"v{fs_version}", fs_version=fs_version)
        assert tree_of(read_bootstrap(result.bootstrap_path.read_bytes()))[b"/d"].xattrs == xattrs


def test_an_xattr_rafs_cannot_store_fails_the_build_like_nydus_image(tmp_path: Path) -> None:
    tar = make_tar([reg("f", b"", xattrs={b"system.nfs4_acl": b"x"})])
    with pytest.raises(FormatError, match=r"test-layer.*'/f'.*system\.nfs4_acl"):
        build(tmp_path, tar)


def test_mtime_keeps_whole_seconds_like_nydus_image_unless_asked(tmp_path: Path) -> None:
    tar = make_tar([reg("f", b"", mtime=T0, pax={"mtime": f"{T0}.123456789"}), reg("old", b"", mtime=-5)])
    upstream = tree_of(build(tmp_path, tar, name="a").bootstrap)
    kept = tree_of(build(tmp_path, tar, name="b", keep_mtime_nsec=True).bootstrap)
    assert (upstream[b"/f"].mtime, upstream[b"/f"].mtime_nsec) == (T0, 0)
    assert (kept[b"/f"].mtime, kept[b"/f"].mtime_nsec) == (T0, 123456789)
    assert (upstream[b"/old"].mtime, upstream[b"/old"].mtime_nsec) == (0, 0)  # before 1970: 0


def test_repeatable_drops_owners(tmp_path: Path) -> None:
    result = build(tmp_path, make_tar([reg("f", b"", uid=1000, gid=1000)]), repeatable=True)
    bs = read_bootstrap(result.bootstrap_path.read_bytes())
    assert not bs.explicit_uid_gid and tree_of(bs)[b"/f"].uid == 0


def test_long_and_non_utf8_names_survive(tmp_path: Path) -> None:
    deep = b"/".join([b"x" * 90] * 5) + b"/\xff\xfe name"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        result = build(tmp_path, make_tar([reg(deep, b"deep"), sym(b"l\xe9", deep)], fmt), name=str(fmt))
        tree = tree_of(read_bootstrap(result.bootstrap_path.read_bytes()))
        assert file_bytes(result, b"/" + deep) == b"deep"
        assert tree[b"/l\xe9"].symlink == deep


def test_a_name_longer_than_erofs_allows_fails_in_v6(tmp_path: Path) -> None:
    tar = make_tar([reg(b"n" * 256, b"")])
    with pytest.raises(FormatError, match="test-layer.*255"):
        build(tmp_path, tar)
    assert build(tmp_path, tar, name="v5", fs_version=5).bootstrap.root.children[0].name == b"n" * 256


# -- layers without file data ------------------------------------------------------------------------


@pytest.mark.parametrize("fs_version", [5, 6])
@pytest.mark.parametrize("kind", ["empty", "dirs-only"])
def test_a_layer_without_data_is_a_blob_holding_only_its_bootstrap(tmp_path: Path, fs_version: int, kind: str) -> None:
    if kind == "empty":
        tar = (FIXTURES / "tar" / "empty.tar").read_bytes() if FIXTURES.is_dir() else b""
    else:
        tar = make_tar([dir_("a"), dir_("a/b", mode=0o700), sym("a/l", "b"), reg("a/empty", b"")])
    result = build(tmp_path, tar, fs_version=fs_version)
    assert not result.has_data and result.chunk_count == 0
    assert result.bootstrap.blobs == [] and result.blob_table == []
    blob = result.blob_path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == result.blob_digest
    reader = BlobReader(io.BytesIO(blob))
    inline = reader.inline_bootstrap()
    assert inline.blobs == [] and [p for p, _ in inline.walk()] == [p for p, _ in result.bootstrap.walk()]
    if fs_version == 6:
        assert [e.name for e in reader.toc()] == [C.ENTRY_BOOTSTRAP]
    unpacked = snapshot(unpack(result, tmp_path / "u"))
    assert sorted(unpacked) == sorted(p for p, _ in result.bootstrap.walk())


def test_without_inline_meta_a_dataless_layer_has_no_blob(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "blob").write_bytes(b"stale")
    result = build_tar_layer(iter_tar_entries(io.BytesIO(make_tar([dir_("a")]))),
                             options(blob_inline_meta=False, blob_toc=False), out / "blob", out / "boot")
    assert result.blob_path is None and not (out / "blob").exists()
    assert read_bootstrap((out / "boot").read_bytes()).blobs == []


def test_a_parent_bootstrap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="parent"):
        build(tmp_path, make_tar([]), parent_bootstrap=tmp_path / "p")


def test_a_chunk_dictionary_supplies_known_chunks(tmp_path: Path) -> None:
    data = noise(9, 3000)
    dict_layer = build(tmp_path, make_tar([reg("x", data)]), name="dict")
    result = build(tmp_path, make_tar([reg("y", data)]), name="new", chunk_dict=dict_layer.bootstrap_path)
    assert not result.has_data and result.chunk_count == 0
    assert [b.blob_id for b in result.bootstrap.blobs] == [dict_layer.blob_digest]


# -- memory -----------------------------------------------------------------------------------------------


_MEMORY_PROBE = textwrap.dedent('''
    import io, random, resource, sys, tarfile
    from pathlib import Path
    from nydusify_core.oci.layertar import iter_tar_entries
    from nydusify_core.rafs.builder import BuildOptions
    from nydusify_core.rafs.tarbuild import build_tar_layer

    SIZE = 200 << 20

    class LazyTar(io.RawIOBase):
        """A tar of one SIZE-byte file whose data is generated as it is read."""
        def __init__(self):
            info = tarfile.TarInfo("big.bin")
            info.size = SIZE
            self.head = info.tobuf(tarfile.GNU_FORMAT)
            self.tail = bytes(-SIZE % 512 + 1024)
            self.left = SIZE
            self.rng = random.Random(1)
            self.block = b""
        def readable(self):
            return True
        def readinto(self, b):
            if self.head:
                n = min(len(b), len(self.head)); b[:n] = self.head[:n]; self.head = self.head[n:]; return n
            if self.left:
                if not self.block:  # half random, half compressible, 1 MiB at a time
                    k = min(1 << 20, self.left)
                    self.block = self.rng.randbytes(k // 2) + bytes(k - k // 2)
                n = min(len(b), len(self.block)); b[:n] = self.block[:n]; self.block = self.block[n:]
                self.left -= n
                return n
            n = min(len(b), len(self.tail)); b[:n] = self.tail[:n]; self.tail = self.tail[n:]; return n

    out = Path(sys.argv[1])
    opts = BuildOptions(fs_version=6, blob_inline_meta=True, blob_toc=True, whiteout_spec="none", prefetch=("/",))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = build_tar_layer(iter_tar_entries(io.BufferedReader(LazyTar(), 1 << 20)), opts, out / "blob", out / "boot")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.chunk_count == 200, result.chunk_count
    print(after - before)
''')


@pytest.mark.slow
def test_a_200_mib_file_streams_through_with_bounded_memory(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    growth_kib = int(res.stdout.strip())
    assert growth_kib < 100 * 1024, f"peak RSS grew by {growth_kib} KiB while building a 200 MiB file"


# -- implied directories at merge time ------------------------------------------------------------------


@pytest.mark.parametrize("middle, inherits", [
    ([reg("other/file", b"o")], True),  # the middle layer does not touch /a
    ([reg(".wh.a", b"")], False),  # /a removed in between
    ([reg("a", b"a is a file")], False),  # /a replaced by a file in between
    ([reg(".wh..wh..opq", b"")], False),  # the root made opaque in between
])
def test_implied_directories_take_the_attributes_they_have_below(tmp_path: Path, middle, inherits: bool) -> None:
    tars = [make_tar([dir_("a", mode=0o700, uid=9, mtime=T0, xattrs={b"user.k": b"v"}), reg("a/f", b"f")]),
            make_tar(middle), make_tar([reg("a/g", b"g")])]
    results = [build(tmp_path, tar, name=f"l{i}") for i, tar in enumerate(tars)]
    layers = [r.bootstrap for r in results]
    inherit_implied_dirs(layers, [r.implied_dirs for r in results])
    a = tree_of(layers[2])[b"/a"]
    got = (a.mode, a.uid, a.mtime, a.xattrs)
    assert got == ((stat.S_IFDIR | 0o700, 9, T0, {b"user.k": b"v"}) if inherits else (stat.S_IFDIR | 0o755, 0, 0, {}))
