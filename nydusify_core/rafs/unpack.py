"""Turn a bootstrap and its blobs back into files: a directory or a tar stream.

Every chunk is digest-verified as it is read. Paths come from a parsed bootstrap, whose
readers refuse names with `/`, NUL, `.` or `..`; files are created relative to directory
file descriptors with O_NOFOLLOW, so nothing is ever written outside the output, even
when the image holds symlinks pointing anywhere.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from nydusify_core.errors import FormatError, IntegrityError, NotFoundError, UsageError
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.model import BlobInfo, Bootstrap, ChunkInfo, Node

log = logging.getLogger(__name__)

BlobOpener = Callable[[int, BlobInfo], BlobReader]


class _FileBlobReader(BlobReader):
    """A blob reader that knows its file, so errors can name it."""

    def __init__(self, f: IO[bytes], blob: BlobInfo, *, source: Path) -> None:
        super().__init__(f, blob)
        self.source = source


def blob_dir_opener(blob_dir: str | Path, blob_file: str | Path | None = None) -> tuple[BlobOpener, Callable[[], None]]:
    """Open blobs as `<blob_dir>/<blob id>` (or the one `blob_file`); returns (opener, closer)."""
    readers: dict[int, BlobReader] = {}
    files: list[IO[bytes]] = []

    def opener(index: int, blob: BlobInfo) -> BlobReader:
        if index not in readers:
            path = Path(blob_file) if blob_file else Path(blob_dir) / blob.blob_id
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise NotFoundError(f"blob {blob.blob_id} not found at {path}") from None
            files.append(f)
            readers[index] = _FileBlobReader(f, blob, source=path)
        return readers[index]

    def close() -> None:
        for f in files:
            f.close()

    return opener, close


class FileData(io.RawIOBase):
    """A regular file's content, produced chunk by chunk (verified) as it is read."""

    def __init__(self, node: Node, blobs: list[BlobInfo], opener: BlobOpener, path: bytes) -> None:
        self._chunks = iter(sorted(node.chunks, key=lambda c: c.file_offset))
        self._blobs, self._opener, self._path = blobs, opener, path
        self._buf = memoryview(b"")
        self._left = node.size
        self._expected_offset = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        chunk: ChunkInfo | None = next(self._chunks, None)
        if chunk is None:
            raise FormatError(f"{os.fsdecode(self._path)}: chunks end {self._left} bytes before the file's size")
        if chunk.file_offset != self._expected_offset:
            raise FormatError(f"{os.fsdecode(self._path)}: chunk at file offset {chunk.file_offset}, expected {self._expected_offset}")
        if not 0 <= chunk.blob_index < len(self._blobs):
            raise FormatError(f"{os.fsdecode(self._path)}: chunk refers to blob {chunk.blob_index}, which is not in the blob table")
        blob = self._blobs[chunk.blob_index]
        reader = self._opener(chunk.blob_index, blob)
        try:
            data = reader.read_chunk(chunk, compressor=blob.compressor, digester=blob.digester)
        except (FormatError, IntegrityError) as exc:  # name both the file and the blob
            source = getattr(reader, "source", None) or blob.blob_id
            raise type(exc)(f"{os.fsdecode(self._path)}: {exc} (blob {source})") from None
        self._expected_offset += len(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        if not self._buf:
            self._buf = memoryview(self._next_chunk())
        n = min(len(buffer), len(self._buf), self._left)
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._left -= n
        return n


def _walk(bs: Bootstrap) -> Iterator[tuple[bytes, Node, Node | None]]:
    """(path, node, parent) in pre-order; the root's path is b"."."""
    stack: list[tuple[bytes, Node, Node | None]] = [(b".", bs.root, None)]
    while stack:
        path, node, parent = stack.pop()
        yield path, node, parent
        for child in reversed(node.children):
            stack.append((child.name if path == b"." else path + b"/" + child.name, child, node))


# --- to a directory ----------------------------------------------------------------------


def unpack_to_dir(bs: Bootstrap, opener: BlobOpener, output: str | Path) -> int:
    """Extract the tree into `output` (created; must not exist). Returns the entry count.

    The tree is built in a temporary sibling directory and renamed into place at the end,
    so `output` appears whole or not at all.
    """
    output = Path(output)
    if output.exists():
        raise UsageError(f"output {output} already exists")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        count = _extract(bs, opener, tmp)
        os.rename(tmp, output)
        return count
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract(bs: Bootstrap, opener: BlobOpener, root: Path) -> int:
    dir_fds: dict[int, int] = {id(bs.root): os.open(root, os.O_RDONLY | os.O_DIRECTORY)}
    dirs: list[tuple[int, Node]] = []
    linked: dict[bytes, bytes] = {}
    count = 0
    can_chown = os.geteuid() == 0
    try:
        for path, node, parent in _walk(bs):
            count += 1
            if parent is None:
                dirs.append((dir_fds[id(node)], node))
                continue
            pfd = dir_fds[id(parent)]
            name = node.name
            if node.is_reg():
                # a hardlink group is keyed by the path readers name as its first; whichever
                # member this walk reaches first gets the data, the others link to it
                key = (node.hardlink_to or b"/" + path).lstrip(b"/")
                if key in linked:
                    os.link(linked[key], name, src_dir_fd=dir_fds[id(bs.root)], dst_dir_fd=pfd, follow_symlinks=False)
                    continue
                linked[key] = path
            if node.is_dir():
                os.mkdir(name, 0o700, dir_fd=pfd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
                dir_fds[id(node)] = fd
                dirs.append((fd, node))
                continue
            if node.is_reg():
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(FileData(node, bs.blobs, opener, path), out, 1 << 20)
                    out.flush()  # before utime, or the final write would reset the mtime
                    _apply(out.fileno(), node, can_chown)
            elif node.is_symlink():
                os.symlink(node.symlink or b"", name, dir_fd=pfd)
                if can_chown:
                    os.chown(name, node.uid, node.gid, dir_fd=pfd, follow_symlinks=False)
                _set_xattrs(name, node, pfd)
                os.utime(name, ns=_ns(node), dir_fd=pfd, follow_symlinks=False)
            else:
                os.mknod(name, stat.S_IFMT(node.mode) | 0o600, node.rdev, dir_fd=pfd)
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_PATH", 0), dir_fd=pfd)
                try:
                    _apply_path(name, pfd, node, can_chown)
                finally:
                    os.close(fd)
        for fd, node in reversed(dirs):  # children first, so directory mtimes stick
            _apply(fd, node, can_chown)
    finally:
        for fd in dir_fds.values():
            os.close(fd)
    return count


def _ns(node: Node) -> tuple[int, int]:
    t = node.mtime * 1_000_000_000 + node.mtime_nsec
    return (t, t)


def _apply(fd: int, node: Node, can_chown: bool) -> None:
    if can_chown:
        os.fchown(fd, node.uid, node.gid)
    os.fchmod(fd, stat.S_IMODE(node.mode))
    for key, value in node.xattrs.items():
        _setxattr(lambda k, v: os.setxattr(fd, k, v), key, value)
    os.utime(fd, ns=_ns(node))


def _apply_path(name: bytes, dir_fd: int, node: Node, can_chown: bool) -> None:
    if can_chown:
        os.chown(name, node.uid, node.gid, dir_fd=dir_fd, follow_symlinks=False)
    os.chmod(name, stat.S_IMODE(node.mode), dir_fd=dir_fd, follow_symlinks=False)
    _set_xattrs(name, node, dir_fd)
    os.utime(name, ns=_ns(node), dir_fd=dir_fd, follow_symlinks=False)


def _set_xattrs(name: bytes, node: Node, dir_fd: int) -> None:
    if not node.xattrs:
        return
    # os.setxattr has no dir_fd: go through /proc/self/fd so the parent is pinned
    path = f"/proc/self/fd/{dir_fd}/".encode() + name
    for key, value in node.xattrs.items():
        _setxattr(lambda k, v: os.setxattr(path, k, v, follow_symlinks=False), key, value)


def _setxattr(setter: Callable[[bytes, bytes], None], key: bytes, value: bytes) -> None:
    try:
        setter(key, value)
    except OSError as exc:  # e.g. user.* on a symlink, trusted.* without privilege
        log.warning("cannot set xattr %s: %s", os.fsdecode(key), exc.strerror)


# --- to a tar ------------------------------------------------------------------------------


def unpack_to_tar(bs: Bootstrap, opener: BlobOpener, out: IO[bytes]) -> int:
    """Write the tree as a PAX tar (xattrs as SCHILY.xattr.*) to `out`. Returns entry count."""
    count = 0
    linked: dict[bytes, bytes] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for path, node, parent in _walk(bs):
            count += 1
            name = os.fsdecode(path) if parent is not None else "."
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(node.mode)
            info.uid, info.gid = node.uid, node.gid
            info.mtime = node.mtime
            pax: dict[str, str] = {}
            if node.mtime_nsec:  # exact nanoseconds; a float mtime would round them
                pax["mtime"] = f"{node.mtime}.{node.mtime_nsec:09d}"
            for k, v in node.xattrs.items():
                pax["SCHILY.xattr." + os.fsdecode(k)] = v.decode("utf-8", "surrogateescape")
            info.pax_headers = pax
            kind = stat.S_IFMT(node.mode)
            if kind == stat.S_IFREG:
                key = (node.hardlink_to or b"/" + path).lstrip(b"/")
                if key in linked:
                    info.type, info.linkname = tarfile.LNKTYPE, os.fsdecode(linked[key])
                    tar.addfile(info)
                    continue
                linked[key] = path
            if node.is_dir():
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif node.is_reg():
                info.size = node.size
                tar.addfile(info, io.BufferedReader(FileData(node, bs.blobs, opener, path), 1 << 20))
            elif node.is_symlink():
                info.type, info.linkname = tarfile.SYMTYPE, os.fsdecode(node.symlink or b"")
                tar.addfile(info)
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
                tar.addfile(info)
            elif kind == stat.S_IFIFO:
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                log.warning("skipping socket %s: tar cannot hold sockets", name)
                count -= 1
    return count
