"""The byte-for-byte tests against nydus v2.2's zstd blobs, run with the libzstd it links.

nydus v2.2 links libzstd 1.5.2, bundled by python-zstandard 0.19.0 (rafs-format.md §5.3).
The product works with any current zstandard, so the main test run keeps the current
one; `.ci/setup` installs 0.19.0 aside (`.venv/zstd-0.19.0`), and this test re-runs the
byte-exact tests in a subprocess that imports that copy first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parent.parent
ZSTD_152 = ROOT / ".venv" / "zstd-0.19.0"
BYTE_EXACT = [
    "tests/test_rafs_blob.py::test_v6_fixture_blob_regenerated_byte_for_byte_except_prerelease_quirks",
    "tests/test_rafs_builder.py::test_v6_fixture_rebuilt_byte_for_byte_apart_from_prerelease_quirks",
]


@pytest.mark.skipif(zstandard.ZSTD_VERSION == (1, 5, 2), reason="this run already uses libzstd 1.5.2")
def test_v6_fixture_is_reproduced_byte_for_byte_with_libzstd_1_5_2() -> None:
    if not (ZSTD_152 / "zstandard").is_dir():
        pytest.skip(f"python-zstandard 0.19.0 is not installed at {ZSTD_152} (run .ci/setup)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ZSTD_152), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *BYTE_EXACT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(BYTE_EXACT)} passed" in result.stdout, result.stdout[-2000:]
