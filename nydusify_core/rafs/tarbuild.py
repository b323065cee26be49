"""Tar builder: one layer tar -> RAFS bootstrap + data blob (`nydus-image create --type tar-rafs`).

This is what nydusify runs per layer (`--blob-inline-meta --features blob-toc --whiteout-spec
none --prefetch-policy fs`, rafs-format.md §6.6). The tar is read once, as a stream: each
regular file's data goes chunk by chunk from the tar entry into the `BlobWriter`, in tar
entry order (§5.5); neither a file nor the layer is ever held in memory or written to disk
anywhere but the blob.

Tree rules, following nydus-image v2.2's tar builder (`builder/tarball.rs`):

* The root starts as a directory 0755, uid/gid 0, mtime 0; a `./` entry sets its attributes.
  Parents missing from the tar are created the same way (0755, uid/gid 0, mtime 0). Such
  "implied" directories are reported (`TarBuildResult.implied_dirs`) so that a merge can
  keep the lower layers' attributes for them (`inherit_implied_dirs`); nydus-image's merge
  lets the defaults overwrite them.
* A path whose parent is not a directory is an error (upstream trips an assertion there).
* Duplicate paths: the later entry wins. A directory entry over a directory only updates
  the attributes and keeps the children; anything else replaces the node (and drops the
  subtree of a replaced directory). Chunks already written for a replaced file stay in the
  blob, unreferenced, as with nydus-image.
* A hardlink entry becomes another path of its target's inode: same attributes, xattrs and
  chunks, same `ino` group (and `hardlink_to`). Upstream takes mode/uid/gid/mtime from the
  link's own header; in a v6 image the paths share one inode anyway, and tar writers give
  both headers the same values.
* Whiteouts (`.wh.*`, `.wh..wh..opq`) are ordinary entries: the merge interprets them.
* xattrs (PAX `SCHILY.xattr.*`) whose name has a prefix RAFS cannot store (e.g.
  `system.nfs4_acl`), or that are too long, fail the build as in nydus-image
  (`RafsXAttrs::add` rejects them and the tar builder propagates the error).
* uid/gid are kept (explicit uid/gid) unless `repeatable`.
* mtime: nydus-image keeps the header's whole seconds and writes nsec 0. That is the default
  here too; `keep_mtime_nsec=True` keeps PAX sub-second mtimes (the format has the field).
  Negative mtimes (before 1970) become 0, as the tar crate's unsigned reading gives upstream.

Bootstrap conventions of the tar builder: v6 root i_ino 1; v5 HARDLINK flag on later paths
of a group and i_rdev 0xFFFFFFFF for non-devices (§3.8, §4.7).

Outputs: the blob (with `blob_inline_meta`, it embeds the bootstrap whose own blob entry
carries the placeholder id "x"*64, §6.4) and, optionally, the same tree as a separate
bootstrap whose own blob entry names the blob by the sha256 of the blob file (the OCI
layer digest, what nydusify's merged bootstrap records) with the whole-file size.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

from nydusify_core.errors import FormatError, UsageError
from nydusify_core.fsutil import atomic_write_bytes
from nydusify_core.oci.layertar import EntryType, TarEntry, layer_where
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.blob import BlobResult, BlobWriter, ChunkDict
from nydusify_core.rafs.builder import BuildOptions, BuildResult, normalize_prefetch
from nydusify_core.rafs.model import BlobInfo, Bootstrap, Node, tree_building

__all__ = [
    "TarBuildResult", "build_tar_layer", "inherit_implied_dirs", "patch_blob_table", "tar_writer_options", "write_tar_bootstrap",
]

_DIR_MODE = stat.S_IFDIR | C.TAR_IMPLIED_DIR_MODE
_S_IFMT = 0o170000
_OUT_BUFFER = 1 << 20  # blob writes: chunks average ~10 KiB, one write syscall each with the default 8 KiB buffer


def tar_writer_options(fs_version: int) -> dict[str, Any]:
    """Keyword options of `write_bootstrap` that give the tar builder's conventions."""
    if fs_version == 5:
        return {"hardlink_flag": True, "tar_rdev": True}
    return {"root_ino": C.V6_ROOT_INO_TAR_BUILDER}


