"""Merging per-layer bootstraps (rafs-format.md §7.2): overlay rules, blob table remapping,
hardlinks across layers. Each layer is written as a real v5 bootstrap and read back first."""

from __future__ import annotations

import hashlib
import stat

import pytest

from nydusify_core.errors import FormatError, UsageError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.merge import merge_bootstraps, whiteout_target
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node
from nydusify_core.rafs.bootstrap import detect_version, read_bootstrap, write_bootstrap
from nydusify_core.rafs.v5 import V5Reader, read_v5, write_v5

CS = 0x1000


def chunk(tag: str, blob_index: int = 0, index: int = 0) -> ChunkInfo:
    return ChunkInfo(digest=hashlib.sha256(tag.encode()).digest(), blob_index=blob_index, flags=0,
                     compressed_offset=100 * index, compressed_size=100, uncompressed_offset=100 * index,
                     uncompressed_size=100, file_offset=0, index=index)


def d(name: str, *children: Node, mode: int = 0o755, mtime: int = 1) -> Node:
    return Node(name=name.encode(), mode=stat.S_IFDIR | mode, children=list(children), mtime=mtime)


def f(name: str, tag: str | None = None, blob_index: int = 0, **kw) -> Node:
    chunks = [chunk(tag, blob_index)] if tag else []
    return Node(name=name.encode(), mode=stat.S_IFREG | 0o644, size=100 * len(chunks), chunks=chunks, **kw)


def layer(root: Node, *blob_ids: str, features: int = C.BLOB_CAP_TAR_TOC) -> Bootstrap:
    """A per-layer bootstrap as the builder would write it, round-tripped through v5 bytes."""
    blobs = [BlobInfo(blob_id=b, chunk_size=CS, chunk_count=1, compressor="zstd", digester="sha256",
                      features=features, compressed_size=1000, uncompressed_size=4096) for b in blob_ids]
    bs = Bootstrap(version=5, root=root, blobs=blobs, chunk_size=CS, compressor="zstd", digester="sha256")
    return read_v5(write_v5(bs))


def paths(bs: Bootstrap) -> dict[str, Node]:
    return {p.decode(): n for p, n in bs.walk()}


def blob_of(bs: Bootstrap, node: Node) -> str:
    return bs.blobs[node.chunks[0].blob_index].blob_id


@pytest.fixture
def base() -> Bootstrap:
    return layer(
        d("/", d("etc", f("passwd", "passwd-1"), f("group", "group-1")),
          d("usr", d("lib", f("libc.so", "libc-1")), f("readme", "readme-1")),
          f("data", "data-1"), mtime=0),
        "lower-blob",
    )


def test_whiteout_file_removes_lower_file(base: Bootstrap) -> None:
    merged = merge_bootstraps([base, layer(d("/", d("etc", f(".wh.group"))), "upper-blob")])
    got = paths(merged)
    assert "/etc/group" not in got and "/etc/passwd" in got
    assert not any(".wh." in p for p in got)


def test_whiteout_directory_removes_subtree(base: Bootstrap) -> None:
    merged = merge_bootstraps([base, layer(d("/", f(".wh.usr")), "upper-blob")])
    assert sorted(paths(merged)) == ["/", "/data", "/etc", "/etc/group", "/etc/passwd"]


def test_opaque_directory_hides_lower_children_only(base: Bootstrap) -> None:
    upper = layer(d("/", d("etc", f(".wh..wh..opq"), f("hosts", "hosts-2"), mode=0o700)), "upper-blob")
    got = paths(merge_bootstraps([base, upper]))
    assert [p for p in got if p.startswith("/etc/")] == ["/etc/hosts"]
    assert stat.S_IMODE(got["/etc"].mode) == 0o700


def test_file_replaced_by_directory(base: Bootstrap) -> None:
    upper = layer(d("/", d("data", f("inner", "inner-2"))), "upper-blob")
    got = paths(merge_bootstraps([base, upper]))
    assert got["/data"].is_dir() and "/data/inner" in got


def test_directory_replaced_by_file_drops_children(base: Bootstrap) -> None:
    upper = layer(d("/", f("usr", "usr-2")), "upper-blob")
    merged = merge_bootstraps([base, upper])
    got = paths(merged)
    assert got["/usr"].is_reg() and not any(p.startswith("/usr/") for p in got)
    assert got["/"].nlink == 3  # / , etc (usr is a file now)


