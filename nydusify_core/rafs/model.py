"""In-memory records shared by every RAFS reader and writer.

A bootstrap is a tree of `Node`s plus a blob table; regular files carry `ChunkInfo`
records that locate their data in the blobs. Writers lay these records out (v5 or v6);
readers rebuild them. Sizes of directories and node numbering are layout details that
each writer computes itself.
"""

from __future__ import annotations

import gc
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from nydusify_core.rafs import constants as C


@dataclass
class ChunkInfo:
    """One chunk of a regular file: the 80-byte chunk record of rafs-format.md §4.8."""

    digest: bytes
    blob_index: int
    flags: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    file_offset: int
    index: int  # sequence number of the chunk in its blob (= CI index)

    @property
    def compressed(self) -> bool:
        return bool(self.flags & C.CHUNK_COMPRESSED)


@dataclass
class BlobInfo:
    """One entry of a bootstrap's blob table (v6 §3.5, v5 §4.5-4.6)."""

    blob_id: str
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    chunk_count: int = 0
    compressor: str = "zstd"
    digester: str = "blake3"
    features: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    toc_size: int = 0
    toc_digest: bytes = bytes(32)
    ci_compressor: str = "none"
    ci_offset: int = 0
    ci_compressed_size: int = 0
    ci_uncompressed_size: int = 0
    meta_digest: bytes = bytes(32)
    meta_size: int = 0
    readahead_offset: int = 0
    readahead_size: int = 0
    mapped_blkaddr: int = 0


@dataclass
class Node:
    """One path of the filesystem tree.

    Hardlinked paths are separate nodes that share `ino` (non-zero) and content; the
    first of them in tree order owns the inode in a v6 image.
    """

    name: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    size: int = 0
    rdev: int = 0
    nlink: int = 1
    ino: int = 0
    symlink: bytes | None = None
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[ChunkInfo] = field(default_factory=list)
    children: list["Node"] = field(default_factory=list)
    # Absolute path of an earlier path this node is a hard link of (tar hardlink entries,
    # v5 readers); lets a merge join a hardlink added in an upper layer to a lower file.
    hardlink_to: bytes | None = None

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def is_special(self) -> bool:
        """Character/block device, FIFO or socket."""
        return stat.S_IFMT(self.mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)

    def sort_children(self) -> None:
        self.children.sort(key=lambda n: n.name)

    def child(self, name: bytes) -> "Node | None":
        for c in self.children:
            if c.name == name:
                return c
        return None

    def walk(self, prefix: bytes = b"") -> Iterator[tuple[bytes, "Node"]]:
        """Pre-order walk yielding (absolute path, node); the root's path is b"/".

        Iterative, so trees as deep as the readers accept do not hit the recursion limit.
        """
        path = b"/" if not prefix and self.name == b"/" else prefix + b"/" + self.name
        stack: list[tuple[bytes, Node]] = [(path, self)]
        while stack:
            path, node = stack.pop()
            yield path, node
            base = b"" if path == b"/" else path
            stack.extend([(base + b"/" + c.name, c) for c in reversed(node.children)])  # a list: faster than a generator


@dataclass
class Bootstrap:
    """A parsed or to-be-written bootstrap."""

    version: int  # 5 or 6
    root: Node
    blobs: list[BlobInfo] = field(default_factory=list)
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    compressor: str = "zstd"
    digester: str = "blake3"
    explicit_uid_gid: bool = True
    flags: int = 0  # as read from disk; writers derive their own
    prefetch: list[bytes] = field(default_factory=list)  # absolute paths

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        return self.root.walk()


_gc_lock = threading.Lock()
_gc_pauses = 0  # callers inside tree_building(), across threads
_gc_was_enabled = False


@contextmanager
def tree_building() -> Iterator[None]:
    """Pause the cyclic garbage collector while a whole tree of records is created.

    Reading back or merging a bootstrap allocates tens of thousands of records that all stay
    alive; each collection the allocations trigger walks every live object and frees none
    (the trees hold no reference cycles), which costs about a third of the CPU time of a
    read-back or merge. Nested and concurrent uses share one pause; the collector is enabled
    again when the last one ends, if it was enabled before the first began.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
