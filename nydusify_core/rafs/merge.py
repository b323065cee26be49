"""Overlay merge of per-layer bootstraps into one image bootstrap (rafs-format.md §7.2).

This is what `nydus-image merge` does for nydusify: layers are applied lowest first with
OCI whiteout semantics, blob tables are concatenated (same blob id kept once) and every
chunk's blob index is remapped to the merged table. The result is a fresh `Bootstrap`
for `write_bootstrap`; the inputs are never modified, unless the caller hands them over
(`consume`).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import count
from operator import attrgetter
from typing import Collection, Sequence, TypeVar

from nydusify_core.errors import FormatError, UsageError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node, tree_building

_T = TypeVar("_T")
_name_of = attrgetter("name")

__all__ = ["merge_bootstraps", "whiteout_target"]


def whiteout_target(name: bytes) -> bytes | None:
    """For an OCI whiteout name: b"" for the opaque marker, else the name it removes; None otherwise."""
    if name == C.WHITEOUT_OPAQUE:
        return b""
    if name.startswith(C.WHITEOUT_PREFIX) and len(name) > len(C.WHITEOUT_PREFIX):
        return name[len(C.WHITEOUT_PREFIX) :]
    return None


class _Entry:
    """A node of the tree being merged, with its children indexed by name."""

    __slots__ = ("node", "kids")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.kids: dict[bytes, _Entry] | None = {} if node.is_dir() else None


def _hex_digest(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        raw = value
    else:
        text = value.split(":", 1)[1] if value.startswith("sha256:") else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{what} {value!r} is not a hex digest") from None
    if len(raw) != 32:
        raise UsageError(f"{what} {value!r} is not a 32-byte digest")
    return raw


def _check_list(values: Sequence | None, n: int, what: str) -> None:
    if values is not None and len(values) != n:
        raise UsageError(f"{len(values)} {what} given for {n} bootstraps")


def _clone(obj: _T, **changes: object) -> _T:
    """`dataclasses.replace` for plain record dataclasses without its per-call field
    introspection (a merge copies every node and chunk record of every layer)."""
    new = object.__new__(type(obj))
    attrs = obj.__dict__.copy()  # copied whole: filling an empty dict key by key is slower
    attrs.update(changes)
    new.__dict__ = attrs
    return new


def _split(path: bytes) -> list[bytes]:
    return [p for p in path.split(b"/") if p]


def merge_bootstraps(
    layers: Sequence[Bootstrap],
    *,
    blob_digests: Sequence[str] | None = None,
    blob_sizes: Sequence[int] | None = None,
    blob_toc_digests: Sequence[str | bytes] | None = None,
    blob_toc_sizes: Sequence[int] | None = None,
    layer_blob_ids: Sequence[str | None] | None = None,
    chunk_dict_blob_ids: Collection[str] = (),
    prefetch: Sequence[bytes] = (),
    consume: bool = False,
) -> Bootstrap:
    """Merge per-layer bootstraps, lowest layer first, into an image bootstrap.

    The list options are indexed by layer, as nydusify passes `--blob-digests`,
    `--blob-sizes`, `--blob-toc-digests` and `--blob-toc-sizes`; they apply to each layer's
    own data blob (the one blob whose id is not in `chunk_dict_blob_ids`). For a SEPARATE
    (ref-type) blob the digest and size go to its meta-blob fields instead. Without a digest
    the id comes from `layer_blob_ids[i]` (the bootstrap's file name, as nydus uses when the
    embedded id is a placeholder), else from the bootstrap itself.

    With `consume` the caller gives the layers up: their node and chunk records become the
    merged tree's (changed in place) instead of being copied, which halves the merge.
    """
    if not layers:
        raise UsageError("no bootstrap to merge")
    n = len(layers)
    for values, what in (
        (blob_digests, "blob digests"), (blob_sizes, "blob sizes"), (blob_toc_digests, "blob TOC digests"),
        (blob_toc_sizes, "blob TOC sizes"), (layer_blob_ids, "layer blob ids"),
    ):
        _check_list(values, n, what)
    first = layers[0]
    for i, bs in enumerate(layers):
        if bs.version != first.version:
            raise FormatError(f"layer {i}: RAFS v{bs.version} cannot merge with v{first.version}")
        if bs.chunk_size != first.chunk_size or any(b.chunk_size != first.chunk_size for b in bs.blobs):
            raise FormatError(f"layer {i}: chunk size differs from {first.chunk_size:#x}")
        if bs.explicit_uid_gid != first.explicit_uid_gid:
            raise FormatError(f"layer {i}: explicit uid/gid setting differs from the lowest layer")
        if bs.version == 5 and bs.digester != first.digester:
            raise FormatError(f"layer {i}: digest algorithm {bs.digester} differs from {first.digester}")

    blobs: list[BlobInfo] = []
    remaps: list[list[int]] = []
    for i, bs in enumerate(layers):
        remap = []
        own_blob = False
        for blob in bs.blobs:
            b = replace(blob, features=blob.features & ~C.BLOB_INLINED_FS_META)
            if b.blob_id not in chunk_dict_blob_ids:
                if own_blob:
                    raise FormatError(f"layer {i} has more than one data blob")
                own_blob = True
                _override_blob(b, i, blob_digests, blob_sizes, blob_toc_digests, blob_toc_sizes, layer_blob_ids)
            for idx, existing in enumerate(blobs):
                if existing.blob_id == b.blob_id:
                    remap.append(idx)
                    break
            else:
                remap.append(len(blobs))
                blobs.append(b)
        remaps.append(remap)

    merger = _TreeMerger(consume)
    with tree_building():
        for i, bs in enumerate(layers):
            merger.apply(i, bs.root, remaps[i])
        root = merger.finish()

    last = layers[-1]
    return Bootstrap(
        version=first.version, root=root, blobs=blobs, chunk_size=first.chunk_size,
        compressor=last.compressor, digester=last.digester, explicit_uid_gid=first.explicit_uid_gid,
        prefetch=list(prefetch),
    )


def _override_blob(
    b: BlobInfo,
    i: int,
    digests: Sequence[str] | None,
    sizes: Sequence[int] | None,
    toc_digests: Sequence[str | bytes] | None,
    toc_sizes: Sequence[int] | None,
    layer_ids: Sequence[str | None] | None,
) -> None:
    separate = bool(b.features & C.BLOB_SEPARATE)
    if layer_ids is not None and layer_ids[i]:
        b.blob_id = layer_ids[i]
    if digests is not None:
        raw = _hex_digest(digests[i], "blob digest")
        if separate:
            b.meta_digest = raw
        else:
            b.blob_id = raw.hex()
    if sizes is not None:
        if separate:
            b.meta_size = sizes[i]
        else:
            b.compressed_size = sizes[i]
    if toc_digests is not None:
        b.toc_digest = _hex_digest(toc_digests[i], "blob TOC digest")
    if toc_sizes is not None:
        b.toc_size = toc_sizes[i]


def _share(node: Node, target: Node) -> None:
    """An upper-layer hardlink whose target lives in a lower layer becomes that file."""
    node.mode, node.uid, node.gid = target.mode, target.uid, target.gid
    node.mtime, node.mtime_nsec, node.size, node.rdev = target.mtime, target.mtime_nsec, target.size, target.rdev
    node.symlink, node.xattrs = target.symlink, dict(target.xattrs)
    node.chunks = [replace(ch) for ch in target.chunks]
    node.ino = target.ino


class _TreeMerger:
    """Applies layers one by one to a tree of `_Entry`s."""

    def __init__(self, consume: bool = False) -> None:
        self.root: _Entry | None = None
        self._ino = count(1)
        self._inos: dict[tuple[int, object], int] = {}
        self._consume = consume
        self._remapped: set[int] = set()  # ids of chunk records already remapped in place

    # -- node copies --------------------------------------------------------------------

    def _copy(self, layer: int, node: Node, remap: list[int], key: object) -> Node:
        """The node as the merged tree holds it (chunks pointing into the merged blob table,
        a merged inode number, no children yet): a copy, or with `consume` the node itself."""
        n = len(remap)
        ino = self._inos.setdefault((layer, key), next(self._ino))
        if self._consume:
            remapped = self._remapped
            for ch in node.chunks:
                if id(ch) in remapped:  # a record shared by hardlinked paths: remapped once
                    continue
                if not 0 <= ch.blob_index < n:
                    raise FormatError(f"layer {layer}: chunk of {node.name[:64]!r} refers to blob {ch.blob_index}")
                ch.blob_index = remap[ch.blob_index]
                remapped.add(id(ch))
            node.ino, node.hardlink_to = ino, None
            return node
        chunks = []
        for ch in node.chunks:
            if not 0 <= ch.blob_index < n:
                raise FormatError(f"layer {layer}: chunk of {node.name[:64]!r} refers to blob {ch.blob_index}")
            chunks.append(ChunkInfo(  # built directly: cheaper than a generic copy, per chunk of every layer
                ch.digest, remap[ch.blob_index], ch.flags, ch.compressed_offset, ch.compressed_size,
                ch.uncompressed_offset, ch.uncompressed_size, ch.file_offset, ch.index,
            ))
        return _clone(node, children=[], chunks=chunks, xattrs=dict(node.xattrs), ino=ino, hardlink_to=None)

    def _layer_keys(self, layer: int, root: Node) -> tuple[dict[int, object], dict[int, bytes]]:
        """Hardlink group key per node of one layer, plus cross-layer hardlink targets."""
        keys: dict[int, object] = {}
        links: list[tuple[Node, bytes]] = []
        nodes: list[Node] = [root]
        while nodes:
            node = nodes.pop()
            is_dir = node.is_dir()
            keys[id(node)] = ("ino", node.ino) if node.ino and not is_dir else ("node", id(node))
            if node.hardlink_to is not None and not is_dir:
                links.append((node, b"/" + b"/".join(_split(node.hardlink_to))))
            nodes.extend(node.children)
        external: dict[int, bytes] = {}
        if not links:
            return keys, external  # most layers: no path index needed
        paths: dict[bytes, Node] = {}
        stack: list[tuple[bytes, Node]] = [(b"/", root)]
        while stack:  # same order as above: for duplicate paths the same node wins
            path, node = stack.pop()
            paths[path] = node
            base = b"" if path == b"/" else path
            stack.extend((base + b"/" + c.name, c) for c in node.children)
        for node, target_path in links:
            target = paths.get(target_path)
            if target is None:
                external[id(node)] = target_path
            elif not target.is_dir():
                keys[id(node)] = keys[id(target)]
        return keys, external

    # -- application --------------------------------------------------------------------

    def apply(self, layer: int, root: Node, remap: list[int]) -> None:
        if not root.is_dir():
            raise FormatError(f"layer {layer}: root is not a directory")
        keys, external = self._layer_keys(layer, root)
        joined: dict[object, Node] = {}
        top = root.children  # captured first: a consumed node's children are rebuilt by finish()
        if self.root is None:
            self.root = _Entry(self._copy(layer, root, remap, keys[id(root)]))
        else:
            self._apply_whiteouts(root)
            for node_id, target_path in external.items():
                found = self._lookup(_split(target_path))
                if found is not None and not found.node.is_dir():
                    joined.setdefault(keys[node_id], found.node)
            kids = self.root.kids
            self.root = _Entry(self._copy(layer, root, remap, keys[id(root)]))
            self.root.kids = kids
        stack = [(top, self.root)]
        while stack:
            children, entry = stack.pop()
            assert entry.kids is not None
            for child in sorted(children, key=_name_of, reverse=True):
                if child.name.startswith(C.WHITEOUT_PREFIX) and whiteout_target(child.name) is not None:
                    continue  # whiteouts are applied first and never added
                key = keys[id(child)]
                grandchildren = child.children
                new = self._copy(layer, child, remap, key)
                lower = joined.get(key) if joined else None
                if lower is not None:
                    _share(new, lower)
                old = entry.kids.get(child.name)
                if old is not None and old.kids is not None and new.is_dir():
                    old.node = new  # a replaced directory keeps its merged children
                    target = old
                else:
                    target = _Entry(new)
                    entry.kids[child.name] = target
                if child.is_dir():
                    stack.append((grandchildren, target))

    def _apply_whiteouts(self, root: Node) -> None:
        """Whiteouts of a layer, in pre-order, before any of its other nodes (§7.2)."""
        stack: list[tuple[list[bytes], Node]] = [([], root)]
        while stack:
            parts, node = stack.pop()
            for child in sorted(node.children, key=_name_of, reverse=True):
                target = whiteout_target(child.name)
                if target is None:
                    if child.is_dir():
                        stack.append((parts + [child.name], child))
                    continue
                entry = self._lookup(parts)
                if entry is None or entry.kids is None:
                    continue
                if target:
                    entry.kids.pop(target, None)
                else:
                    entry.kids.clear()

    def _lookup(self, parts: list[bytes]) -> _Entry | None:
        entry = self.root
        for part in parts:
            if entry is None or entry.kids is None:
                return None
            entry = entry.kids.get(part)
        return entry

    # -- result -------------------------------------------------------------------------

    def finish(self) -> Node:
        """Materialise children lists, drop whiteouts of the lowest layer, fix nlink."""
        assert self.root is not None
        group_size: dict[int, int] = {}
        nodes: list[Node] = []
        stack = [self.root]
        while stack:
            entry = stack.pop()
            node = entry.node
            nodes.append(node)
            if entry.kids is None:
                group_size[node.ino] = group_size.get(node.ino, 0) + 1
                continue
            kids = [e for name, e in sorted(entry.kids.items()) if whiteout_target(name) is None]
            node.children = [e.node for e in kids]
            stack.extend(kids)
        for node in nodes:
            if node.is_dir():
                node.nlink = 2 + sum(1 for c in node.children if c.is_dir())
            else:
                node.nlink = group_size[node.ino]
        return self.root.node
