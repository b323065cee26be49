"""`nydusify pack` (alias `build`) from the command line: outputs, options, aliases, errors.

Every run is a real `python -m nydusify_core.cli` process, so exit codes and stderr are
what a user sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.testing.cli import cli_ok, one_line_error, pseudo_random, run_cli
from nydusify_core.testing.trees import diff_trees, snapshot

MiB = 1 << 20


def pack_json(*args: str | os.PathLike[str]) -> dict:
    return json.loads(cli_ok("pack", "--json", *args).stdout)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("nydus\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(pseudo_random(1, 3 * MiB + 100))  # four 1 MiB chunks
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "copy").write_bytes(pseudo_random(1, 3 * MiB + 100))  # deduplicated
    (root / "text").write_bytes(b"some compressible text\n" * 5000)
    (root / "empty").write_bytes(b"")
    os.symlink("etc/hostname", root / "link")
    os.link(root / "text", root / "etc" / "text-link")
    return root


@pytest.fixture(scope="module")
def tree_snapshot(tree: Path) -> dict:
    return snapshot(tree)


def test_name_without_extension_gets_meta_and_blob(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "foo", "--output-dir", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foo.blob", "foo.meta"]


def test_name_with_extension_is_the_bootstrap_and_names_the_blob(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "foo.boot", "--output-dir", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foo.blob", "foo.boot"]


def test_output_dir_is_created(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "foo", "--output-dir", tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "foo.meta").is_file()


def test_parent_bootstrap_renames_the_blob_to_its_id(tree: Path, tmp_path: Path) -> None:
    base = pack_json("--source-dir", tree, "--name", "base", "--output-dir", tmp_path)
    upper_src = tmp_path / "upper"
    (upper_src / "etc").mkdir(parents=True)
    (upper_src / "etc" / "motd").write_text("new in the upper layer\n")
    upper = pack_json("--source-dir", upper_src, "--name", "upper", "--output-dir", tmp_path,
                      "--parent-bootstrap", tmp_path / "base.meta")
    assert upper["blob"] == str(tmp_path / upper["blob_id"])
    assert (tmp_path / upper["blob_id"]).is_file() and not (tmp_path / "upper.blob").exists()
    bs = read_bootstrap((tmp_path / "upper.meta").read_bytes())
    assert [b.blob_id for b in bs.blobs] == [base["blob_id"], upper["blob_id"]] == upper["blobs"]
    paths = {p for p, _ in bs.walk()}
    assert {b"/etc/motd", b"/etc/hostname", b"/bin/tool"} <= paths


@pytest.mark.parametrize(("command", "source_flag", "name_flag"), [
    ("build", "--source-dir", "--name"),
    ("pack", "--target-dir", "--name"),
    ("pack", "--source-dir", "--bootstrap"),
    ("pack", "--source-dir", "--meta"),
])
def test_upstream_aliases_give_the_same_image(tree: Path, tmp_path: Path, command: str, source_flag: str, name_flag: str) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path / "ref")
    cli_ok(command, source_flag, tree, name_flag, "img", "--output-dir", tmp_path / "alias")
    for name in ("img.meta", "img.blob"):
        assert (tmp_path / "alias" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_json_result_describes_the_build(tree: Path, tmp_path: Path) -> None:
    info = pack_json("--source-dir", tree, "--name", "img", "--output-dir", tmp_path)
    assert set(info) == {"bootstrap", "blob", "blob_id", "blob_size", "blobs", "fs_version", "files", "nodes",
                         "chunks", "dedup_chunks", "dedup_bytes", "seconds"}
    assert info["bootstrap"] == str(tmp_path / "img.meta") and info["blob"] == str(tmp_path / "img.blob")
    assert info["blob_size"] == (tmp_path / "img.blob").stat().st_size
    assert info["blobs"] == [info["blob_id"]] and len(info["blob_id"]) == 64
    assert info["fs_version"] == 6
    assert info["nodes"] == 10  # root, etc, bin and 7 entries
    assert info["files"] == 4  # hostname, tool, copy, text (the hardlink and the empty file add no data)
    assert info["chunks"] == 6 and info["dedup_chunks"] == 4 and info["dedup_bytes"] == 3 * MiB + 100


def test_without_json_only_a_log_line_is_printed(tree: Path, tmp_path: Path) -> None:
    res = cli_ok("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path)
    assert res.stdout == "" and "successfully built" in res.stderr


def test_chunk_dict_chunks_are_reused_not_stored(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "dict", "--output-dir", tmp_path / "dict")
    dict_bs = read_bootstrap((tmp_path / "dict" / "dict.meta").read_bytes())
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(tree / "bin" / "tool", src / "same-tool")  # 4 chunks the dictionary holds
    (src / "new").write_bytes(pseudo_random(9, 5000))
    info = pack_json("--source-dir", src, "--name", "img", "--output-dir", tmp_path / "out",
                     "--chunk-dict", f"bootstrap={tmp_path / 'dict' / 'dict.meta'}")
    assert info["dedup_chunks"] == 4 and info["dedup_bytes"] == 3 * MiB + 100
    assert info["chunks"] == 1
    # a dictionary blob joins the table when first used: after this build's own blob here,
    # because /new (data of its own) comes before /same-tool in build order
    assert info["blobs"] == [info["blob_id"], dict_bs.blobs[0].blob_id]
    assert (tmp_path / "out" / "img.blob").stat().st_size < 100_000
    blobs = tmp_path / "blobs"  # unpack finds blobs by id
    blobs.mkdir()
    shutil.copy(tmp_path / "dict" / "dict.blob", blobs / dict_bs.blobs[0].blob_id)
    shutil.copy(tmp_path / "out" / "img.blob", blobs / info["blob_id"])
    cli_ok("unpack", "--bootstrap", tmp_path / "out" / "img.meta", "--blob-dir", blobs, "--output", tmp_path / "x")
    assert (tmp_path / "x" / "same-tool").read_bytes() == (tree / "bin" / "tool").read_bytes()


def test_chunk_dict_of_another_fs_version_is_refused(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "dict", "--output-dir", tmp_path, "--fs-version", "5")
    res = run_cli("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path,
              "--chunk-dict", f"bootstrap={tmp_path / 'dict.meta'}")
    assert "chunk dictionary has RAFS v5" in one_line_error(res)


@pytest.mark.parametrize("version", ["5", "6"])
def test_fs_version_is_written(tree: Path, tree_snapshot: dict, tmp_path: Path, version: str) -> None:
    info = pack_json("--source-dir", tree, "--name", "img", "--output-dir", tmp_path, "--fs-version", version)
    assert info["fs_version"] == int(version)
    assert read_bootstrap((tmp_path / "img.meta").read_bytes()).version == int(version)
    cli_ok("unpack", "--bootstrap", tmp_path / "img.meta", "--blob", tmp_path / "img.blob", "--output", tmp_path / "x")
    assert diff_trees(tree_snapshot, snapshot(tmp_path / "x"), ignore=("dir:size",), ignore_paths={b"/": ("mtime",)}) == []


def test_fs_version_defaults_to_6_and_reads_the_environment(tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "FS_VERSION": "5"}
    res = subprocess.run([sys.executable, "-m", "nydusify_core.cli", "pack", "--json", "--source-dir", str(tree),
                          "--name", "img", "--output-dir", str(tmp_path)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fs_version"] == 5


@pytest.mark.parametrize("digester", ["blake3", "sha256"])
@pytest.mark.parametrize("compressor", ["none", "lz4_block", "zstd"])
def test_every_compressor_and_digester_round_trips(tree: Path, tree_snapshot: dict, tmp_path: Path,
                                                   compressor: str, digester: str) -> None:
    pack_json("--source-dir", tree, "--name", "img", "--output-dir", tmp_path,
              "--compressor", compressor, "--digester", digester)
    bs = read_bootstrap((tmp_path / "img.meta").read_bytes())
    assert (bs.compressor, bs.digester) == (compressor, digester)
    assert (bs.blobs[0].compressor, bs.blobs[0].digester) == (compressor, digester)
    info = json.loads(cli_ok("inspect", "--json", tmp_path / "img.meta").stdout)
    assert (info["superblock"]["compressor"], info["superblock"]["digester"]) == (compressor, digester)
    cli_ok("unpack", "--bootstrap", tmp_path / "img.meta", "--blob", tmp_path / "img.blob", "--output", tmp_path / "x")
    assert diff_trees(tree_snapshot, snapshot(tmp_path / "x"), ignore=("dir:size",), ignore_paths={b"/": ("mtime",)}) == []


def test_compression_shrinks_the_blob(tree: Path, tmp_path: Path) -> None:
    sizes = {c: pack_json("--source-dir", tree, "--name", c, "--output-dir", tmp_path, "--compressor", c)["blob_size"]
             for c in ("none", "zstd")}
    assert sizes["zstd"] < sizes["none"] - 100_000  # the text file compresses


def distinct_chunks(tree: Path, chunk_size: int) -> int:
    """What the blob must hold: one chunk per distinct (content, length) piece of the files."""
    seen = set()
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        seen.update(hashlib.sha256(data[i:i + chunk_size]).digest() for i in range(0, len(data), chunk_size))
    return len(seen)


@pytest.mark.parametrize("size", ["0x1000", "4096", "0x10000", "0x100000"])
def test_chunk_size_bounds_are_accepted(tree: Path, tmp_path: Path, size: str) -> None:
    info = pack_json("--source-dir", tree, "--name", "img", "--output-dir", tmp_path, "--chunk-size", size)
    assert read_bootstrap((tmp_path / "img.meta").read_bytes()).chunk_size == int(size, 0)
    assert info["chunks"] == distinct_chunks(tree, int(size, 0))


def test_fs_align_chunk_aligns_v5_uncompressed_offsets(tree: Path, tmp_path: Path) -> None:
    pack_json("--source-dir", tree, "--name", "img", "--output-dir", tmp_path, "--fs-version", "5", "--fs-align-chunk")
    bs = read_bootstrap((tmp_path / "img.meta").read_bytes())
    offsets = {c.uncompressed_offset for _, n in bs.walk() for c in n.chunks}
    assert len(offsets) > 1 and all(o % 4096 == 0 for o in offsets)


def test_prefetch_patterns_come_from_stdin(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path, "--prefetch-patterns",
       stdin="/etc\n\n/bin/tool\n")
    assert read_bootstrap((tmp_path / "img.meta").read_bytes()).prefetch == [b"/etc", b"/bin/tool"]


def test_repeatable_zeroes_owners(tree: Path, tmp_path: Path) -> None:
    cli_ok("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path, "--repeatable")
    bs = read_bootstrap((tmp_path / "img.meta").read_bytes())
    assert not bs.explicit_uid_gid and all(n.uid == n.gid == 0 for _, n in bs.walk())


def test_tree_without_file_data_has_no_blob(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "empty").touch()
    info = pack_json("--source-dir", src, "--name", "img", "--output-dir", tmp_path / "out")
    assert info["blob"] is None and info["blobs"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.meta"]


# --- errors: one line on stderr, non-zero exit, nothing half-written ---------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--source-dir", "{tmp}/missing"], "does not exist or is not a directory"),
    (["--source-dir", "{tree}/etc/hostname"], "does not exist or is not a directory"),
    (["--chunk-size", "0x3000"], "must be a power of two"),
    (["--chunk-size", "0x800"], "must be a power of two from 0x1000 to 0x100000"),
    (["--chunk-size", "0x200000"], "must be a power of two from 0x1000 to 0x100000"),
    (["--chunk-size", "0"], "must be a power of two"),
    (["--chunk-size", "-4096"], "must be a power of two"),
    (["--chunk-size", "lots"], "invalid --chunk-size 'lots'"),
    (["--chunk-dict", "{tmp}/dict.meta"], "expected bootstrap=PATH"),
    (["--chunk-dict", "blob={tmp}/dict.meta"], "expected bootstrap=PATH"),
    (["--chunk-dict", "bootstrap="], "expected bootstrap=PATH"),
    (["--chunk-dict", "bootstrap={tmp}/missing.meta"], "does not exist"),
    (["--chunk-dict", "bootstrap={tmp}/garbage.meta"], "garbage.meta: not a RAFS bootstrap"),
    (["--parent-bootstrap", "{tmp}/missing.meta"], "--parent-bootstrap"),
    (["--parent-bootstrap", "{tmp}/garbage.meta"], "garbage.meta: not a RAFS bootstrap"),
    (["--compressor", "gzip"], "Invalid value for '--compressor'"),
    (["--digester", "md5"], "Invalid value for '--digester'"),
    (["--fs-version", "4"], "Invalid value for '--fs-version'"),
    (["--bogus-flag"], "No such option"),
    (["--name", "a/b"], "invalid --name"),
    (["--name", ".."], "invalid --name"),
])
def test_bad_input_is_one_line_and_writes_nothing(tree: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.meta").write_bytes(os.urandom(8192))
    defaults = {"--source-dir": str(tree), "--name": "img", "--output-dir": str(tmp_path / "out")}
    argv = [a.format(tmp=tmp_path, tree=tree) for a in args]
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    line = one_line_error(run_cli("pack", *argv))
    assert message in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_required_options_are_usage_errors(tmp_path: Path) -> None:
    res = run_cli("pack", "--output-dir", tmp_path)
    assert res.returncode == 2
    assert "Missing option" in one_line_error(res)


def test_unreadable_output_dir_is_one_line(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    one_line_error(run_cli("pack", "--source-dir", tree, "--name", "img", "--output-dir", tmp_path / "file"))
