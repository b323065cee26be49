#!/usr/bin/env python3
"""Benchmark `nydusify pack`: time and memory against fixed yardsticks measured in the same run.

Not a test (pytest does not collect this directory's `bench_*` files); run by hand as root:

    python tests/benchmarks/bench_pack.py [--work /var/tmp/nydusify-bench] [--rootfs DIR]

It prints ratios, each with the issue's target:
* pack (zstd, 1 MiB chunks) wall time / compressing the same file bytes with python
  zstandard level 3 in 1 MiB chunks (single thread, file reads included)    target <= 1.5
* metadata cost per inode: pack of a skeleton of the tree (same names, modes, owners,
  xattrs, links, but every file empty, so no data work at all) minus pack of an empty
  directory (interpreter start), divided by the inode count                 target <= 35 us
* mkfs.erofs on the same tree (plain, chunked with a blob device, lz4hc), side by side
* peak RSS of pack (`os.wait4` rusage of the child process) for a tree holding one
  100 MB file vs one 400 MB file: must not grow with file size

The rootfs (Debian bookworm minbase + python3, perl, gcc, g++, make; about 470 MB) is
built once with mmdebstrap from this machine's apt sources and cached under --work.
Every timing is the best of --repeat runs, with the page cache warm (the tree is read
once first), so disk speed does not enter the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import zstandard

MiB = 1 << 20
TARGET_RATIO = 1.5
TARGET_US_PER_INODE = 35.0
PACKAGES = "python3,perl,gcc,g++,make"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def apt_sources() -> list[str]:
    main_list = Path("/etc/apt/sources.list")
    out = [str(main_list)] if main_list.is_file() and main_list.stat().st_size else []
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        out += [str(p) for p in sorted(d.iterdir()) if p.suffix in (".list", ".sources") and p.stat().st_size]
    return out


def ensure_rootfs(work: Path) -> Path:
    rootfs = work / "rootfs"
    if rootfs.is_dir():
        return rootfs
    if shutil.which("mmdebstrap") is None:
        sys.exit("mmdebstrap is needed to build the benchmark rootfs (apt-get install mmdebstrap), or pass --rootfs")
    tmp = work / "rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"building {rootfs} with mmdebstrap (minbase + {PACKAGES}) ...")
    subprocess.run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", f"--include={PACKAGES}",
                    "bookworm", str(tmp), *apt_sources()], check=True)
    tmp.rename(rootfs)
    return rootfs


def walk_files(root: Path) -> tuple[list[bytes], int, int]:
    """(distinct regular files, their total bytes, inode count incl. directories)."""
    files: list[bytes] = []
    seen: set[tuple[int, int]] = set()
    total = inodes = 0
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        inodes += 1
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            inodes += 1
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                files.append(path)
                total += st.st_size
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return files, total, inodes


def read_all(files: list[bytes]) -> None:
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while f.read(MiB):
                pass


def zstd_baseline(files: list[bytes]) -> tuple[float, int]:
    """Wall time to read every file and zstd-3-compress it in 1 MiB chunks, one thread."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    out = 0
    start = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while chunk := f.read(MiB):
                out += len(cctx.compress(chunk))
    return time.perf_counter() - start, out


def run_child(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one child process, from its own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss


def best(n: int, fn):
    results = [fn() for _ in range(n)]
    return min(results, key=lambda r: r[0])


def pack_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    shutil.rmtree(out, ignore_errors=True)
    return [sys.executable, "-m", "nydusify_core.cli", "--log-level", "warning", "pack", "--source-dir", str(src),
            "--name", "bench", "--output-dir", str(out), *extra]


def pack_once(src: Path, out: Path, *extra: str) -> tuple[float, int]:
    return run_child(pack_cmd(src, out, *extra))


def in_process_pack(src: Path, out: Path, *, threads: int) -> float:
    """build_directory without interpreter start, compressing in the calling thread only."""
    from nydusify_core.rafs.builder import BuildOptions, build_directory

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    build_directory(src, BuildOptions(threads=threads), out / "bench.meta", out / "bench.blob")
    return time.perf_counter() - start


def skeleton_of(rootfs: Path, work: Path) -> Path:
    """The tree with every regular file emptied (cp --attributes-only keeps modes, owners,
    xattrs, times and hardlinks)."""
    skel = work / "skeleton"
    if not skel.is_dir():
        tmp = work / "skeleton.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["cp", "-a", "--attributes-only", str(rootfs), str(tmp)], check=True)
        tmp.rename(skel)
    return skel


def one_file_tree(work: Path, size: int) -> Path:
    d = work / f"one-file-{size // MiB}M"
    if not (d / "data").is_file():
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "data.tmp", "wb") as f:  # incompressible: every byte goes through zstd
            left = size
            while left:
                n = min(left, 8 * MiB)
                f.write(os.urandom(n))
                left -= n
        (d / "data.tmp").rename(d / "data")
    return d


