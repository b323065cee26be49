#!/usr/bin/env python3
"""Benchmark the `rafs` layer builder (tar stream -> blob with inline bootstrap) against
plain zstd level-3 compression of the same bytes in 1 MiB pieces. Not a test; run by hand:

    python tests/benchmarks/bench_tarbuild.py [--work /var/tmp/nydusify-bench] [--size-mb 300]

The layer mixes incompressible, text-like and zero-filled files of 1 KiB .. 24 MiB (about
`--size-mb` MB uncompressed), written once to a file so both sides read it from the page
cache. Prints throughputs and the ratio builder / yardstick (yardstick single-threaded, as
well as with one zstd thread per CPU, which is what the builder can use).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

from nydusify_core.builtin.rafs_builder import RafsLayerBuilder
from nydusify_core.rafs.builder import BuildOptions

MiB = 1 << 20
WORDS = b"the quick brown fox jumps over a lazy dog while nydus chunks every layer ".split()


def content(rng: random.Random, kind: int, size: int) -> bytes:
    if kind == 0:
        return rng.randbytes(size)
    if kind == 1:
        out = bytearray()
        while len(out) < size:
            out += b" ".join(rng.choices(WORDS, k=64)) + b"\n"
        return bytes(out[:size])
    return bytes(size)


def write_layer(path: Path, total: int) -> int:
    rng = random.Random(42)
    written = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        n = 0
        while written < total:
            size = min(int(rng.lognormvariate(11, 2.5)), 24 * MiB, total - written) or 1
            data = content(rng, n % 3, size)
            info = tarfile.TarInfo(f"dir{n % 50}/file{n}")
            info.size, info.mtime = size, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
            written += size
            n += 1
    return path.stat().st_size


def zstd_chunks(path: Path, threads: int) -> float:
    """The yardstick: zstd level 3 over 1 MiB pieces of the tar, like the builder's chunks."""
    start = time.perf_counter()
    cctx = [zstandard.ZstdCompressor(level=3) for _ in range(max(threads, 1))]
    with open(path, "rb") as f:
        if threads <= 1:
            while block := f.read(MiB):
                cctx[0].compress(block)
        else:
            with ThreadPoolExecutor(threads) as pool:
                blocks = iter(lambda: f.read(MiB), b"")
                list(pool.map(lambda b: zstandard.ZstdCompressor(level=3).compress(b), blocks))
    return time.perf_counter() - start


def build(path: Path, work: Path, fs_version: int, compressor: str) -> float:
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    with open(path, "rb", buffering=MiB) as f:
        RafsLayerBuilder().build_layer(f, work, BuildOptions(fs_version=fs_version, compressor=compressor))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/nydusify-bench-tarbuild"))
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    layer = args.work / "layer.tar"
    size = write_layer(layer, args.size_mb * 1_000_000)
    with open(layer, "rb") as f:  # warm the page cache
        while f.read(16 * MiB):
            pass
    cpus = os.cpu_count() or 1
    mb = size / 1e6
    base1 = min(zstd_chunks(layer, 1) for _ in range(args.repeat))
    basen = min(zstd_chunks(layer, cpus) for _ in range(args.repeat))
    print(f"layer: {mb:.0f} MB tar, {cpus} CPUs")
    print(f"zstd-3 1 MiB chunks, 1 thread:      {mb / base1:7.1f} MB/s")
    print(f"zstd-3 1 MiB chunks, {cpus} threads:     {mb / basen:7.1f} MB/s")
    for fs_version, compressor in ((6, "zstd"), (5, "zstd"), (6, "lz4_block"), (6, "none")):
        t = min(build(layer, args.work / "out", fs_version, compressor) for _ in range(args.repeat))
        print(f"build_layer v{fs_version} {compressor:9}:        {mb / t:7.1f} MB/s  "
              f"time ratio vs zstd 1 thread {t / base1:.2f}, vs {cpus} threads {t / basen:.2f}")
    shutil.rmtree(args.work / "out", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
