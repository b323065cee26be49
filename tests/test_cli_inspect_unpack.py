"""`nydusify inspect` and `nydusify unpack` from the command line, on upstream fixtures,
freshly packed images and hostile input."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nydusify_core.commands.common import load_bootstrap
from nydusify_core.errors import NydusifyError
from nydusify_core.rafs.inspect import describe
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir
from nydusify_core.testing.cli import cli_ok, one_line_error, run_cli
from nydusify_core.testing.trees import diff_trees, snapshot

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "nydus-v2.2"
V5_IMAGES = ["sha256-nocompress-repeatable", "blake3-lz4_block-non_repeatable"]
V6_BOOT = FIXTURES / "bootstrap" / "rafs-v6-2.2.boot"
BY_DESIGN = {"ignore": ("dir:size",), "ignore_paths": {b"/": ("mtime",)}}


def need_fixtures() -> None:
    if not V6_BOOT.exists():
        pytest.skip(f"upstream fixtures are absent ({FIXTURES})")


def result_md5s(image: str) -> dict[str, str]:
    """The md5 lines that follow the `tree -J` listing in a fixture's .result file."""
    text = (FIXTURES / "repeatable" / f"{image}.result").read_text()
    out = {}
    for line in text.partition("\n]\n")[2].splitlines():
        if line.strip():
            digest, path = line.split(None, 1)
            out[path] = digest
    return out


# --- a packed image with every kind of entry -------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(source, bootstrap, blob) of a small tree packed by the CLI."""
    base = tmp_path_factory.mktemp("image")
    src = base / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"content\n" * 1000)
    (src / "dir" / "sub" / "big").write_bytes(hashlib.sha512(b"x").digest() * 40000)
    (src / "empty").write_bytes(b"")
    (src / "exec").write_bytes(b"#!/bin/sh\n")
    (src / "exec").chmod(0o4755)
    os.link(src / "dir" / "file", src / "hardlink")
    os.symlink("dir/file", src / "symlink")
    os.mkfifo(src / "fifo", 0o600)
    os.setxattr(src / "dir" / "file", "user.note", b"hello")
    (src / "ünïcode").write_text("names")
    os.utime(src / "dir" / "file", ns=(1_600_000_000_987_654_321, 1_600_000_000_987_654_321))
    cli_ok("pack", "--source-dir", src, "--name", "img", "--output-dir", base / "out")
    return src, base / "out" / "img.meta", base / "out" / "img.blob"


