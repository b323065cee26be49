"""Letting the Linux kernel judge RAFS v6 images: loop-attached blobs, EROFS mounts.

EROFS reads a chunk's bytes at `blkaddr * 4096` of its blob device (rafs-format.md §9),
i.e. from nydusd's cache layout; `expanded_blobs` produces that layout from stored blobs.
Everything here needs root and a kernel that lets this process mount; otherwise the
calling test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.expand import expand_blob
from nydusify_core.rafs.model import Bootstrap, ChunkInfo

__all__ = ["kernel_mount", "read_chunkwise", "expanded_blobs"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True)


@contextlib.contextmanager
def kernel_mount(bootstrap: str | os.PathLike[str], blob_paths: Sequence[str | os.PathLike[str]],
                 mountpoint: str | os.PathLike[str]) -> Iterator[Path]:
    """Mount `bootstrap` read-only as EROFS with one loop device per blob (table order).

    Blobs are attached with `losetup -r`; the mount is `-o loop,ro,device=/dev/loopN...`.
    The mount and every loop device are released on exit, whatever happened.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting EROFS needs root")
    mnt = Path(mountpoint)
    loops: list[str] = []
    is_mounted = False
    try:
        for blob in blob_paths:
            res = _run("losetup", "-f", "--show", "-r", os.fspath(blob))
            if res.returncode:
                pytest.skip(f"cannot attach a loop device: {res.stderr.strip()}")
            loops.append(res.stdout.strip())
        mnt.mkdir(parents=True, exist_ok=True)
        opts = ",".join(["loop", "ro", *(f"device={lo}" for lo in loops)])
        res = _run("mount", "-t", "erofs", "-o", opts, os.fspath(bootstrap), os.fspath(mnt))
        if res.returncode:
            pytest.skip(f"mounting EROFS is not permitted here: {res.stderr.strip()}")
        is_mounted = True
        yield mnt
    finally:
        if is_mounted:
            res = _run("umount", os.fspath(mnt))
            if res.returncode:  # still busy: detach lazily so the loop devices can go
                _run("umount", "-l", os.fspath(mnt))
        for lo in loops:
            _run("losetup", "-d", lo)


def read_chunkwise(path: str | os.PathLike[str] | bytes, chunk_size: int) -> bytes:
    """A file's content read one chunk at a time with readahead off.

    On the kernels tested, buffered readahead through an EROFS mount with two or more blob
    devices can return another device's bytes; reading chunk-sized pieces with
    POSIX_FADV_RANDOM gives the bytes the image describes.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.fstat(fd).st_size
        return b"".join(os.pread(fd, min(chunk_size, size - off), off) for off in range(0, size, chunk_size))
    finally:
        os.close(fd)


def expanded_blobs(bootstrap: str | os.PathLike[str] | Bootstrap,
                   blob_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   out_dir: str | os.PathLike[str]) -> list[Path]:
    """Expand every blob of `bootstrap` to the cache layout in `out_dir`; paths in table order.

    `blob_dir` is a directory holding blobs named by their ids, or the blob files in
    blob-table order. Chunk locations come from the bootstrap, so v5 images work too.
    """
    bs = bootstrap if isinstance(bootstrap, Bootstrap) else read_bootstrap(Path(bootstrap).read_bytes())
    if isinstance(blob_dir, (str, os.PathLike)):
        sources = [Path(blob_dir) / b.blob_id for b in bs.blobs]
    else:
        sources = [Path(p) for p in blob_dir]
        if len(sources) != len(bs.blobs):
            raise ValueError(f"{len(sources)} blob files given, the image has {len(bs.blobs)} blobs")
    chunks: list[list[ChunkInfo]] = [[] for _ in bs.blobs]
    for _, node in bs.walk():
        for c in node.chunks:
            if 0 <= c.blob_index < len(chunks):
                chunks[c.blob_index].append(c)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (blob, src) in enumerate(zip(bs.blobs, sources)):
        dst = out / f"{blob.blob_id}.cache"
        expand_blob(src, dst, blob, sorted(chunks[i], key=lambda c: c.uncompressed_offset))
        paths.append(dst)
    return paths