def test_replaced_directory_keeps_lower_children(base: Bootstrap) -> None:
    upper = layer(d("/", d("usr", f("new", "new-2"), mode=0o750)), "upper-blob")
    got = paths(merge_bootstraps([base, upper]))
    assert {"/usr/lib/libc.so", "/usr/readme", "/usr/new"} <= set(got)
    assert stat.S_IMODE(got["/usr"].mode) == 0o750


def test_replaced_file_keeps_chunks_of_its_layer_blob(base: Bootstrap) -> None:
    upper = layer(d("/", d("etc", f("passwd", "passwd-2"))), "upper-blob")
    merged = merge_bootstraps([base, upper])
    got = paths(merged)
    assert [b.blob_id for b in merged.blobs] == ["lower-blob", "upper-blob"]
    assert blob_of(merged, got["/etc/passwd"]) == "upper-blob"
    assert got["/etc/passwd"].chunks[0].digest == hashlib.sha256(b"passwd-2").digest()
    assert blob_of(merged, got["/etc/group"]) == "lower-blob"


def test_blob_indexes_are_remapped_per_layer(base: Bootstrap) -> None:
    # The upper layer's own blob is its index 1 (a chunk-dict blob is index 0 there).
    upper = layer(d("/", f("a", "dict-chunk", 0), f("b", "own-chunk", 1)), "dict-blob", "upper-blob")
    merged = merge_bootstraps([base, upper], chunk_dict_blob_ids={"dict-blob"})
    got = paths(merged)
    assert [b.blob_id for b in merged.blobs] == ["lower-blob", "dict-blob", "upper-blob"]
    assert [got["/a"].chunks[0].blob_index, got["/b"].chunks[0].blob_index] == [1, 2]


def test_same_blob_id_is_kept_once() -> None:
    one = layer(d("/", f("a", "x", 0), f("b", "y", 1)), "dict-blob", "blob-1")
    two = layer(d("/", f("c", "z", 0), f("e", "w", 1)), "dict-blob", "blob-2")
    merged = merge_bootstraps([one, two], chunk_dict_blob_ids={"dict-blob"})
    got = paths(merged)
    assert [b.blob_id for b in merged.blobs] == ["dict-blob", "blob-1", "blob-2"]
    assert [got[p].chunks[0].blob_index for p in ("/a", "/b", "/c", "/e")] == [0, 1, 0, 2]


def test_layers_sharing_a_blob_id_share_the_entry() -> None:
    one = layer(d("/", f("a", "x")), "same")
    two = layer(d("/", f("b", "y")), "same")
    merged = merge_bootstraps([one, two])
    assert [b.blob_id for b in merged.blobs] == ["same"]
    assert {n.chunks[0].blob_index for p, n in paths(merged).items() if p != "/"} == {0}


def test_layer_with_two_data_blobs_is_rejected() -> None:
    two = layer(d("/", f("a", "x", 0), f("b", "y", 1)), "blob-a", "blob-b")
    with pytest.raises(FormatError, match="more than one data blob"):
        merge_bootstraps([two])


def test_upper_root_replaces_root_attributes(base: Bootstrap) -> None:
    upper = layer(d("/", mode=0o700, mtime=42), "upper-blob")
    root = merge_bootstraps([base, upper]).root
    assert (stat.S_IMODE(root.mode), root.mtime) == (0o700, 42)
    assert [c.name for c in root.children] == [b"data", b"etc", b"usr"]


def test_lowest_layer_whiteouts_are_dropped() -> None:
    merged = merge_bootstraps([layer(d("/", f(".wh.ghost"), f("real", "r")), "b")])
    assert sorted(paths(merged)) == ["/", "/real"]


def test_inlined_fs_meta_is_cleared_and_overrides_apply() -> None:
    feats = C.BLOB_CAP_TAR_TOC | C.BLOB_INLINED_FS_META | C.BLOB_HAS_TOC
    one = layer(d("/", f("a", "x")), C.INLINE_BLOB_ID_PLACEHOLDER, features=feats)
    two = layer(d("/", f("b", "y")), C.INLINE_BLOB_ID_PLACEHOLDER, features=feats)
    digests = ["sha256:" + "1" * 64, "2" * 64]
    merged = merge_bootstraps([one, two], blob_digests=digests, blob_sizes=[111, 222],
                              blob_toc_digests=["3" * 64, "4" * 64], blob_toc_sizes=[640, 768])
    b1, b2 = merged.blobs
    assert (b1.blob_id, b1.compressed_size, b1.toc_digest, b1.toc_size) == ("1" * 64, 111, b"\x33" * 32, 640)
    assert (b2.blob_id, b2.compressed_size, b2.toc_size) == ("2" * 64, 222, 768)
    assert b1.features == b2.features == C.BLOB_CAP_TAR_TOC | C.BLOB_HAS_TOC
    assert paths(merged)["/b"].chunks[0].blob_index == 1


