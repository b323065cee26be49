"""The test kit's tree snapshots and differences (`nydusify_core.testing.trees`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from nydusify_core.testing.trees import diff_trees, snapshot


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"data")
    (root / "d" / "f").chmod(0o4751)
    os.link(root / "d" / "f", root / "g")
    os.link(root / "d" / "f", root / "d" / "h")
    os.symlink(b"target\xff", os.fsencode(root / "s"))
    os.mkfifo(root / "p")
    os.setxattr(root / "d", "user.k", b"\x00v")
    os.utime(root / "g", ns=(5, 1_234_567_891))
    return root


def test_snapshot_records_every_attribute(tree: Path) -> None:
    snap = snapshot(tree)
    assert sorted(snap) == [b"/", b"/d", b"/d/f", b"/d/h", b"/g", b"/p", b"/s"]
    f = snap[b"/d/f"]
    assert (f.kind, f.mode, f.size, f.nlink) == ("file", 0o4751, 4, 3)
    assert f.sha256 == hashlib.sha256(b"data").hexdigest()
    assert f.mtime == 1_234_567_891  # nanoseconds; hardlinks share the inode's
    assert f.links == snap[b"/g"].links == frozenset({b"/d/f", b"/d/h", b"/g"})
    assert snap[b"/s"].kind == "symlink" and snap[b"/s"].target == b"target\xff" and snap[b"/s"].sha256 is None
    assert snap[b"/p"].kind == "fifo" and snap[b"/p"].links == frozenset()
    assert snap[b"/d"].xattrs == {b"user.k": b"\x00v"}


def test_equal_trees_have_no_differences(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(tree), str(copy)], check=True)  # keeps times, xattrs, hardlinks
    assert diff_trees(snapshot(tree), snapshot(copy)) == []


def test_differences_are_readable_and_scoped(tree: Path) -> None:
    before = snapshot(tree)
    (tree / "d" / "f").chmod(0o755)
    (tree / "new").write_text("x")
    (tree / "p").unlink()
    os.mkdir(tree / "p")
    after = snapshot(tree)
    diffs = diff_trees(before, after, ignore=("mtime",))
    assert "b'/d/f': mode 4751 != 0755" in diffs
    assert "b'/new': unexpected (file)" in diffs
    assert "b'/p': kind fifo != dir" in diffs
    assert not any("b'/d/h'" in d and "mode" not in d for d in diffs)
    assert diff_trees(before, after, ignore=("mtime", "mode", "nlink", "size"), ignore_paths=[b"/new", b"/p"]) == []
    assert diff_trees(before, after, ignore=("mtime", "file:mode", "dir:nlink", "dir:size"),
                      ignore_paths={b"/new": (), b"/p": ()}) == ["b'/new': unexpected (file)", "b'/p': kind fifo != dir"]


def test_unknown_fields_are_refused_and_output_is_limited(tree: Path) -> None:
    snap = snapshot(tree)
    with pytest.raises(ValueError, match="unknown field"):
        diff_trees(snap, snap, ignore=("atime",))
    assert diff_trees({}, snap, limit=2) == ["b'/': unexpected (dir)", "b'/d': unexpected (dir)", "... (more differences)"]