def write_tar_bootstrap(bs: Bootstrap) -> bytes:
    """Serialize a bootstrap built from tar layers (or merged from them)."""
    from nydusify_core.rafs.bootstrap import write_bootstrap

    return write_bootstrap(bs, **tar_writer_options(bs.version))


@dataclass
class TarBuildResult(BuildResult):
    """`BuildResult` of a tar layer.

    has_data: the layer wrote chunks of its own (its bootstrap's blob table has its blob).
    Without data the blob file still exists when meta is inlined (it carries the
    bootstrap), but the bootstrap's blob table is empty.
    implied_dirs: absolute paths (root b"/") of the directories the layer holds only because
    a deeper entry needs them (no entry of their own, so they carry default attributes);
    `inherit_implied_dirs` uses them at merge time.
    """

    has_data: bool = False
    implied_dirs: frozenset[bytes] = frozenset()


def _show(path: bytes) -> str:
    return (b"/" + path).decode("utf-8", "backslashreplace")


class _Tree:
    """The node tree of one layer, built entry by entry (later entries win)."""

    def __init__(self, options: BuildOptions, where: str, keep_mtime_nsec: bool) -> None:
        self.where = where
        self.repeatable = options.repeatable
        self.check_v6 = options.fs_version == 6
        self.keep_nsec = keep_mtime_nsec
        self.root = Node(name=C.V5_ROOT_NAME, mode=_DIR_MODE)
        self.index: dict[bytes, Node] = {b"": self.root}
        self.kids: dict[int, dict[bytes, Node]] = {id(self.root): {}}
        self.links: list[tuple[Node, bytes]] = []
        self.implied: set[int] = {id(self.root)}  # directories no entry of the layer described
        self._groups = 0
        self.nodes = 1
        self.files = 0

    def fail(self, path: bytes, message: str) -> FormatError:
        return FormatError(f"{self.where}: entry {_show(path)!r}: {message}")

    # -- attributes ---------------------------------------------------------------------
    def _attrs(self, node: Node, entry: TarEntry) -> None:
        node.mode = entry.st_mode
        if not self.repeatable:
            node.uid, node.gid = entry.uid, entry.gid
        if entry.mtime < 0:
            node.mtime, node.mtime_nsec = 0, 0
        else:
            node.mtime = entry.mtime
            node.mtime_nsec = entry.mtime_nsec if self.keep_nsec else 0
        node.xattrs = self._xattrs(entry)

    def _xattrs(self, entry: TarEntry) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        if not entry.xattrs:
            return out
        for name, value in entry.xattrs.items():
            if not any(name.startswith(prefix) for prefix, _ in C.XATTR_PREFIXES):
                raise self.fail(entry.path, f"xattr {name.decode('utf-8', 'backslashreplace')!r} has a prefix RAFS cannot store")
            if len(name) > C.XATTR_NAME_MAX or len(value) > C.XATTR_VALUE_MAX:
                raise self.fail(entry.path, f"xattr {name[:64].decode('utf-8', 'backslashreplace')!r} is too long for RAFS")
            out[bytes(name)] = bytes(value)
        return out

    # -- paths ---------------------------------------------------------------------------
    def parent(self, path: bytes) -> tuple[Node, bytes]:
        """(parent directory node, own name) of `path`, creating missing parents."""
        head, _, name = path.rpartition(b"/")
        if self.check_v6 and len(name) > C.EROFS_NAME_LEN:
            raise self.fail(path, f"name of {len(name)} bytes exceeds the {C.EROFS_NAME_LEN}-byte limit of RAFS v6")
        if not head:
            return self.root, name
        known = self.index.get(head)  # every node of the tree is indexed by its path
        if known is not None and known.mode & _S_IFMT == stat.S_IFDIR:
            return known, name  # an existing directory: its ancestors are directories too
        node = self.root
        prefix = b""
        for part in head.split(b"/"):
            prefix = prefix + b"/" + part if prefix else part
            kids = self.kids.get(id(node))
            assert kids is not None
            child = kids.get(part)
            if child is None:
                child = Node(name=part, mode=_DIR_MODE)
                kids[part] = child
                self.implied.add(id(child))
                self.kids[id(child)] = {}
                self.index[prefix] = child
                self.nodes += 1
            elif not child.is_dir():
                raise self.fail(path, f"parent {_show(prefix)!r} is not a directory")
            node = child
        return node, name

    def _drop(self, path: bytes, node: Node) -> None:
        """Forget a replaced node and, for a directory, its whole subtree."""
        stack = [(path, node)]
        while stack:
            p, n = stack.pop()
            if self.index.get(p) is n:
                del self.index[p]
            self.nodes -= 1
            self.implied.discard(id(n))  # ids of dropped nodes may be reused by new ones
            kids = self.kids.pop(id(n), None)
            if kids:
                stack.extend((p + b"/" + name, k) for name, k in kids.items())

    def put(self, entry: TarEntry, node: Node, parent: Node, name: bytes) -> None:
        kids = self.kids[id(parent)]
        old = kids.get(name)
        if old is not None:
            self._drop(entry.path, old)
        kids[name] = node
        self.index[entry.path] = node
        self.nodes += 1
        if node.is_dir():
            self.kids[id(node)] = {}

    # -- entries -------------------------------------------------------------------------
    def directory(self, entry: TarEntry) -> None:
        if entry.path == b"":
            self._attrs(self.root, entry)
            self.implied.discard(id(self.root))
            return
        parent, name = self.parent(entry.path)
        old = self.kids[id(parent)].get(name)
        if old is not None and old.is_dir():
            self._attrs(old, entry)  # a directory entry again: new attributes, same children
            self.implied.discard(id(old))
            return
        node = Node(name=name, mode=_DIR_MODE)
        self._attrs(node, entry)
        self.put(entry, node, parent, name)

    def leaf(self, entry: TarEntry, parent: Node, name: bytes, **fields: Any) -> Node:
        node = Node(name=name, mode=entry.st_mode, **fields)
        self._attrs(node, entry)
        self.put(entry, node, parent, name)
        return node

    def hardlink(self, entry: TarEntry) -> None:
        parent, name = self.parent(entry.path)
        target = self.index.get(entry.link_target)
        if target is None or target.is_dir():
            raise self.fail(entry.path, f"hardlink target {_show(entry.link_target)!r} is not a file of this layer")
        if not target.ino:
            self._groups += 1
            target.ino = self._groups
        node = Node(
            name=name, mode=target.mode, uid=target.uid, gid=target.gid, mtime=target.mtime,
            mtime_nsec=target.mtime_nsec, size=target.size, rdev=target.rdev, ino=target.ino,
            symlink=target.symlink, xattrs=target.xattrs, chunks=list(target.chunks),
            hardlink_to=b"/" + entry.link_target,
        )
        self.put(entry, node, parent, name)
        self.links.append((node, entry.link_target))

    def finish(self) -> tuple[Node, frozenset[bytes]]:
        """Materialise children lists; keep `hardlink_to` only where it still names the group.

        Also returns the absolute paths of the implied directories still in the tree.
        """
        for node, target_path in self.links:
            target = self.index.get(target_path)
            if target is None or target.ino != node.ino:
                node.hardlink_to = None  # the target path was replaced after the link
        implied: list[bytes] = []
        stack: list[tuple[bytes, Node]] = [(b"/", self.root)]
        while stack:
            path, d = stack.pop()
            if id(d) in self.implied:
                implied.append(path)
            kids = self.kids[id(d)]
            d.children = sorted(kids.values(), key=lambda n: n.name)
            base = b"" if path == b"/" else path
            stack.extend([(base + b"/" + k.name, k) for k in d.children if k.mode & _S_IFMT == stat.S_IFDIR])
        return self.root, frozenset(implied)


