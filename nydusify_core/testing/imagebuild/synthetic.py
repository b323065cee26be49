"""The `synthetic` image: every file kind and layer edge case a converter must handle.

Layers 1, 2 and the empty one come from `umoci repack` (its own tar writer: PAX headers with
xattrs, whole-second mtimes); layer 3 comes from GNU tar in POSIX/PAX format (sub-second
mtime) and layer 4 in GNU format (`././@LongLink` names); both are appended verbatim with
`umoci raw add-layer`, because umoci repack refuses `.wh.*` paths and umoci 0.4.7's
`insert --opaque/--whiteout` writes truncated tars (no padding, no end-of-archive blocks).

Everything is deterministic: file data comes from SHAKE-256 streams keyed by a seed, and
every mtime is pinned, so the same recipe gives the same digests on every machine.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

from nydusify_core.testing.imagebuild.tools import AUTHOR, EPOCH, EPOCH_ISO, new_umoci_bundle, require_tools, run, umoci

RECIPE = "synthetic/5"  # bump on any change below: the cache rebuilds

KIB, MIB = 1 << 10, 1 << 20
DAY = 86400
NS = 1_000_000_000
MANY_ENTRIES = 2100
DEEP_LEVELS = 24
LONG_NAME = "L" * 251 + ".txt"  # 255 bytes, the NAME_MAX of every Linux filesystem
NON_UTF8_NAME = b"latin1-\xe9"
# security.capability value granting cap_net_raw (what `setcap cap_net_raw+ep` writes):
# struct vfs_cap_data revision 2 with the effective flag, then permitted/inheritable words.
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
CAP_NET_RAW = 13
CAPABILITY_XATTR = struct.pack("<5I", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << CAP_NET_RAW, 0, 0, 0)

# mtimes that are not the epoch: near 1970, older, future, sub-second (PAX layer only)
MTIME_SYMLINK_REL = DAY  # 1970-01-02
MTIME_OLD = 981173106  # 2001-02-03T04:05:06Z
MTIME_FUTURE = 4102444800  # 2100-01-01
MTIME_SUBSECOND_NS = (EPOCH + 2 * DAY) * NS + 123456789
DEEP_DIRS = tuple(f"dir-with-a-fairly-long-name-{i:02d}" for i in range(DEEP_LEVELS))

CONFIG_ARGS = [
    "--author", AUTHOR, "--architecture", "amd64", "--os", "linux",
    "--config.cmd", "/bin/sh", "--config.cmd", "-c", "--config.cmd", "cat /data/regular.txt",
    "--config.env", "PATH=/usr/bin:/bin", "--config.env", "NYDUS_TEST=synthetic",
    "--config.workingdir", "/data",
    "--config.label", "nydus.test.image=synthetic", "--config.label", "org.example.multi=a=b",
]


def prng(seed: str, size: int) -> bytes:
    """Seeded pseudo-random bytes: incompressible yet the same everywhere."""
    return hashlib.shake_256(seed.encode()).digest(size)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _touch_tree(root: Path, mtime_ns: int, *, newer_than_ns: int | None = None,
                skip: frozenset[Path] = frozenset()) -> None:
    """Pin mtimes (without following symlinks); optionally only of entries newer than a time."""
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        paths.extend(Path(dirpath, n) for n in dirnames + filenames)
    for p in paths:
        if p in skip:
            continue
        if newer_than_ns is not None and os.lstat(p).st_mtime_ns <= newer_than_ns:
            continue
        os.utime(p, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def populate_layer1(root: Path) -> None:
    """Every file kind, name and metadata edge case."""
    data, sub = root / "data", root / "data" / "sub"
    for d in (sub / "deeper", root / "opaque-dir" / "inner", root / "todelete" / "x",
              root / "emptydir", root / "devices", root / "bin", data / "dir-becomes-symlink"):
        d.mkdir(parents=True, exist_ok=True)
    # contents: small, empty, multi-chunk, chunk boundary + 1, sparse, compressible, dedup
    _write(data / "regular.txt", b"hello\n")
    _write(data / "empty", b"")
    _write(data / "random-4m.bin", prng("rand4m", 4 * MIB))
    _write(data / "random-1m-plus-1.bin", prng("rand1m1", MIB + 1))
    with open(data / "sparse.bin", "wb") as f:  # 32 MiB of holes with 1 MiB of data at 16 MiB
        f.truncate(32 * MIB)
        f.seek(16 * MIB)
        f.write(prng("sparse", MIB))
    _write(data / "zeros-2m.bin", bytes(2 * MIB))  # written zeros, not holes
    line = b"compressible text line for chunk tests\n"
    _write(data / "text-8m.txt", (line * (8 * MIB // len(line) + 1))[: 8 * MIB])
    dup = prng("dup", 2 * MIB)
    _write(data / "dup-a.bin", dup)
    _write(data / "dup-b.bin", dup)
    # symlinks: relative, absolute, dangling, to a directory, target longer than 1 KiB
    os.symlink("regular.txt", data / "symlink-rel")
    os.symlink("/data/regular.txt", data / "symlink-abs")
    os.symlink("/nonexistent/target", data / "symlink-dangling")
    os.symlink("sub", data / "symlink-dir")
    os.symlink("/".join(f"segment-{i:02d}-" + "x" * 50 for i in range(20)), data / "symlink-long-target")
    # hardlinks within the layer, in the same and in another directory
    os.link(data / "regular.txt", data / "hardlink-to-regular")
    os.link(data / "random-1m-plus-1.bin", sub / "hardlink-cross-dir")
    # special files
    os.mknod(root / "devices" / "char-1-3", stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "devices" / "block-7-0", stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(data / "fifo")
    for path, mode in ((root / "devices" / "char-1-3", 0o666), (root / "devices" / "block-7-0", 0o660),
                       (data / "fifo", 0o620)):
        os.chmod(path, mode)  # not through mknod: the umask would apply
    # xattrs in every namespace a layer may carry
    os.setxattr(data / "regular.txt", "user.foo", b"bar")
    os.setxattr(data / "empty", "user.binary", b"\x00\xff\x10")
    os.setxattr(sub, "user.dirattr", b"on-a-dir")
    os.setxattr(data / "text-8m.txt", "trusted.custom", b"trusted-value")
    os.setxattr(data / "random-4m.bin", "security.capability", CAPABILITY_XATTR)
    # names: 255 bytes, deep path, non-ASCII, spaces, not UTF-8
    _write(data / LONG_NAME, b"long\n")
    deep = data.joinpath(*DEEP_DIRS)
    _write(deep / "file-in-deep-path.txt", b"deep\n")
    _write(deep / "deleted-by-long-whiteout", b"gone in layer 4\n")
    _write(data / "日本語ファイル.txt", b"utf8\n")
    _write(data / "café", b"cafe\n")
    _write(data / "😀-emoji", b"emoji\n")
    _write(data / "name with spaces", b"spaces\n")
    _write(Path(os.fsdecode(os.fsencode(data) + b"/" + NON_UTF8_NAME)), b"latin1\n")
    # a directory with many entries
    for i in range(MANY_ENTRIES):
        _write(data / "many" / f"entry-{i:05d}", b"%d\n" % i)
    # permission bits and owners
    _write(root / "bin" / "suid", b"suid\n", 0o4755)
    _write(root / "bin" / "sgid", b"sgid\n", 0o2755)
    os.chmod(sub, 0o1777)
    os.chmod(root / "emptydir", 0o700)
    os.chown(data / "regular.txt", 1000, 1000)
    os.chown(data / "empty", 100000, 100000)
    os.chown(sub, 65534, 65534)
    os.lchown(data / "symlink-abs", 65534, 65534)
    # things later layers change
    _write(root / "opaque-dir" / "inner" / "o1", b"o1\n")
    _write(root / "opaque-dir" / "o2", b"o2\n")
    _write(root / "todelete" / "x" / "t", b"t\n")
    _write(data / "modified.txt", b"m1\n")
    _write(data / "chmod-only", b"keep\n")
    _write(data / "file-becomes-dir", b"f2d\n")
    _write(data / "dir-becomes-symlink" / "inside", b"inside\n")
    _touch_tree(root, EPOCH * NS)
    os.utime(data / "symlink-rel", ns=(MTIME_SYMLINK_REL * NS,) * 2, follow_symlinks=False)
    os.utime(data / "random-4m.bin", ns=(MTIME_OLD * NS,) * 2)
    os.utime(root / "bin" / "sgid", ns=(MTIME_FUTURE * NS,) * 2)


def modify_layer2(root: Path) -> None:
    """Deletions (whiteouts), modifications, file -> directory, a new hardlink pair.

    (directory -> symlink is left to layer 3: for it umoci writes the symlink followed by a
    whiteout *beneath* it, `dir/.wh.child`, which overlay semantics leave ambiguous.)
    """
    data = root / "data"
    os.unlink(data / "symlink-dangling")
    for dirpath, dirnames, filenames in os.walk(root / "todelete", topdown=False):
        for n in filenames:
            os.unlink(Path(dirpath, n))
        os.rmdir(dirpath)
    _write(data / "modified.txt", b"m2-changed\n")
    os.chmod(data / "chmod-only", 0o600)  # metadata-only change
    os.unlink(data / "file-becomes-dir")  # file -> directory
    _write(data / "file-becomes-dir" / "f", b"nowdir\n")
    _write(data / "new-in-l2", b"new\n")
    _write(data / "dup-c-in-l2.bin", prng("dup", 2 * MIB))  # same content as layer 1's dup-a
    _write(data / "l2-target", b"hardlinked in layer 2\n")
    os.link(data / "l2-target", data / "l2-hardlink")
    os.setxattr(data / "regular.txt", "user.foo", b"changed")  # xattr change on a hardlinked file
    _touch_tree(root, (EPOCH + DAY) * NS, newer_than_ns=(EPOCH + 1) * NS, skip=frozenset({root / "bin" / "sgid"}))


# PAX extended header names default to `%d/PaxHeaders.%p/%f` (the PID) and carry atime/ctime:
# both would make the layer differ on every build.
PAX_OPTIONS = "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"


def _gnu_tar(src: Path, out: Path, members: list[str], *, fmt: str, recursive: bool = True) -> None:
    run(["tar", f"--format={fmt}", *([PAX_OPTIONS] if fmt == "posix" else []), "--sort=name",
         "--numeric-owner", "--owner=0", "--group=0", *([] if recursive else ["--no-recursion"]),
         "-C", src, "-cf", out, *members])


def write_layer3(work: Path) -> Path:
    """An opaque directory marker (`.wh..wh..opq`) with fresh content, and a directory
    replaced by a symlink the plain OCI way (the new entry alone, no whiteout). PAX format,
    with a sub-second mtime."""
    src = work / "l3"
    _write(src / "opaque-dir" / ".wh..wh..opq", b"")
    _write(src / "opaque-dir" / "inner2" / "n", b"n\n")
    _write(src / "opaque-dir" / "fresh", b"fresh\n")
    (src / "data").mkdir()
    os.symlink("sub", src / "data" / "dir-becomes-symlink")
    _touch_tree(src, (EPOCH + 2 * DAY) * NS)
    os.utime(src / "opaque-dir" / "fresh", ns=(MTIME_SUBSECOND_NS,) * 2)
    _gnu_tar(src, work / "l3.tar", ["data/dir-becomes-symlink", "opaque-dir"], fmt="posix")
    return work / "l3.tar"


def write_layer4(work: Path) -> Path:
    """Whiteouts only, without entries for their parent directory; one has a path longer than
    100 bytes, so GNU format stores it with a `././@LongLink` header."""
    src = work / "l4"
    members = ["data/.wh.dup-b.bin", "data/.wh.sparse.bin", "/".join(["data", *DEEP_DIRS, ".wh.deleted-by-long-whiteout"])]
    for m in members:
        _write(src / m, b"")
    _touch_tree(src, (EPOCH + 3 * DAY) * NS)
    _gnu_tar(src, work / "l4.tar", members, fmt="gnu", recursive=False)
    return work / "l4.tar"


def build_synthetic(layout: Path, tag: str = "latest") -> None:
    """Write the synthetic image into a new OCI layout directory `layout` (scratch beside it)."""
    require_tools("umoci", "tar")
    image, work, bundle = new_umoci_bundle(layout, tag, CONFIG_ARGS)
    rootfs = bundle / "rootfs"
    history = ["--history.created", EPOCH_ISO, "--history.author", AUTHOR]

    populate_layer1(rootfs)
    umoci("repack", "--image", image, *history, "--history.created_by", "layer1: all file kinds",
          "--refresh-bundle", bundle)
    modify_layer2(rootfs)
    umoci("repack", "--image", image, *history, "--history.created_by", "layer2: modify/delete/type change",
          "--refresh-bundle", bundle)
    # nothing changed: a history entry with empty_layer=true and no layer
    umoci("repack", "--image", image, *history, "--history.created_by", "no-op (empty_layer)",
          "--refresh-bundle", bundle)
    umoci("raw", "add-layer", "--image", image, *history,
          "--history.created_by", "layer3: opaque dir, dir -> symlink (GNU tar, PAX format)", write_layer3(work))
    umoci("raw", "add-layer", "--image", image, *history,
          "--history.created_by", "layer4: whiteouts only (GNU tar, GNU format)", write_layer4(work))
    umoci("gc", "--layout", layout)
