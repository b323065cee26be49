#!/usr/bin/env python3
"""Benchmark `nydusify convert` registry -> registry on loopback. Not a test; run by hand:

    python tests/benchmarks/bench_registry_convert.py [--work /var/tmp/nydusify-bench-registry] [--repeat 2]

Starts a plain `docker-registry` (test kit), pushes the debian-like image (Debian bookworm,
4 layers, `get_image("debian", variant="full")`) with skopeo, then times a `nydusify convert`
child process from that registry to a new tag of the same registry (each run to a fresh
repository, so every blob is really uploaded). Prints the ratio of the best convert time to
the time Python's zlib needs to gunzip all the image's layers (one thread, 1 MiB reads);
issue 5's target is at most 5x.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import MiB, bench_args, child_env, debian_image, gunzip_all, log  # noqa: E402  (the shared yardstick)

TARGET_RATIO = 5.0


def run_convert(source: str, target: str, work: Path) -> float:
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "nydusify_core.cli", "--log-level", "warning", "convert", "--source", source,
           "--target", target, "--plain-http", "--work-dir", str(work)]
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost,::1"]))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**child_env(), "NO_PROXY": no_proxy, "no_proxy": no_proxy})
    return time.perf_counter() - start


def main() -> None:
    args = bench_args(__doc__, "/var/tmp/nydusify-bench-registry")
    from nydusify_core.testing.images import push_image
    from nydusify_core.testing.servers import start_registry

    image, layers = debian_image()
    source_bytes = sum(p.stat().st_size for p in layers)
    gunzip = min(gunzip_all(layers)[0] for _ in range(args.repeat))
    log(f"debian-like image: {len(layers)} layers, {source_bytes / MiB:.1f} MiB compressed; zlib gunzip {gunzip:.2f} s")

    shutil.rmtree(args.work / "registry", ignore_errors=True)
    registry = start_registry(args.work / "registry")
    try:
        push_image(image, registry.host, "debian:full")
        source = f"{registry.host}/debian:full"
        times = []
        for n in range(args.repeat):
            target = f"{registry.host}/debian-nydus-{n}:full"
            elapsed = run_convert(source, target, args.work / "convert")
            times.append(elapsed)
            log(f"run {n + 1}: convert {source} -> {target}: {elapsed:.2f} s")
    finally:
        registry.stop()
    best = min(times)
    ratio = best / gunzip
    print(json.dumps({
        "layers": len(layers), "source_mib": round(source_bytes / MiB, 1), "gunzip_s": round(gunzip, 3),
        "convert_s": [round(t, 3) for t in times], "ratio": round(ratio, 2), "target": TARGET_RATIO,
        "cpus": os.cpu_count(), "ok": ratio <= TARGET_RATIO,
    }))
    print(f"registry -> registry convert / zlib gunzip = {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x)")


if __name__ == "__main__":
    main()