def test_layer_blob_ids_name_placeholder_blobs() -> None:
    one = layer(d("/", f("a", "x")), C.INLINE_BLOB_ID_PLACEHOLDER)
    merged = merge_bootstraps([one], layer_blob_ids=["5" * 64])
    assert merged.blobs[0].blob_id == "5" * 64


def test_separate_blob_overrides_go_to_meta_fields() -> None:
    one = layer(d("/", f("a", "x")), "9" * 64, features=C.BLOB_SEPARATE | C.BLOB_CAP_TAR_TOC)
    [blob] = merge_bootstraps([one], blob_digests=["6" * 64], blob_sizes=[77]).blobs
    assert (blob.blob_id, blob.meta_digest, blob.meta_size) == ("9" * 64, b"\x66" * 32, 77)


def test_override_lists_must_match_layer_count(base: Bootstrap) -> None:
    with pytest.raises(UsageError):
        merge_bootstraps([base], blob_digests=["1" * 64, "2" * 64])
    with pytest.raises(UsageError):
        merge_bootstraps([base], blob_digests=["not-hex"])


def test_incompatible_layers_are_rejected(base: Bootstrap) -> None:
    other = layer(d("/", f("a", "x")), "b")
    other.chunk_size = 0x2000
    with pytest.raises(FormatError, match="chunk size"):
        merge_bootstraps([base, other])
    other = layer(d("/", f("a", "x")), "b")
    other.explicit_uid_gid = not base.explicit_uid_gid
    with pytest.raises(FormatError, match="uid/gid"):
        merge_bootstraps([base, other])
    other = layer(d("/", f("a", "x")), "b")
    other.digester = "blake3"
    with pytest.raises(FormatError, match="digest"):
        merge_bootstraps([base, other])


def test_hardlink_in_upper_layer_joins_lower_group(base: Bootstrap) -> None:
    # In memory, as a tar builder sees it: the link's target is only in the lower layer.
    upper = Bootstrap(version=5, root=d("/", d("bin", f("passwd-link", hardlink_to=b"/etc/passwd"))),
                      chunk_size=CS, compressor="zstd", digester="sha256")
    merged = merge_bootstraps([base, upper])
    got = paths(merged)
    link, target = got["/bin/passwd-link"], got["/etc/passwd"]
    assert link.ino == target.ino and link.nlink == target.nlink == 2
    assert link.chunks == target.chunks and link.size == target.size
    reread = paths(read_v5(write_v5(merged)))
    assert reread["/bin/passwd-link"].ino == reread["/etc/passwd"].ino
    assert reread["/bin/passwd-link"].nlink == 2


def test_whiteout_shrinks_hardlink_group() -> None:
    lower = layer(d("/", f("x", "shared", ino=9), f("y", "shared", ino=9)), "lower-blob")
    assert paths(lower)["/x"].nlink == 2
    upper = layer(d("/", f(".wh.y")), "upper-blob")
    got = paths(merge_bootstraps([lower, upper]))
    assert got["/x"].nlink == 1


def test_replacing_one_path_leaves_the_rest_of_the_group(base: Bootstrap) -> None:
    lower = layer(d("/", f("x", "shared", ino=9), f("y", "shared", ino=9), f("z", "shared", ino=9)), "lower-blob")
    upper = layer(d("/", f("y", "fresh")), "upper-blob")
    got = paths(merge_bootstraps([lower, upper]))
    assert got["/x"].ino == got["/z"].ino != got["/y"].ino
    assert [got[p].nlink for p in ("/x", "/y", "/z")] == [2, 1, 2]


def test_same_ino_in_different_layers_is_not_a_hardlink() -> None:
    one = layer(d("/", f("a", "x")), "b1")
    two = layer(d("/", f("b", "y")), "b2")
    assert paths(one)["/a"].ino == paths(two)["/b"].ino  # both are node 2 in their layer
    got = paths(merge_bootstraps([one, two]))
    assert got["/a"].ino != got["/b"].ino and got["/a"].nlink == got["/b"].nlink == 1