def _load_dict(path: str | Path) -> Bootstrap:
    from nydusify_core.rafs.bootstrap import read_bootstrap

    try:
        return read_bootstrap(Path(path).read_bytes())
    except FormatError as exc:
        raise FormatError(f"chunk dictionary {os.fsdecode(path)}: {exc}") from None


def build_tar_layer(
    entries: Iterable[TarEntry],
    options: BuildOptions,
    blob_out: str | Path,
    bootstrap_out: str | Path | None,
    *,
    label: str = "",
    keep_mtime_nsec: bool = False,
) -> TarBuildResult:
    """Build one layer's tar entries into `blob_out` (and `bootstrap_out`); see the module doc.

    `entries` come from `iter_tar_entries` (each regular file's `data` is read here, before
    the next entry is requested). `options.blob_inline_meta` / `blob_toc` shape the blob as
    for the directory builder; nydusify sets both (toc for v6 only). `label` names the layer
    in errors. `parent_bootstrap` is not supported (tar-rafs builds are never layered);
    `chunk_dict` is. `whiteout_spec` is ignored: tar sources keep whiteouts (§7.3).
    Without file data and without inline meta no blob file is produced.
    """
    if options.parent_bootstrap is not None:
        raise UsageError("the tar builder does not take a parent bootstrap")
    if bootstrap_out is None and not options.blob_inline_meta:
        raise UsageError("a bootstrap output path is needed unless the meta is inlined into the blob")
    where = layer_where(label)
    blob_path = Path(blob_out)
    boot_path = Path(bootstrap_out) if bootstrap_out is not None else None
    dict_bs = _load_dict(options.chunk_dict) if options.chunk_dict else None
    if dict_bs is not None and (dict_bs.version != options.fs_version or dict_bs.chunk_size != options.chunk_size):
        raise UsageError(f"chunk dictionary has RAFS v{dict_bs.version} / chunk size {dict_bs.chunk_size:#x}, build uses "
                         f"v{options.fs_version} / {options.chunk_size:#x}")
    patterns = normalize_prefetch(options.prefetch)
    tree = _Tree(options, where, keep_mtime_nsec)

    def bootstrap(root: Node, blobs: list[BlobInfo]) -> Bootstrap:
        return Bootstrap(
            version=options.fs_version, root=root, blobs=blobs, chunk_size=options.chunk_size,
            compressor=options.compressor, digester=options.digester, explicit_uid_gid=not options.repeatable,
            prefetch=list(patterns),
        )

    def serialize(bs: Bootstrap) -> bytes:
        try:
            return write_tar_bootstrap(bs)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None

    blob_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=f".{blob_path.name}.", suffix=".tmp", dir=blob_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(tmp_fd, "w+b", buffering=_OUT_BUFFER) as out:
            writer = BlobWriter(out, options.blob_options(), chunk_dict=ChunkDict.from_bootstrap(dict_bs) if dict_bs else None)
            try:
                with tree_building():  # every record made here stays alive: collections would free nothing
                    for entry in entries:
                        _add_entry(tree, writer, entry)
                    root, implied = tree.finish()
                table = writer.seal()
                for node, _ in tree.links:  # the records were placeholders until sealed
                    node.chunks = [replace(c) for c in node.chunks]
                inline_blobs: list[BlobInfo] | None = None
                inline_bytes: bytes | None = None
                if options.blob_inline_meta:
                    inline_blobs = [replace(b) for b in table]  # as serialised, before finish() completes them
                    inline_bytes = serialize(bootstrap(root, table))
                    result: BlobResult = writer.finish(inline_bytes)
                else:
                    result = writer.finish()
            finally:
                writer.close()
            out.flush()
            os.fsync(out.fileno())
        own = result.blob
        blobs = [replace(b) for b in result.blob_table]
        has_data = writer.blob_index is not None
        if own is not None:
            own = replace(own, blob_id=options.blob_id or result.file_digest, compressed_size=result.size)
            if has_data:
                blobs[writer.blob_index] = replace(own)  # type: ignore[index]
        final_bs = bootstrap(root, blobs)
        boot_bytes = None
        if boot_path is not None:
            if inline_bytes is not None and inline_blobs is not None:
                boot_bytes = patch_blob_table(inline_bytes, options.fs_version, inline_blobs, blobs)
            if boot_bytes is None:
                boot_bytes = serialize(final_bs)
        if own is not None:
            os.chmod(tmp, 0o644)
            os.replace(tmp, blob_path)
        else:
            tmp.unlink()
            if blob_path.is_file() or blob_path.is_symlink():
                blob_path.unlink()  # a stale blob from an earlier build must not pass for this one
        if boot_path is not None and boot_bytes is not None:
            atomic_write_bytes(boot_path, boot_bytes)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return TarBuildResult(
        bootstrap=final_bs, bootstrap_path=boot_path, blob=own, blob_path=blob_path if own is not None else None,
        blob_size=result.size if own is not None else 0, blob_digest=result.file_digest if own is not None else None,
        chunk_count=writer.chunk_count, dedup_chunks=writer.dedup_chunks, dedup_bytes=writer.dedup_bytes,
        files=tree.files, nodes=tree.nodes, blob_table=blobs, has_data=has_data, implied_dirs=implied,
    )


