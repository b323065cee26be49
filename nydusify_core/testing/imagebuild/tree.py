"""A comparable record of a directory tree, for checking a conversion against the expected rootfs."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

READ_SIZE = 1 << 20
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
          stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFSOCK: "socket"}


@dataclass(frozen=True)
class TreeEntry:
    kind: str  # file, dir, symlink, fifo, char, block, socket
    mode: int  # permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    size: int  # regular files only, else 0
    content: str  # sha256 of a file's data, a symlink's target (surrogate-escaped), else ""
    rdev: tuple[int, int] | None  # (major, minor) of device nodes
    xattrs: tuple[tuple[str, bytes], ...]  # sorted
    mtime_ns: int
    link_group: str  # for files with nlink > 1: the smallest path of the group, else ""


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # filesystems without xattr support
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def tree_entries(root: str | Path) -> dict[str, TreeEntry]:
    """Every entry below `root` (not `root` itself), keyed by its relative path; non-UTF-8
    names appear surrogate-escaped (`os.fsdecode`)."""
    root = Path(root)
    entries: dict[str, TreeEntry] = {}
    inodes: dict[tuple[int, int], str] = {}
    pending: list[tuple[str, os.stat_result, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            pending.append((path.relative_to(root).as_posix(), os.lstat(path), path))
    for rel, st, _ in sorted(pending):  # smallest path of a hardlink group comes first
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), rel)
    for rel, st, path in pending:
        fmt = stat.S_IFMT(st.st_mode)
        kind = _KINDS[fmt]
        content = _file_digest(path) if kind == "file" else os.readlink(path) if kind == "symlink" else ""
        entries[rel] = TreeEntry(
            kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
            size=st.st_size if kind == "file" else 0, content=content,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else None,
            xattrs=_xattrs(path),
            mtime_ns=st.st_mtime_ns,
            link_group=inodes.get((st.st_dev, st.st_ino), "") if kind == "file" else "",
        )
    return dict(sorted(entries.items()))
