"""Filesystem rule: the source rootfs (replayed from its layers, see `rootfs`) and the Nydus
tree must hold the same paths with the same type, mode, owner, size, mtime, symlink target,
xattrs, device numbers and hardlink groups.

mtime is compared in whole seconds: nydus-image (and our builder by default) keeps only the
seconds of tar mtimes. Directory sizes and link counts are layout details and not compared.
"""

from __future__ import annotations

import os
import stat
from typing import Iterable

from nydusify_core.checker.report import Problems
from nydusify_core.checker.rootfs import Rec
from nydusify_core.rafs.model import Bootstrap, Node


def show(path: bytes) -> str:
    return os.fsdecode(path)


def _fields(rec: Rec | Node, nydus: bool) -> dict[str, object]:
    mode = rec.mode
    out: dict[str, object] = {"type": stat.S_IFMT(mode), "mode": f"{stat.S_IMODE(mode):04o}", "uid": rec.uid, "gid": rec.gid, "mtime": rec.mtime}
    if stat.S_ISREG(mode):
        out["size"] = rec.size
    if stat.S_ISLNK(mode):
        out["symlink"] = (rec.symlink if nydus else rec.link) or b""  # type: ignore[union-attr]
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        out["rdev"] = f"{os.major(rec.rdev)}:{os.minor(rec.rdev)}"
    out["xattrs"] = dict(sorted(rec.xattrs.items()))
    return out


_TYPE_NAMES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
               stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _value(key: str, value: object) -> str:
    if key == "type":
        return _TYPE_NAMES.get(value, str(value))  # type: ignore[arg-type]
    if isinstance(value, bytes):
        return repr(show(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show(k)}={v[:32]!r}" for k, v in value.items()) + "}"
    return str(value)


def nydus_paths(bs: Bootstrap) -> dict[bytes, Node]:
    return dict(bs.walk())


def _groups(items: Iterable[tuple[bytes, object]]) -> dict[bytes, frozenset[bytes]]:
    """path -> the set of paths sharing its inode, for hardlinked regular files only."""
    by_key: dict[object, list[bytes]] = {}
    for path, key in items:
        by_key.setdefault(key, []).append(path)
    out: dict[bytes, frozenset[bytes]] = {}
    for paths in by_key.values():
        if len(paths) > 1:
            group = frozenset(paths)
            for p in paths:
                out[p] = group
    return out


def compare_trees(source: dict[bytes, Rec], nydus: dict[bytes, Node], problems: Problems) -> int:
    """Add one problem line per differing path; returns how many paths were compared."""
    for path in sorted(source.keys() - nydus.keys()):
        problems.add(f"missing in the Nydus image: {show(path)}")
    for path in sorted(nydus.keys() - source.keys()):
        problems.add(f"not in the source image: {show(path)}")
    common = sorted(source.keys() & nydus.keys())
    for path in common:
        want, got = _fields(source[path], False), _fields(nydus[path], True)
        if want != got:
            diffs = [f"{k} {_value(k, want.get(k))} in source, {_value(k, got.get(k))} in Nydus"
                     for k in want.keys() | got.keys() if want.get(k) != got.get(k)]
            problems.add(f"{show(path)}: " + "; ".join(sorted(diffs)))
    src_groups = _groups((p, id(source[p])) for p in common if stat.S_ISREG(source[p].mode))
    nyd_groups = _groups((p, nydus[p].hardlink_to or p) for p in common if nydus[p].is_reg())
    reported: set[frozenset[bytes]] = set()
    for path in common:
        a, b = src_groups.get(path, frozenset((path,))), nyd_groups.get(path, frozenset((path,)))
        if a != b and a not in reported:
            reported.add(a)
            problems.add(f"{show(path)}: hard links {sorted(map(show, a))} in source, {sorted(map(show, b))} in Nydus")
    return len(common)