def patch_blob_table(data: bytes, version: int, before: Sequence[BlobInfo], after: Sequence[BlobInfo]) -> bytes | None:
    """`data` (a bootstrap serialised with blob table `before`) as if serialised with `after`.

    The inline bootstrap and the separate one of a tar layer differ only in the layer's own
    blob record (placeholder id -> file digest, whole-file compressed size, TOC size and
    digest), so rewriting the blob table / device slots saves serialising the tree a second
    time. Only those fields may differ, and ids must keep their length (the layout depends
    on it); otherwise None: the caller serialises from scratch.
    """
    if len(before) != len(after):
        return None
    changed = []
    for i, (b, a) in enumerate(zip(before, after)):
        if b == a:
            continue
        if len(b.blob_id) != len(a.blob_id) or replace(b, **{f: getattr(a, f) for f in _V6_BLOB_ENTRY_PATCHED}) != a:
            return None
        changed.append(i)
    if not changed:
        return data
    try:
        ids = [a.blob_id.encode("ascii") for a in after]
    except UnicodeEncodeError:
        return None
    buf = bytearray(data)
    if version == 6:
        from nydusify_core.rafs.v6_layout import BLOB_ENTRY, DEVICE_SLOT, EXT_SUPERBLOCK

        table_off = EXT_SUPERBLOCK.unpack_from(buf, C.V6_EXT_SUPER_OFFSET)[1]
        for i in changed:
            slot = C.V6_DEVTABLE_OFFSET + C.V6_DEVICE_SLOT_SIZE * i
            _, blocks, blkaddr = DEVICE_SLOT.unpack_from(buf, slot)
            DEVICE_SLOT.pack_into(buf, slot, ids[i], blocks, blkaddr)
            pos = table_off + C.V6_BLOB_ENTRY_SIZE * i
            fields = list(BLOB_ENTRY.unpack_from(buf, pos))
            for name, k in _V6_BLOB_ENTRY_PATCHED.items():
                fields[k] = getattr(after[i], name)
            fields[_V6_BLOB_ENTRY_PATCHED["blob_id"]] = ids[i]
            BLOB_ENTRY.pack_into(buf, pos, *fields)
        return bytes(buf)
    if version == 5:
        from nydusify_core.rafs.v5 import _EXT_BLOB, V5Superblock, _blob_table

        sb = V5Superblock.unpack(bytes(buf[:C.V5_SUPERBLOCK_SIZE]))
        table = _blob_table(after)
        if len(table) != sb.blob_table_size or sb.ext_blob_table_entries != len(after):
            return None
        buf[sb.blob_table_offset:sb.blob_table_offset + len(table)] = table
        for i in changed:
            a = after[i]
            _EXT_BLOB.pack_into(buf, sb.ext_blob_table_offset + C.V5_EXT_BLOB_ENTRY_SIZE * i,
                                a.chunk_count, a.features, a.uncompressed_size, a.compressed_size)
        return bytes(buf)
    return None


