"""Directory builder: a local directory -> RAFS bootstrap + data blob (`nydus-image create`).

The walk uses lstat only (symlinks are never followed), keeps names as bytes, groups
hardlinks by (st_dev, st_ino) and reads xattrs with the prefixes RAFS can store
(rafs-format.md §3.9). File data is streamed chunk by chunk into a `BlobWriter` in
nydus' order (§5.5): prefetch files first in path order, then every other node in node
index order (§3.16.1). Outputs are written to temporary files and renamed into place.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

from nydusify_core.errors import FormatError, IntegrityError, UsageError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.blob import BlobOptions, BlobResult, BlobWriter, ChunkDict, check_chunk_size
from nydusify_core.rafs.compression import check_algorithm
from nydusify_core.rafs.digest import check_digester
from nydusify_core.rafs.model import BlobInfo, Bootstrap, Node

__all__ = ["BuildOptions", "BuildResult", "build_directory", "normalize_prefetch", "scan_directory"]

WHITEOUT_SPECS = ("oci", "overlayfs", "none")
_OVERLAY_OPAQUE_XATTR = b"trusted.overlay.opaque"
_OVERLAY_OPAQUE_VALUE = b"y"


@dataclass(frozen=True)
class BuildOptions:
    """`nydus-image create --source-type directory` options.

    prefetch: absolute path patterns (the `--prefetch-policy fs` stdin list).
    parent_bootstrap / chunk_dict: bootstraps whose chunks are reused (§7.1); with a parent
    the result is the parent tree with this directory applied on top (OCI whiteouts).
    blob_inline_meta / blob_toc: `--blob-inline-meta`, `--features blob-toc`.
    whiteout_spec: "oci" drops `.wh.*` entries, "overlayfs" drops 0:0 character devices
    and the opaque xattr, "none" keeps everything (as nydusify does).
    """

    fs_version: int = 6
    compressor: str = "zstd"
    digester: str = "blake3"
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    aligned_chunk: bool = False
    repeatable: bool = False
    prefetch: Sequence[str | bytes] = ()
    parent_bootstrap: str | Path | None = None
    chunk_dict: str | Path | None = None
    blob_inline_meta: bool = False
    blob_toc: bool = False
    blob_id: str | None = None
    whiteout_spec: str = "oci"
    ci_compressor: str = "zstd"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.fs_version not in (5, 6):
            raise UsageError(f"fs_version must be 5 or 6, not {self.fs_version}")
        try:
            check_algorithm(self.compressor)
            check_digester(self.digester)
            check_chunk_size(self.chunk_size)
        except FormatError as exc:
            raise UsageError(str(exc)) from None
        if self.blob_toc and self.fs_version != 6:
            raise UsageError("the blob-toc feature needs fs_version 6")
        if self.whiteout_spec not in WHITEOUT_SPECS:
            raise UsageError(f"whiteout spec must be one of {', '.join(WHITEOUT_SPECS)}")

    def blob_options(self) -> BlobOptions:
        return BlobOptions(
            fs_version=self.fs_version, compressor=self.compressor, digester=self.digester,
            chunk_size=self.chunk_size, aligned_chunk=self.aligned_chunk, inline_meta=self.blob_inline_meta,
            blob_toc=self.blob_toc, ci_compressor=self.ci_compressor, blob_id=self.blob_id, threads=self.threads,
        )


@dataclass
class BuildResult:
    """Outputs of `build_directory`.

    bootstrap: the written tree (with final blob table); blob: this layer's blob record
    (None when the tree has no file data and meta is not inlined, in which case no blob
    file exists); blob_digest: sha256 hex of the blob file (OCI layer digest).
    """

    bootstrap: Bootstrap
    bootstrap_path: Path | None
    blob: BlobInfo | None
    blob_path: Path | None
    blob_size: int = 0
    blob_digest: str | None = None
    chunk_count: int = 0
    dedup_chunks: int = 0
    dedup_bytes: int = 0
    files: int = 0
    nodes: int = 0
    blob_table: list[BlobInfo] = field(default_factory=list)

    @property
    def blob_id(self) -> str | None:
        return self.blob.blob_id if self.blob else None


# -- walking -------------------------------------------------------------------------------


def _read_xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    out: dict[bytes, bytes] = {}
    for name in names:
        raw = name.encode("utf-8", "surrogateescape")
        if not any(raw.startswith(prefix) for prefix, _ in C.XATTR_PREFIXES):
            raise FormatError(f"{os.fsdecode(path)}: xattr {name!r} has a prefix RAFS cannot store")
        try:
            out[raw] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
    return out


def _node(path: bytes, name: bytes, st: os.stat_result, *, repeatable: bool, root: bool) -> Node:
    node = Node(name=name, mode=st.st_mode)
    if not repeatable:
        node.uid, node.gid = st.st_uid, st.st_gid
    if not root:  # nydus forces the root's mtime to 0 for repeatable layers
        node.mtime, node.mtime_nsec = divmod(st.st_mtime_ns, 1_000_000_000)
    node.rdev = st.st_rdev
    if stat.S_ISREG(st.st_mode):
        node.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        node.symlink = os.readlink(path)
        node.size = len(node.symlink)
    node.xattrs = _read_xattrs(path)
    return node


def _skip_whiteout(name: bytes, st: os.stat_result, spec: str, layered: bool) -> bool:
    if layered or spec == "none":
        return False
    if spec == "oci":
        return name.startswith(C.WHITEOUT_PREFIX)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlayfs removal marker


@dataclass
class _Scan:
    root: Node
    paths: dict[int, bytes]  # id(node) -> absolute source path
    order: list[Node]  # node-index order (§3.16.1), root first
    rel: dict[int, bytes]  # id(node) -> path inside the image ("/a/b")


def scan_directory(source: str | Path, options: BuildOptions, *, layered: bool = False) -> _Scan:
    """Build the `Node` tree of `source` (lstat, no file data read)."""
    src = os.fsencode(os.path.abspath(source))
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{os.fsdecode(src)} is not a directory")
    root = _node(src, C.V5_ROOT_NAME, st, repeatable=options.repeatable, root=True)
    paths = {id(root): src}
    rel = {id(root): b"/"}
    order = [root]
    links: dict[tuple[int, int], int] = {}
    stack = [root]
    while stack:  # numbering: a directory's children get consecutive indexes, then depth first
        d = stack.pop()
        dpath, drel = paths[id(d)], rel[id(d)]
        with os.scandir(dpath) as it:
            names = sorted(e.name for e in it)
        kids = []
        for name in names:
            cpath = os.path.join(dpath, name)
            cst = os.lstat(cpath)
            if _skip_whiteout(name, cst, options.whiteout_spec, layered):
                continue
            child = _node(cpath, name, cst, repeatable=options.repeatable, root=False)
            if options.whiteout_spec == "overlayfs" and not layered and stat.S_ISDIR(cst.st_mode):
                if child.xattrs.get(_OVERLAY_OPAQUE_XATTR) == _OVERLAY_OPAQUE_VALUE:
                    del child.xattrs[_OVERLAY_OPAQUE_XATTR]
            if not stat.S_ISDIR(cst.st_mode) and cst.st_nlink > 1:
                child.ino = links.setdefault((cst.st_dev, cst.st_ino), len(links) + 1)
            paths[id(child)] = cpath
            rel[id(child)] = (b"" if drel == b"/" else drel) + b"/" + name
            kids.append(child)
        d.children = kids
        order.extend(kids)
        stack.extend(k for k in reversed(kids) if k.is_dir())
    return _Scan(root, paths, order, rel)


# -- prefetch ------------------------------------------------------------------------------


def normalize_prefetch(patterns: Sequence[str | bytes]) -> list[bytes]:
    """Absolute, slash-normalised patterns; relative ones and repeats inside earlier ones dropped."""
    kept: list[bytes] = []
    for raw in patterns:
        p = (os.fsencode(raw) if isinstance(raw, str) else bytes(raw)).strip()
        if not p.startswith(b"/"):
            continue
        p = b"/" + b"/".join(c for c in p.split(b"/") if c)
        if any(_under(p, k) for k in kept):
            continue
        kept.append(p)
    return kept


def _under(path: bytes, prefix: bytes) -> bool:
    return prefix == b"/" or path == prefix or path.startswith(prefix + b"/")


def _components(path: bytes) -> tuple[bytes, ...]:
    return tuple(c for c in path.split(b"/") if c)


def _dump_order(scan: _Scan, patterns: list[bytes]) -> Iterator[Node]:
    """Regular files with data: prefetch files in path order, then node-index order (§5.5)."""
    files = [n for n in scan.order if n.is_reg() and n.size > 0]
    pre = sorted(
        (n for n in files if any(_under(scan.rel[id(n)], p) for p in patterns)),
        key=lambda n: _components(scan.rel[id(n)]),
    )
    seen = {id(n) for n in pre}
    yield from pre
    yield from (n for n in files if id(n) not in seen)


# -- output --------------------------------------------------------------------------------


class _AtomicFile:
    """A temporary file next to `path`, renamed onto it by `commit()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w+b")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    f = _AtomicFile(path)
    try:
        f.file.write(data)
        f.commit()
    except BaseException:
        f.discard()
        raise


def _serialize(bs: Bootstrap) -> bytes:
    from nydusify_core.rafs.bootstrap import write_bootstrap

    return write_bootstrap(bs)


def _load_bootstrap(path: str | Path) -> Bootstrap:
    from nydusify_core.rafs.bootstrap import read_bootstrap

    try:
        return read_bootstrap(Path(path).read_bytes())
    except FormatError as exc:  # say which of the parent / dictionary bootstraps is broken
        raise FormatError(f"bootstrap {os.fsdecode(path)}: {exc}") from None


def build_directory(
    source_dir: str | Path,
    options: BuildOptions,
    bootstrap_out: str | Path | None,
    blob_out: str | Path | None,
) -> BuildResult:
    """Build `source_dir` into a bootstrap and a blob (see module docstring).

    `bootstrap_out` may be None only with inline meta (the bootstrap then lives in the
    blob). Without file data (and without inline meta) no blob is produced: `blob_out` is
    not created (a stale file there is removed, as nydus-image does) and the blob table is
    empty.
    """
    if bootstrap_out is None and not options.blob_inline_meta:
        raise UsageError("a bootstrap output path is needed unless the meta is inlined into the blob")
    if blob_out is None:
        raise UsageError("a blob output path is needed")
    blob_path = Path(blob_out)
    boot_path = Path(bootstrap_out) if bootstrap_out is not None else None

    parent_bs = _load_bootstrap(options.parent_bootstrap) if options.parent_bootstrap else None
    dict_bs = _load_bootstrap(options.chunk_dict) if options.chunk_dict else None
    for other, what in ((parent_bs, "parent bootstrap"), (dict_bs, "chunk dictionary")):
        if other is not None and (other.version != options.fs_version or other.chunk_size != options.chunk_size):
            raise UsageError(f"{what} has RAFS v{other.version} / chunk size {other.chunk_size:#x}, build uses "
                             f"v{options.fs_version} / {options.chunk_size:#x}")
    patterns = normalize_prefetch(options.prefetch)
    scan = scan_directory(source_dir, options, layered=parent_bs is not None)

    out = _AtomicFile(blob_path)
    writer = BlobWriter(
        out.file, options.blob_options(),
        chunk_dict=ChunkDict.from_bootstrap(dict_bs) if dict_bs else None,
        parent=ChunkDict.from_bootstrap(parent_bs) if parent_bs else None,
    )
    try:
        leaders: dict[int, Node] = {}
        followers: list[tuple[Node, Node]] = []
        nfiles = 0
        for node in _dump_order(scan, patterns):
            if node.ino:
                leader = leaders.setdefault(node.ino, node)
                if leader is not node:
                    followers.append((node, leader))
                    continue
            nfiles += 1
            src = scan.paths[id(node)]
            with open(os.open(src, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)), "rb", buffering=0) as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise IntegrityError(f"{os.fsdecode(src)} changed type during the build")
                node.chunks = writer.add_file(f, node.size)
        table = writer.seal()
        for node, leader in followers:  # later paths of a hardlink share the first one's chunks
            if node.size != leader.size:
                raise IntegrityError(f"hardlinked {os.fsdecode(scan.paths[id(node)])} changed size during the build")
            node.chunks = [replace(c) for c in leader.chunks]

        def tree(blobs: list[BlobInfo]) -> Bootstrap:
            bs = Bootstrap(
                version=options.fs_version, root=scan.root, blobs=blobs, chunk_size=options.chunk_size,
                compressor=options.compressor, digester=options.digester,
                explicit_uid_gid=not options.repeatable, prefetch=list(patterns),
            )
            if parent_bs is not None:
                from nydusify_core.rafs.merge import merge_bootstraps

                shared = {b.blob_id for b in parent_bs.blobs} | {b.blob_id for b in (dict_bs.blobs if dict_bs else [])}
                bs = merge_bootstraps([parent_bs, bs], chunk_dict_blob_ids=shared, prefetch=list(patterns))
                bs.explicit_uid_gid = not options.repeatable
            return bs

        if options.blob_inline_meta:
            inline_bs = tree(table)
            result: BlobResult = writer.finish(_serialize(inline_bs))
        else:
            result = writer.finish()
        final_bs = tree(result.blob_table)
        boot_bytes = _serialize(final_bs) if boot_path is not None else None
        if result.blob is not None:
            out.commit()
        else:
            out.discard()
            if blob_path.is_file() or blob_path.is_symlink():
                blob_path.unlink()
        if boot_path is not None and boot_bytes is not None:
            _write_bytes_atomic(boot_path, boot_bytes)
    except BaseException:
        writer.close()
        out.discard()
        raise
    return BuildResult(
        bootstrap=final_bs, bootstrap_path=boot_path, blob=result.blob,
        blob_path=blob_path if result.blob is not None else None, blob_size=result.size if result.blob else 0,
        blob_digest=result.file_digest if result.blob else None, chunk_count=writer.chunk_count,
        dedup_chunks=writer.dedup_chunks, dedup_bytes=writer.dedup_bytes, files=nfiles, nodes=len(scan.order),
        blob_table=result.blob_table,
    )
