"""Snapshots of real directory trees, and readable differences between two of them.

Tests that pack, mount and unpack images judge the result by comparing the whole tree
with its source: every path's type, permission bits, owner, size, times, device number,
symlink target, xattrs (every namespace), content digest and hardlink group. A snapshot
never follows symlinks and streams file content, so trees of any size can be compared.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from nydusify_core.rafs.inspect import entry_type

__all__ = ["Entry", "snapshot", "diff_trees", "FIELDS"]



@dataclass(frozen=True)
class Entry:
    """What a tree says about one path.

    mode: permission bits including setuid/setgid/sticky (`stat.S_IMODE`); the type is
    `kind`. links: for non-directories with more than one name, every path of the tree
    that shares the inode (so hardlink groups compare as sets of paths, not inode numbers).
    sha256: hex digest of a regular file's content, None for other kinds.
    """

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int  # nanoseconds
    nlink: int
    rdev: int = 0
    target: bytes | None = None
    xattrs: Mapping[bytes, bytes] = field(default_factory=dict)
    sha256: str | None = None
    links: frozenset[bytes] = frozenset()


FIELDS = tuple(f.name for f in dataclasses.fields(Entry))


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[bytes, bytes] = {}
    for name in names:
        try:
            out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    return dict(sorted(out.items()))


def _sha256(path: bytes, read_size: int) -> str:
    """Stream the content; readahead is disabled (see `erofs.read_chunkwise` for why)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        offset = 0
        while block := os.pread(fd, read_size, offset):
            digest.update(block)
            offset += len(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def snapshot(root: str | os.PathLike[str] | bytes, *, read_size: int = 1 << 20) -> dict[bytes, Entry]:
    """Every path under `root` (itself as b"/", others as b"/a/b") mapped to its `Entry`.

    `read_size` bounds each content read; pass the image's chunk size when reading through
    an EROFS mount with several blob devices.
    """
    base = os.fsencode(os.fspath(root)).rstrip(b"/") or b"/"
    raw: dict[bytes, tuple[os.stat_result, dict]] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    stack = [b"/"]
    while stack:
        rel = stack.pop()
        full = base if rel == b"/" else base + rel
        st = os.lstat(full)
        info: dict = {"xattrs": _xattrs(full)}
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(full) as it:
                names = sorted(e.name for e in it)
            stack.extend((b"" if rel == b"/" else rel) + b"/" + n for n in reversed(names))
        elif stat.S_ISLNK(st.st_mode):
            info["target"] = os.readlink(full)
        elif stat.S_ISREG(st.st_mode):
            info["sha256"] = _sha256(full, read_size)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        raw[rel] = (st, info)
    groups = {p: frozenset(paths) for paths in inodes.values() for p in paths}
    out: dict[bytes, Entry] = {}
    for rel, (st, info) in sorted(raw.items()):
        kind = entry_type(st.st_mode)
        out[rel] = Entry(
            kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, size=st.st_size,
            mtime=st.st_mtime_ns, nlink=st.st_nlink,
            rdev=st.st_rdev if kind in ("char", "block") else 0,
            links=groups.get(rel, frozenset()), **info,
        )
    return out


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, frozenset):
        return "{" + ", ".join(repr(v) for v in sorted(value)) + "}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in value.items()) + "}"
    return repr(value)


def _ignored(spec: Iterable[str], kind: str) -> set[str]:
    """Field names from specs like "mtime" (every kind) or "dir:size" (only directories)."""
    out: set[str] = set()
    for item in spec:
        scope, _, name = item.rpartition(":")
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r} (known: {', '.join(FIELDS)})")
        if not scope or scope == kind:
            out.add(name)
    return out


def diff_trees(
    expected: Mapping[bytes, Entry],
    actual: Mapping[bytes, Entry],
    *,
    ignore: Iterable[str] = (),
    ignore_paths: Mapping[bytes, Iterable[str]] | Iterable[bytes] = (),
    limit: int = 20,
) -> list[str]:
    """Readable differences, first `limit` of them (empty when the trees agree).

    ignore: field names, optionally scoped to a kind ("dir:size"), left out everywhere.
    ignore_paths: paths left out entirely, or a mapping path -> field names left out there.
    """
    ignore = tuple(ignore)
    per_path: dict[bytes, tuple[str, ...] | None]
    if isinstance(ignore_paths, Mapping):
        per_path = {p: tuple(f) for p, f in ignore_paths.items()}
    else:
        per_path = {p: None for p in ignore_paths}
    out: list[str] = []
    for path in sorted(set(expected) | set(actual)):
        if len(out) >= limit:
            out.append("... (more differences)")
            break
        skip = per_path.get(path, ())
        if skip is None:
            continue
        want, got = expected.get(path), actual.get(path)
        if want is None or got is None:
            out.append(f"{path!r}: {'unexpected' if want is None else 'missing'}"
                       f" ({(got or want).kind})")  # type: ignore[union-attr]
            continue
        if want.kind != got.kind:
            out.append(f"{path!r}: kind {want.kind} != {got.kind}")
            continue
        left_out = _ignored(ignore, want.kind) | _ignored(skip, want.kind)
        for name in FIELDS:
            if name in left_out:
                continue
            a, b = getattr(want, name), getattr(got, name)
            if a != b:
                shown = (f"{a:04o}", f"{b:04o}") if name == "mode" else (_show(a), _show(b))
                out.append(f"{path!r}: {name} {shown[0]} != {shown[1]}")
    return out