# The BlobInfo fields the separate bootstrap's own record may change (the blob's TOC is
# written after the inline bootstrap), with their field index in v6_layout.BLOB_ENTRY. RAFS
# v5 stores no TOC fields; its blob and extended tables are rewritten whole.
_V6_BLOB_ENTRY_PATCHED = {"blob_id": 0, "compressed_size": 7, "toc_size": 9, "toc_digest": 14}


def _add_entry(tree: _Tree, writer: BlobWriter, entry: TarEntry) -> None:
    """One tar entry into the tree; a regular file's data is streamed into the blob now."""
    if entry.type is EntryType.DIR:
        tree.directory(entry)
    elif entry.type is EntryType.HARDLINK:
        tree.hardlink(entry)
    else:
        parent, name = tree.parent(entry.path)
        if entry.type is EntryType.REG:
            if entry.data is None:
                raise tree.fail(entry.path, "regular file without a data stream")
            chunks = writer.add_file(entry.data, entry.size)
            tree.leaf(entry, parent, name, size=entry.size, chunks=chunks)
            tree.files += 1
        elif entry.type is EntryType.SYMLINK:
            tree.leaf(entry, parent, name, size=len(entry.link_target), symlink=entry.link_target)
        else:  # character/block device, FIFO: rdev as upstream's makedev(major, minor)
            tree.leaf(entry, parent, name, rdev=os.makedev(entry.devmajor, entry.devminor))


