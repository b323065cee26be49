"""The source image's root filesystem, replayed in memory from its streamed layers.

Each layer is read once, as a stream (decompressed by zlib/libzstd, never written to disk),
into a list of entry records; the records are then applied in layer order with OCI
whiteout semantics: a layer's whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove content of the
*lower* layers only, then its entries are added in stream order (a later duplicate wins;
a directory over a directory updates attributes and keeps the children). Parents a layer
implies without listing them are created as 0755 root:root mtime 0 directories unless a
lower layer already has them, which is what the Nydus tar builder and merge produce (and
what `tar -x` leaves on disk).

File contents are not kept: while a regular file streams past, its bytes are hashed in the
pieces the Nydus image cut it into (the chunk boundaries and digester of the same path in
the Nydus bootstrap), and only the verdict "same chunk digests as the Nydus file" (or the
first differing offset) is stored. Memory stays bounded by the number of paths.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Sequence

from nydusify_core.oci.layertar import EntryType, LayerTar, TarEntry
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.digest import hasher

_IMPLIED_DIR = stat.S_IFDIR | 0o755


class Rec:
    """One path of the replayed tree. Hardlinked paths share one `Rec` object."""

    __slots__ = ("mode", "uid", "gid", "mtime", "size", "link", "rdev", "xattrs", "content", "kids")

    def __init__(self, mode: int, uid: int = 0, gid: int = 0, mtime: int = 0, size: int = 0, link: bytes | None = None,
                 rdev: int = 0, xattrs: dict[bytes, bytes] | None = None, content: bool | str | None = None) -> None:
        self.mode, self.uid, self.gid, self.mtime, self.size = mode, uid, gid, mtime, size
        self.link, self.rdev, self.xattrs, self.content = link, rdev, xattrs or {}, content
        self.kids: dict[bytes, Rec] | None = {} if stat.S_ISDIR(mode) else None


# For each regular file of the Nydus image: its size and its chunks as (length, digester,
# digest) in file order. Source files are hashed along these boundaries.
ChunkPlan = dict[bytes, tuple[int, list[tuple[int, str, bytes]]]]


@dataclass
class LayerRecords:
    """What one layer does: whiteouts, opaque directories and entries, in stream order."""

    whiteouts: list[tuple[bytes, bytes]]  # (parent path, name removed)
    opaque: list[bytes]  # directory paths whose lower content is hidden
    entries: list[tuple[bytes, Rec | None, bytes | None]]  # (path, record, hardlink target)
    diff_id: str | None = None
    bytes_read: int = 0


def _hash_against(data: IO[bytes], plan: list[tuple[int, str, bytes]]) -> bool | str:
    """Read `data` in the plan's pieces; True if every piece has the planned digest, else
    a description of the first differing piece (the rest is left for the tar reader to skip)."""
    offset = 0
    for length, digester, expected in plan:
        h = hasher(digester)
        h.update(data.read(length))
        if h.digest() != expected:
            return f"differs from the source at bytes {offset}..{offset + length}"
        offset += length
    return True


def read_layer(stream: IO[bytes], media_type: str, label: str, plan: ChunkPlan | None) -> LayerRecords:
    """Stream one layer blob into `LayerRecords` (hashing file contents when `plan` is given)."""
    out = LayerRecords([], [], [])
    with LayerTar(stream, media_type=media_type, layer=label) as tar:
        for e in tar:
            _record(e, out, plan)
        out.diff_id = tar.diff_id
        out.bytes_read = tar.uncompressed_size
    return out


def _record(e: TarEntry, out: LayerRecords, plan: ChunkPlan | None) -> None:
    path = b"/" + e.path if e.path else b"/"
    parent, _, name = path.rpartition(b"/")
    parent = parent or b"/"
    if name == C.WHITEOUT_OPAQUE:
        out.opaque.append(parent)
        return
    if name.startswith(C.WHITEOUT_PREFIX) and len(name) > len(C.WHITEOUT_PREFIX):
        out.whiteouts.append((parent, name[len(C.WHITEOUT_PREFIX):]))
        return
    if e.type is EntryType.HARDLINK:
        out.entries.append((path, None, b"/" + e.link_target))
        return
    rec = Rec(e.st_mode, e.uid, e.gid, max(e.mtime, 0), e.size if e.type is EntryType.REG else 0,
              e.link_target if e.type is EntryType.SYMLINK else None,
              os.makedev(e.devmajor, e.devminor) if e.type in (EntryType.CHAR, EntryType.BLOCK) else 0,
              dict(e.xattrs))
    if e.type is EntryType.REG and plan is not None and e.data is not None:
        want = plan.get(path)
        if want is not None and want[0] == e.size:
            rec.content = _hash_against(e.data, want[1])
    out.entries.append((path, rec, None))


class Tree:
    """The replayed tree: apply `LayerRecords` lowest first, then `flatten`."""

    def __init__(self) -> None:
        self.root = Rec(_IMPLIED_DIR)

    def _lookup(self, path: bytes) -> Rec | None:
        node: Rec | None = self.root
        for part in path.split(b"/"):
            if not part:
                continue
            if node is None or node.kids is None:
                return None
            node = node.kids.get(part)
        return node

    def _parent(self, path: bytes) -> tuple[Rec, bytes]:
        """(parent directory, name) of `path`, creating implied directories."""
        parts = [p for p in path.split(b"/") if p]
        node = self.root
        for part in parts[:-1]:
            assert node.kids is not None
            nxt = node.kids.get(part)
            if nxt is None or nxt.kids is None:
                nxt = node.kids[part] = Rec(_IMPLIED_DIR)
            node = nxt
        return node, parts[-1]

    def apply(self, layer: LayerRecords) -> None:
        for directory in layer.opaque:
            node = self._lookup(directory)
            if node is not None and node.kids is not None:
                node.kids.clear()
        for directory, name in layer.whiteouts:
            node = self._lookup(directory)
            if node is not None and node.kids is not None:
                node.kids.pop(name, None)
        for path, rec, link in layer.entries:
            if path == b"/":
                assert rec is not None
                if stat.S_ISDIR(rec.mode):
                    self._update_dir(self.root, rec)
                continue
            parent, name = self._parent(path)
            assert parent.kids is not None
            if rec is None:  # hardlink to an earlier entry of this layer
                target = self._lookup(link or b"")
                if target is not None and target.kids is None:
                    parent.kids[name] = target
                continue
            old = parent.kids.get(name)
            if old is not None and old.kids is not None and rec.kids is not None:
                self._update_dir(old, rec)
            else:
                parent.kids[name] = rec

    @staticmethod
    def _update_dir(node: Rec, rec: Rec) -> None:
        node.mode, node.uid, node.gid, node.mtime, node.xattrs = rec.mode, rec.uid, rec.gid, rec.mtime, rec.xattrs

    def flatten(self) -> dict[bytes, Rec]:
        """Absolute path -> record, root as b"/"."""
        out: dict[bytes, Rec] = {}
        stack: list[tuple[bytes, Rec]] = [(b"/", self.root)]
        while stack:
            path, node = stack.pop()
            out[path] = node
            if node.kids:
                base = b"" if path == b"/" else path
                stack.extend((base + b"/" + name, kid) for name, kid in node.kids.items())
        return out


def replay(layers: Sequence[Any], opener: Callable[[Any], IO[bytes]], plan: ChunkPlan | None, *, workers: int = 2) -> tuple[dict[bytes, Rec], list[str | None], int]:
    """Read every layer (in parallel, each streamed once) and apply them in order.

    `layers` are descriptors, `opener(desc)` returns a digest-verifying stream of one.
    Returns (path -> record, each layer's diff_id, uncompressed bytes read)."""

    def one(i_desc: tuple[int, Any]) -> LayerRecords:
        i, desc = i_desc
        with opener(desc) as stream:
            return read_layer(stream, desc.media_type, f"{i + 1} ({desc.digest})", plan)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="check-layer") as pool:
        results: Iterator[LayerRecords] = pool.map(one, enumerate(layers))
        tree = Tree()
        diff_ids: list[str | None] = []
        total = 0
        for records in results:
            tree.apply(records)
            diff_ids.append(records.diff_id)
            total += records.bytes_read
    return tree.flatten(), diff_ids, total
