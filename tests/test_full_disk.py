"""A full disk is a one-line error, never a traceback, and leaves no half-written output.

The disk is a real one: a small tmpfs mounted for the test (root only; skipped elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from nydusify_core.testing.cli import one_line_error, run_cli

SMALL = 512 * 1024  # far less than any of the outputs below


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def nydusify(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--log-level", "warning", *args)


def assert_disk_full_error(res: subprocess.CompletedProcess[str]) -> None:
    assert "no space left on device" in one_line_error(res)


def tags(layout: Path) -> list[object]:
    """The manifests an OCI layout's index lists (an empty layout may exist from the start)."""
    index = layout / "index.json"
    return json.loads(index.read_text())["manifests"] if index.exists() else []


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_convert_into_a_full_disk_fails_cleanly(synthetic_image, small_disk: Path, tmp_path: Path) -> None:
    res = nydusify("convert", "--source", synthetic_image.ref, "--target", f"oci:{small_disk / 'out'}:latest",
                   "--work-dir", str(tmp_path / "work"))
    assert_disk_full_error(res)
    assert tags(small_disk / "out") == []  # no image that points at missing blobs
    for name in leftovers(small_disk / "out"):  # and no half-written blob passes for a whole one
        path = small_disk / "out" / name
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        else:
            assert name in ("index.json", "oci-layout")


def test_a_full_work_dir_fails_cleanly_and_is_emptied(synthetic_image, small_disk: Path, tmp_path: Path) -> None:
    res = nydusify("convert", "--source", synthetic_image.ref, "--target", f"oci:{tmp_path / 'out'}:latest",
                   "--work-dir", str(small_disk / "work"))
    assert_disk_full_error(res)
    assert leftovers(small_disk) == []
    assert tags(tmp_path / "out") == []


def test_convert_after_a_full_disk_run_succeeds(synthetic_image, small_disk: Path, tmp_path: Path) -> None:
    target = f"oci:{tmp_path / 'out'}:latest"
    assert_disk_full_error(nydusify("convert", "--source", synthetic_image.ref, "--target", target, "--work-dir", str(small_disk)))
    res = nydusify("convert", "--source", synthetic_image.ref, "--target", target, "--work-dir", str(tmp_path / "work"))
    assert res.returncode == 0, res.stderr
    assert len(tags(tmp_path / "out")) == 1


def test_pack_into_a_full_disk_fails_cleanly(small_disk: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(2 * SMALL))
    res = nydusify("pack", "--source-dir", str(tree), "--output-dir", str(small_disk / "out"), "--name", "img")
    assert_disk_full_error(res)
    assert leftovers(small_disk) == []