# -- merge support ---------------------------------------------------------------------------


def _removed_in(index: dict[bytes, Node], parts: list[bytes]) -> bool:
    """Whether a layer (its path index) removes the lower path `parts` (which it does not hold)."""
    parent = b""
    for k, part in enumerate(parts):
        if parent + b"/" + C.WHITEOUT_OPAQUE in index or parent + b"/" + C.WHITEOUT_PREFIX + part in index:
            return True  # an opaque ancestor, or a whiteout of the path or of an ancestor
        parent = parent + b"/" + part
        if k < len(parts) - 1:
            node = index.get(parent)
            if node is not None and not node.is_dir():
                return True  # an ancestor became a non-directory
    return False


def inherit_implied_dirs(layers: Sequence[Bootstrap], implied: Sequence[Collection[bytes]]) -> int:
    """Give each upper layer's implied directories the attributes they have below; in place.

    A tar layer that adds `a/b/f` without entries for `a/` or `a/b/` does not change those
    directories (what `tar -x` and containerd do), but its bootstrap must hold them, with
    default attributes (0755, uid/gid 0, mtime 0). nydus-image's merge replaces a lower
    directory's attributes with the upper node's, so those defaults would overwrite the
    real ones. Called before `merge_bootstraps`, this copies mode, owner, times and xattrs
    from the nearest lower layer where the path is a directory (itself already fixed up),
    unless a layer in between removes it (whiteout, opaque ancestor, non-directory
    ancestor). Returns how many directories were changed.
    """
    n = len(layers)
    if len(implied) != n:
        raise UsageError(f"{len(implied)} implied-directory sets given for {n} layers")
    indexes: list[dict[bytes, Node] | None] = [None] * n

    def index(j: int) -> dict[bytes, Node]:
        idx = indexes[j]
        if idx is None:
            idx = indexes[j] = dict(layers[j].walk())
        return idx

    changed = 0
    for i in range(1, n):
        for path in sorted(implied[i]):
            node = layers[i].root if path == b"/" else index(i).get(path)
            if node is None or not node.is_dir():
                continue
            parts = [p for p in path.split(b"/") if p]
            for j in range(i - 1, -1, -1):
                lower = layers[j].root if not parts else index(j).get(path)
                if lower is not None:
                    if lower.is_dir():
                        node.mode, node.uid, node.gid = lower.mode, lower.uid, lower.gid
                        node.mtime, node.mtime_nsec, node.xattrs = lower.mtime, lower.mtime_nsec, dict(lower.xattrs)
                        changed += 1
                    break
                if _removed_in(index(j), parts):
                    break
    return changed