def mkfs_erofs(src: Path, work: Path, repeat: int) -> list[tuple[str, float, int]]:
    if shutil.which("mkfs.erofs") is None:
        return []
    rows = []
    variants = {
        "mkfs.erofs (plain)": [],
        "mkfs.erofs --chunksize=1M --blobdev": ["--chunksize=1048576", f"--blobdev={work / 'erofs.blob'}"],
        "mkfs.erofs -zlz4hc": ["-zlz4hc"],
    }
    for label, extra in variants.items():
        def once() -> tuple[float, int]:
            for p in (work / "erofs.img", work / "erofs.blob"):
                p.unlink(missing_ok=True)
            return run_child(["mkfs.erofs", "--quiet", *extra, str(work / "erofs.img"), str(src)])

        wall, _ = best(repeat, once)
        size = (work / "erofs.img").stat().st_size + ((work / "erofs.blob").stat().st_size if (work / "erofs.blob").exists() else 0)
        rows.append((label, wall, size))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/nydusify-bench"), help="cache and scratch directory")
    ap.add_argument("--rootfs", type=Path, help="use this tree instead of the cached Debian rootfs")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rootfs = args.rootfs or ensure_rootfs(work)

    files, total, inodes = walk_files(rootfs)
    log(f"tree {rootfs}: {inodes} inodes, {len(files)} distinct regular files, {total / MiB:.1f} MiB")
    read_all(files)  # warm the page cache for everyone

    base, zsize = best(args.repeat, lambda: zstd_baseline(files))
    empty = work / "empty-dir"
    empty.mkdir(exist_ok=True)
    start_cost, _ = best(args.repeat, lambda: pack_once(empty, work / "out-empty"))
    pack_wall, pack_rss = best(args.repeat, lambda: pack_once(rootfs, work / "out-zstd"))
    single = best(args.repeat, lambda: (in_process_pack(rootfs, work / "out-single", threads=0), 0))[0]
    blob = work / "out-zstd" / "bench.blob"
    boot = work / "out-zstd" / "bench.meta"

    skel = skeleton_of(rootfs, work)
    skel_wall, _ = best(args.repeat, lambda: pack_once(skel, work / "out-skel"))
    us_per_inode = (skel_wall - start_cost) / inodes * 1e6

    rss = {}
    for size in (100 * MiB, 400 * MiB):
        tree = one_file_tree(work, size)
        read_all([os.fsencode(tree / "data")])
        rss[size] = pack_once(tree, work / "out-one")
    erofs_rows = mkfs_erofs(rootfs, work, args.repeat)

    ratio = pack_wall / base
    cpus = os.cpu_count()
    print(f"\n== nydusify pack benchmark ({time.strftime('%Y-%m-%d')}, {cpus} CPUs, python {sys.version.split()[0]},"
          f" zstandard {zstandard.__version__}) ==")
    print(f"tree: {rootfs}  {inodes} inodes, {len(files)} distinct files, {total / MiB:.1f} MiB of file data")
    print(f"zstd level 3, 1 MiB chunks, 1 thread (baseline): {base:7.2f} s  -> {zsize / MiB:.1f} MiB")
    print(f"nydusify pack (zstd, 0x100000):                  {pack_wall:7.2f} s  -> blob {blob.stat().st_size / MiB:.1f} MiB,"
          f" bootstrap {boot.stat().st_size / 1024:.0f} KiB, peak RSS {pack_rss / 1024:.0f} MiB")
    print(f"  ratio pack / baseline: {ratio:.2f}  (target <= {TARGET_RATIO})  {'OK' if ratio <= TARGET_RATIO else 'OVER'}")
    print(f"  same build in-process, compression in the calling thread only: {single:.2f} s"
          f" (ratio {single / base:.2f}; pack uses min(8, CPUs) = {min(8, cpus or 1)} compression threads)")
    print(f"pack of an empty directory (interpreter start): {start_cost:.2f} s")
    print(f"pack of the skeleton (all files empty):        {skel_wall:.2f} s")
    print(f"  metadata cost: ({skel_wall:.2f} - {start_cost:.2f}) s / {inodes} inodes = {us_per_inode:.1f} us/inode"
          f"  (target <= {TARGET_US_PER_INODE:.0f})  {'OK' if us_per_inode <= TARGET_US_PER_INODE else 'OVER'}")
    for label, wall, size in erofs_rows:
        print(f"{label:<38} {wall:7.2f} s  -> {size / MiB:.1f} MiB   (pack / this: {pack_wall / wall:.2f})")
    small, large = rss[100 * MiB][1], rss[400 * MiB][1]
    print(f"peak RSS, one 100 MB file: {small / 1024:.0f} MiB ({rss[100 * MiB][0]:.2f} s);"
          f" one 400 MB file: {large / 1024:.0f} MiB ({rss[400 * MiB][0]:.2f} s);"
          f" growth {(large - small) / 1024:+.0f} MiB for +300 MB  {'OK' if large - small < 32 * 1024 else 'GROWS'}")


if __name__ == "__main__":
    main()