def test_merge_leaves_inputs_untouched(base: Bootstrap) -> None:
    before = write_v5(base)
    merge_bootstraps([base, layer(d("/", f(".wh.data"), f("new", "n")), "upper-blob")])
    assert write_v5(base) == before


def test_merged_image_is_a_valid_v5_bootstrap(base: Bootstrap) -> None:
    upper = layer(d("/", d("etc", f(".wh.group"), f("passwd", "passwd-2")), f("new", "n")), "upper-blob")
    merged = merge_bootstraps([base, upper], prefetch=[b"/etc"])
    reader = V5Reader(write_v5(merged))
    assert reader.lookup(b"/etc/group") is None and reader.lookup(b"/new") is not None
    assert reader.prefetch_inodes() == [reader.lookup(b"/etc").index]


def test_whiteout_target_names() -> None:
    assert whiteout_target(b".wh..wh..opq") == b""
    assert whiteout_target(b".wh.foo") == b"foo"
    assert whiteout_target(b".wh.") is None and whiteout_target(b"foo") is None


def v6_layer(root: Node, blob_id: str) -> Bootstrap:
    """A per-layer v6 bootstrap, read back (the v6 reader shares one inode's records among its paths)."""
    blob = BlobInfo(blob_id=blob_id, chunk_size=CS, chunk_count=1, compressor="zstd", digester="blake3",
                    features=C.BLOB_ALIGNED | C.BLOB_CAP_TAR_TOC, compressed_size=100, uncompressed_size=4096)
    data = write_bootstrap(Bootstrap(version=6, root=root, blobs=[blob], chunk_size=CS))
    assert detect_version(data) == 6
    return read_bootstrap(data)


def test_v6_layers_merge_through_the_dispatching_entry_point() -> None:
    lower = v6_layer(d("/", d("etc", f("passwd", "p1"), f("group", "g1"))), "a" * 64)
    upper = v6_layer(d("/", d("etc", f(".wh.group"), f("passwd", "p2"))), "b" * 64)
    merged = merge_bootstraps([lower, upper])
    got = paths(read_bootstrap(write_bootstrap(merged)))
    assert sorted(got) == ["/", "/etc", "/etc/passwd"]
    assert got["/etc/passwd"].chunks[0].blob_index == 1
    with pytest.raises(FormatError, match="v5"):
        merge_bootstraps([lower, layer(d("/"), "c")])


SCENARIOS = {
    "whiteouts and replacements": lambda: [
        layer(d("/", d("etc", f("passwd", "p1"), f("group", "g1")), d("opq", f("old", "o")), f("data", "d1"), mtime=0), "lower-blob"),
        layer(d("/", d("etc", f(".wh.group"), f("passwd", "p2")), d("opq", f(".wh..wh..opq"), f("new", "n")),
                d("data", f("inside", "i"))), "upper-blob"),
    ],
    "hardlink groups sharing chunk records": lambda: [  # the upper group's records remap 0 -> 1, once
        v6_layer(d("/", f("w", "w1"), f("v", "v1", ino=9), f("u", "v1", ino=9)), "a" * 64),
        v6_layer(d("/", f("x", "shared", ino=9), f("y", "shared", ino=9), f("z", "shared", ino=9)), "b" * 64),
        v6_layer(d("/", f("y", "fresh"), f(".wh.z"), f(".wh.u")), "c" * 64),
    ],
    "an upper hardlink joining a lower file": lambda: [
        layer(d("/", d("etc", f("passwd", "p1"))), "lower-blob"),
        Bootstrap(version=5, root=d("/", d("bin", f("passwd-link", hardlink_to=b"/etc/passwd"))),
                  chunk_size=CS, compressor="zstd", digester="sha256"),
    ],
    "layers sharing a blob": lambda: [
        layer(d("/", f("a", "x")), "same-blob"), layer(d("/", f("b", "y")), "same-blob"),
        layer(d("/", f("c", "z")), "other-blob"),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_consuming_the_layers_gives_the_same_image(scenario: str) -> None:
    """`consume` reuses the layers' records in place of copies; the result is the same."""
    copied = merge_bootstraps(SCENARIOS[scenario](), prefetch=[b"/"])
    consumed = merge_bootstraps(SCENARIOS[scenario](), prefetch=[b"/"], consume=True)
    assert write_bootstrap(consumed) == write_bootstrap(copied)
