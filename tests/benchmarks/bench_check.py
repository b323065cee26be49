#!/usr/bin/env python3
"""Benchmark `nydusify check` with data (OCI layout target and source) against the gunzip
yardstick of `bench_convert.py`, timed in the same run. Not a test; run by hand:

    python tests/benchmarks/bench_check.py [--work /var/tmp/nydusify-bench] [--repeat 2]

Prints, with the issue's target:
* check --source (all four rules, every chunk and file content verified)
  / gunzip of all source layers with Python's zlib, one worker                <= 3.0
* the same without --source (manifest, bootstrap, chunk digests), for reference
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convert import MiB, bench_args, child_env, debian_image, gunzip_all, log, run_convert  # noqa: E402


def run_check(target: str, source: str | None, work: Path) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one `nydusify check` child process."""
    cmd = [sys.executable, "-m", "nydusify_core.cli", "--log-level", "warning", "check", "--target", target, "--work-dir", str(work)]
    if source:
        cmd += ["--source", source]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"check failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    args = bench_args(__doc__, "/var/tmp/nydusify-bench")
    image, layers = debian_image()
    base, unpacked = min(gunzip_all(layers) for _ in range(args.repeat))
    log(f"debian-like image: {len(layers)} layers, {sum(p.stat().st_size for p in layers) / MiB:.1f} MiB gzip, {unpacked / MiB:.1f} MiB tar")
    out = args.work / "check-target"
    if not (out / "index.json").exists():
        run_convert(image.ref, out, args.work / "check-convert-work", 2)
    for blob in (out / "blobs/sha256").iterdir():  # warm the target's blobs too
        blob.read_bytes()
    target = f"oci:{out}:latest"
    run_check(target, image.ref, args.work / "check-output")  # warm-up: bytecode cache
    print(f"{'gunzip all layers, zlib, 1 worker':<44} {base:8.2f} s")
    for name, source, goal in (("check --source (all rules, with data)", image.ref, 3.0), ("check without --source", None, None)):
        t, rss = min(run_check(target, source, args.work / "check-output") for _ in range(args.repeat))
        line = f"{name:<44} {t:8.2f} s   ratio {t / base:.2f}"
        if goal:
            line += f"   target <= {goal:.1f}"
        print(line + f"   peak RSS {rss / MiB:.0f} MiB")


if __name__ == "__main__":
    main()