@pytest.fixture(scope="module")
def image_v5(image, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    src = image[0]
    out = tmp_path_factory.mktemp("image5")
    cli_ok("pack", "--source-dir", src, "--name", "img", "--output-dir", out, "--fs-version", "5", "--compressor", "lz4_block")
    return src, out / "img.meta", out / "img.blob"


# --- inspect ------------------------------------------------------------------------------------


def inspect_json(boot: Path) -> dict:
    """`inspect --json`, checked against the shape `check` writes as nydus_bootstrap_debug.json."""
    info = json.loads(cli_ok("inspect", "--json", boot).stdout)
    assert list(info) == ["version", "bootstrap", "blobs", "superblock", "blob_table", "stats", "tree"]
    assert info["version"].startswith("nydusify-") and info["bootstrap"] == str(boot)
    assert info["blobs"] == [b["blob_id"] for b in info["blob_table"]]
    assert set(info["superblock"]) == {"fs_version", "chunk_size", "compressor", "digester", "explicit_uid_gid",
                                       "flags", "prefetch"}
    for i, blob in enumerate(info["blob_table"]):
        assert blob["index"] == i
        assert {"blob_id", "chunk_count", "chunk_size", "compressor", "digester", "features", "compressed_size",
                "uncompressed_size", "ci_compressor", "ci_offset", "ci_compressed_size", "ci_uncompressed_size",
                "toc_size", "toc_digest"} <= set(blob)
    assert set(info["stats"]) == {"entries", "by_type", "file_bytes", "chunk_references", "distinct_chunks"}
    for entry in info["tree"]:
        assert {"path", "type", "mode", "uid", "gid", "size", "mtime", "mtime_nsec", "nlink"} <= set(entry)
    return info


def test_inspect_json_shape_of_a_packed_image(image) -> None:
    _, boot, blob_path = image
    info = inspect_json(boot)
    assert info["superblock"]["fs_version"] == 6 and info["superblock"]["chunk_size"] == "0x100000"
    assert 0 < info["blob_table"][0]["compressed_size"] <= blob_path.stat().st_size
    stats = info["stats"]
    assert stats["entries"] == len(info["tree"]) == 11
    assert stats["by_type"] == {"dir": 3, "fifo": 1, "file": 6, "symlink": 1}
    by_path = {e["path"]: e for e in info["tree"]}
    assert by_path["/exec"]["mode"] == "4755"
    assert by_path["/symlink"]["target"] == "dir/file"
    assert by_path["/dir/file"]["xattrs"] == {"user.note": "hello"}
    assert (by_path["/dir/file"]["mtime"], by_path["/dir/file"]["mtime_nsec"]) == (1_600_000_000, 987_654_321)
    assert by_path["/dir/file"]["nlink"] == 2
    assert "/ünïcode" in by_path


def test_inspect_text_and_no_tree(image) -> None:
    _, boot, _ = image
    text = cli_ok("inspect", boot).stdout
    info = inspect_json(boot)
    assert "RAFS v6" in text and info["blobs"][0] in text and "/dir/sub/big" in text
    assert "tree" not in json.loads(cli_ok("inspect", "--json", "--no-tree", boot).stdout)


def test_inspect_json_of_the_v6_fixture() -> None:
    need_fixtures()
    info = inspect_json(V6_BOOT)
    assert info["superblock"]["fs_version"] == 6
    assert info["blobs"] == ["be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"]
    assert info["stats"]["by_type"] == {"dir": 1, "file": 2}
    assert sorted(e["size"] for e in info["tree"] if e["type"] == "file") == [13400, 16931]


@pytest.mark.parametrize("name", V5_IMAGES)
def test_inspect_json_of_the_v5_fixtures(name: str) -> None:
    need_fixtures()
    info = inspect_json(FIXTURES / "repeatable" / name)
    assert info["superblock"]["fs_version"] == 5
    assert info["stats"]["entries"] == 54 == len(info["tree"])
    files = {e["path"] for e in info["tree"] if e["type"] == "file"}
    assert set(result_md5s(name)) <= files


# --- unpack -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", V5_IMAGES)
def test_unpack_of_the_v5_fixtures_reproduces_the_result_md5s(name: str, tmp_path: Path) -> None:
    need_fixtures()
    cli_ok("unpack", "--bootstrap", FIXTURES / "repeatable" / name, "--blob-dir", FIXTURES / "repeatable" / "blobs",
       "--output", tmp_path / "out")
    got = {path: hashlib.md5((tmp_path / "out" / path.lstrip("/")).read_bytes()).hexdigest() for path in result_md5s(name)}
    assert got == result_md5s(name)
    assert os.readlink(tmp_path / "out" / "symlink-test" / "root-1") == "/////////////////"
    foo, test_sh = (tmp_path / "out" / "hardlink-test" / n for n in ("foo", "test.sh"))
    assert foo.stat().st_ino == test_sh.stat().st_ino


def test_unpack_of_the_v6_fixture(tmp_path: Path) -> None:
    need_fixtures()
    cli_ok("unpack", "--bootstrap", V6_BOOT, "--blob-dir", FIXTURES / "blobs", "--output", tmp_path / "out")
    sizes = sorted(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert sizes == [13400, 16931]


def test_unpack_reproduces_the_packed_tree(image, tmp_path: Path) -> None:
    src, boot, blob = image
    cli_ok("unpack", "--bootstrap", boot, "--blob", blob, "--output", tmp_path / "out")
    assert diff_trees(snapshot(src), snapshot(tmp_path / "out"), **BY_DESIGN) == []


def test_unpack_blob_dir_defaults_to_the_bootstrap_directory(image, tmp_path: Path) -> None:
    src, boot, blob = image
    d = tmp_path / "image"
    d.mkdir()
    (d / "img.meta").write_bytes(boot.read_bytes())
    info = inspect_json(boot)
    (d / info["blobs"][0]).write_bytes(blob.read_bytes())
    cli_ok("unpack", "--bootstrap", d / "img.meta", "--output", tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "sub" / "big").read_bytes() == (src / "dir" / "sub" / "big").read_bytes()


def test_unpack_to_a_tar_holds_the_same_entries(image, tmp_path: Path) -> None:
    src, boot, blob = image
    cli_ok("unpack", "--bootstrap", boot, "--blob", blob, "--tar", tmp_path / "img.tar")
    source = snapshot(src)
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.FIFOTYPE: "fifo"}
    seen: dict[bytes, tarfile.TarInfo] = {}
    with tarfile.open(tmp_path / "img.tar", encoding="utf-8", errors="surrogateescape") as tar:
        assert tar.pax_headers is not None
        for member in tar:
            path = b"/" if member.name == "." else b"/" + os.fsencode(member.name)
            seen[path] = member
            entry = source[path]
            assert (member.uid, member.gid, member.mode) == (entry.uid, entry.gid, entry.mode), path
            if path != b"/":  # nanoseconds, exactly, in the PAX header
                sec, _, frac = member.pax_headers.get("mtime", str(member.mtime)).partition(".")
                assert int(sec) * 10**9 + int(frac.ljust(9, "0")) == entry.mtime, path
            if member.islnk():
                assert b"/" + os.fsencode(member.linkname) in entry.links, path
                continue
            assert kinds[member.type] == entry.kind, path
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == entry.sha256, path
            if member.issym():
                assert os.fsencode(member.linkname) == entry.target
            xattrs = {k.removeprefix("SCHILY.xattr.").encode(): v.encode("utf-8", "surrogateescape")
                      for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            assert xattrs == dict(entry.xattrs), path
    assert set(seen) == set(source)
    assert sum(m.islnk() for m in seen.values()) == 1


# --- errors ---------------------------------------------------------------------------------------


def test_unpack_needs_exactly_one_destination(image, tmp_path: Path) -> None:
    _, boot, blob = image
    assert "exactly one of" in one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob", blob))
    assert "exactly one of" in one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob", blob,
                                                  "--output", tmp_path / "a", "--tar", tmp_path / "b.tar"))


def test_unpack_refuses_an_existing_output(image, tmp_path: Path) -> None:
    _, boot, blob = image
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    assert "already exists" in one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob", blob, "--output", tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]


def test_missing_blob_is_one_line(image, tmp_path: Path) -> None:
    _, boot, _ = image
    line = one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob-dir", tmp_path, "--output", tmp_path / "out"))
    assert "not found" in line and str(tmp_path) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["--output", "--tar"])
def test_flipped_byte_in_the_blob_names_the_file_and_leaves_nothing(image, tmp_path: Path, target: str) -> None:
    _, boot, blob = image
    bad = bytearray(blob.read_bytes())
    bad[10] ^= 0xFF  # inside the first chunk's data
    (tmp_path / "bad.blob").write_bytes(bad)
    dest = tmp_path / ("out" if target == "--output" else "out.tar")
    line = one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob", tmp_path / "bad.blob", target, dest))
    assert "bad.blob" in line and ("digest" in line or "zstd" in line or "decompress" in line.lower())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.blob"]


def test_truncated_blob_is_one_line(image, tmp_path: Path) -> None:
    _, boot, blob = image
    (tmp_path / "short.blob").write_bytes(blob.read_bytes()[:100])  # inside the first chunk
    line = one_line_error(run_cli("unpack", "--bootstrap", boot, "--blob", tmp_path / "short.blob", "--output", tmp_path / "o"))
    assert "short.blob" in line


def hostile_bootstraps(boot: bytes) -> dict[str, bytes]:
    def patch(pos: int, fmt: str, value: int) -> bytes:
        buf = bytearray(boot)
        struct.pack_into(fmt, buf, pos, value)
        return bytes(buf)

    return {
        "empty": b"",
        "garbage": hashlib.sha512(b"g").digest() * 200,
        "truncated superblock": boot[:1100],
        "truncated by a block": boot[:-4096],
        "bad EROFS magic": patch(1024, "<I", 0xDEADBEEF),
        "root nid out of range": patch(1024 + 14, "<H", 0xFFFF),
        "meta area beyond the end": patch(1024 + 40, "<I", 0xFFFFFFF0),
        "v5 magic with nothing behind": struct.pack("<I", 0x52414653) + bytes(100),
    }


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated superblock", "truncated by a block", "bad EROFS magic",
                                  "root nid out of range", "meta area beyond the end", "v5 magic with nothing behind"])
def test_hostile_bootstrap_is_one_line_for_inspect_and_unpack(image, tmp_path: Path, case: str) -> None:
    _, boot, blob = image
    bad = tmp_path / "bad.boot"
    bad.write_bytes(hostile_bootstraps(boot.read_bytes())[case])
    line = one_line_error(run_cli("inspect", bad))
    assert "bad.boot" in line
    one_line_error(run_cli("unpack", "--bootstrap", bad, "--blob", blob, "--output", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_bootstrap_and_directory_bootstrap_are_one_line(tmp_path: Path) -> None:
    assert "does not exist" in one_line_error(run_cli("inspect", tmp_path / "nope"))
    one_line_error(run_cli("inspect", tmp_path))
    one_line_error(run_cli("unpack", "--bootstrap", tmp_path / "nope", "--output", tmp_path / "o"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(v5=st.booleans(), edits=st.lists(st.tuples(st.integers(0, 24575), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 24576)))
def test_mutated_bootstraps_fail_only_with_nydusify_errors(image, image_v5, tmp_path_factory, v5, edits, cut) -> None:
    """What the commands do with a bootstrap (load, describe, extract) never crashes on
    corrupt bytes: either it works or a NydusifyError explains why."""
    _, boot, blob = image_v5 if v5 else image
    data = bytearray(boot.read_bytes())
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    if cut is not None:
        del data[cut:]
    work = tmp_path_factory.mktemp("fuzz")
    path = work / "m.boot"
    path.write_bytes(bytes(data))
    try:
        bs = load_bootstrap(path)
        json.dumps(describe(bs, str(path)))
        opener, close = blob_dir_opener(work, blob)
        try:
            unpack_to_dir(bs, opener, work / "out")
        finally:
            close()
    except NydusifyError as exc:
        assert "\n" not in str(exc)
    assert not any(p.name.startswith(".out.") for p in work.iterdir())  # no half-extracted tree left
