"""Layer tar reading: decompression, every entry attribute, hostile input."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from nydusify_core.errors import FormatError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.layertar import EntryType, LayerTar, iter_layer_entries, normalize_path, open_layer_tar

LAYER = "sha256:" + "ab" * 32
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nydus-v2.2" / "tar"


def member(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    info.mode = attrs.pop("mode", 0o644)
    info.mtime = attrs.pop("mtime", 1_600_000_000)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(*members: tuple[tarfile.TarInfo, bytes], format: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format, encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def entries(blob: bytes, media_type: str = "") -> list:
    """Entries with regular-file data read eagerly (streams die with the next entry)."""
    result = []
    for entry in iter_layer_entries(io.BytesIO(blob), media_type=media_type, layer=LAYER):
        result.append((entry, entry.data.read() if entry.data else None))
    return result


def only(blob: bytes):
    (entry, _), = entries(blob)
    return entry


def rejects(blob: bytes, match: str, media_type: str = "") -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        entries(blob, media_type)
    message = str(info.value)
    assert LAYER in message and "\n" not in message
    return info.value


# --- compression -----------------------------------------------------------------------

@pytest.fixture
def plain() -> bytes:
    return make_tar(member("etc", tarfile.DIRTYPE, mode=0o755), member("etc/hosts", data=b"127.0.0.1 localhost\n"))


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_compression_is_detected_from_magic_bytes(plain: bytes, codec: str) -> None:
    blob = {"none": plain, "gzip": gzip.compress(plain), "zstd": zstandard.ZstdCompressor().compress(plain)}[codec]
    with LayerTar(io.BytesIO(blob), layer=LAYER) as tar:
        got = [(e.path, e.data.read() if e.data else None) for e in tar]
        assert tar.compression == codec
    assert got == [(b"etc", None), (b"etc/hosts", b"127.0.0.1 localhost\n")]


def test_magic_bytes_win_over_a_wrong_media_type(plain: bytes) -> None:
    assert [e.path for e, _ in entries(gzip.compress(plain), media_type=mt.OCI_LAYER)] == [b"etc", b"etc/hosts"]
    assert [e.path for e, _ in entries(plain, media_type=mt.OCI_LAYER_GZIP)] == [b"etc", b"etc/hosts"]


def test_diff_id_is_the_digest_of_the_uncompressed_stream(plain: bytes) -> None:
    with LayerTar(io.BytesIO(zstandard.ZstdCompressor().compress(plain)), layer=LAYER) as tar:
        assert tar.diff_id is None
        for _ in tar:
            pass
        assert tar.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
        assert tar.uncompressed_size == len(plain)


def test_open_layer_tar_gives_the_uncompressed_bytes(plain: bytes) -> None:
    with open_layer_tar(io.BytesIO(gzip.compress(plain)), layer=LAYER) as f:
        assert f.read() == plain


def test_multi_member_gzip_and_multi_frame_zstd_are_one_stream(plain: bytes) -> None:
    half = len(plain) // 2
    assert len(entries(gzip.compress(plain[:half]) + gzip.compress(plain[half:]))) == 2
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    assert len(entries(cctx.compress(plain[:half]) + cctx.compress(plain[half:]))) == 2


def test_missing_padding_and_trailer_after_the_last_file_is_accepted() -> None:
    blob = make_tar(member("d", tarfile.DIRTYPE), member("d/f", data=b"hi\n"))
    unpadded = blob[:512 * 2 + 3]  # what umoci writes: no data padding, no end blocks
    assert [(e.path, d) for e, d in entries(unpadded)] == [(b"d", None), (b"d/f", b"hi\n")]


def test_empty_stream_is_an_empty_layer() -> None:
    assert entries(b"") == []
    assert entries(b"", media_type=mt.OCI_LAYER_GZIP) == []


# --- entry attributes -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_long_link_targets(fmt: int) -> None:
    long_dir = "d" * 120
    blob = make_tar(
        member(f"{long_dir}/file", data=b"x"),
        member("link", tarfile.SYMTYPE, linkname="t" * 300),
        member("hard", tarfile.LNKTYPE, linkname=f"{long_dir}/file"),
        format=fmt,
    )
    (reg, data), (sym, _), (hard, _) = entries(blob)
    assert reg.path == f"{long_dir}/file".encode() and data == b"x"
    assert sym.link_target == b"t" * 300
    assert hard.link_target == f"{long_dir}/file".encode()


def test_ustar_prefix_field_is_joined_to_the_name() -> None:
    name = "p" * 90 + "/" + "n" * 90
    assert only(make_tar(member(name), format=tarfile.USTAR_FORMAT)).path == name.encode()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_non_utf8_names_are_kept_as_bytes(fmt: int) -> None:
    raw = b"caf\xe9-\xff\xfe.txt"
    entry = only(make_tar(member(raw.decode("utf-8", "surrogateescape")), format=fmt))
    assert entry.path == raw


def test_pax_xattrs_keep_binary_values() -> None:
    info, data = member("f")
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    info.pax_headers = {
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.text": "hello",
        "SCHILY.xattr.user.empty": "",
    }
    entry = only(make_tar((info, data)))
    assert entry.xattrs == {b"security.capability": cap, b"user.text": b"hello", b"user.empty": b""}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_large_uid_and_gid(fmt: int) -> None:
    entry = only(make_tar(member("f", uid=3_000_000_000, gid=2_200_000_000), format=fmt))
    assert (entry.uid, entry.gid) == (3_000_000_000, 2_200_000_000)


def test_uid_beyond_32_bits_is_rejected() -> None:
    rejects(make_tar(member("f", uid=1 << 40)), "does not fit 32 bits")


def test_pax_mtime_keeps_nanoseconds() -> None:
    info, data = member("f")
    info.pax_headers = {"mtime": "1600000000.123456789"}
    entry = only(make_tar((info, data)))
    assert (entry.mtime, entry.mtime_nsec) == (1_600_000_000, 123_456_789)


def test_negative_pax_mtime_is_floored() -> None:
    info, data = member("f")
    info.pax_headers = {"mtime": "-1.25"}
    entry = only(make_tar((info, data)))
    assert (entry.mtime, entry.mtime_nsec) == (-2, 750_000_000)


def test_mode_keeps_setuid_setgid_and_sticky() -> None:
    got = entries(make_tar(member("su", mode=0o4755), member("sg", mode=0o2711), member("tmp", tarfile.DIRTYPE, mode=0o1777)))
    assert [e.mode for e, _ in got] == [0o4755, 0o2711, 0o1777]
    assert got[2][0].st_mode == 0o41777


def test_devices_and_fifos() -> None:
    got = entries(make_tar(
        member("null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        member("pipe", tarfile.FIFOTYPE),
    ))
    assert [(e.type, e.devmajor, e.devminor) for e, _ in got] == [
        (EntryType.CHAR, 1, 3), (EntryType.BLOCK, 8, 0), (EntryType.FIFO, 0, 0),
    ]


def test_symlink_targets_are_stored_verbatim() -> None:
    got = entries(make_tar(
        member("up", tarfile.SYMTYPE, linkname="../../../../etc/shadow"),
        member("abs", tarfile.SYMTYPE, linkname="/etc/./passwd"),
    ))
    assert [e.link_target for e, _ in got] == [b"../../../../etc/shadow", b"/etc/./passwd"]


def test_leading_slash_and_dot_slash_are_stripped_and_root_is_empty() -> None:
    got = entries(make_tar(
        member("./", tarfile.DIRTYPE, mode=0o755),
        member("./usr//bin/./", tarfile.DIRTYPE),
        member("/usr/bin/sh", data=b"#!"),
        member("bin", tarfile.LNKTYPE, linkname="./usr/bin/sh"),
    ))
    assert [e.path for e, _ in got] == [b"", b"usr/bin", b"usr/bin/sh", b"bin"]
    assert got[0][0].is_root and got[3][0].link_target == b"usr/bin/sh"


def test_duplicate_paths_are_all_yielded_in_order() -> None:
    got = entries(make_tar(member("f", data=b"old"), member("f", data=b"new")))
    assert [(e.path, d) for e, d in got] == [(b"f", b"old"), (b"f", b"new")]


def test_whiteouts_are_ordinary_entries() -> None:
    got = entries(make_tar(member("d/.wh.gone"), member("d/.wh..wh..opq")))
    assert [e.path for e, _ in got] == [b"d/.wh.gone", b"d/.wh..wh..opq"]


def test_data_is_readable_until_the_next_entry_only() -> None:
    it = iter_layer_entries(io.BytesIO(make_tar(member("a", data=b"A" * 5000), member("b", data=b"B"))), layer=LAYER)
    first = next(it)
    assert first.data.read(10) == b"A" * 10
    second = next(it)  # the rest of "a" is skipped
    assert second.data.read() == b"B"
    with pytest.raises(ValueError, match="until the next entry"):
        first.data.read()


def test_old_style_regular_file_with_trailing_slash_is_a_directory() -> None:
    info, _ = member("olddir/", type_=tarfile.AREGTYPE)
    assert only(make_tar((info, b""), format=tarfile.GNU_FORMAT)).type is EntryType.DIR


def test_gnu_tar_archive(tmp_path: Path) -> None:
    if not shutil.which("tar"):
        pytest.skip("GNU tar not installed")
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "file").write_bytes(b"data")
    (root / "dir" / "link").symlink_to("file")
    out = tmp_path / "l.tar"
    subprocess.run(["tar", "--format=gnu", "--numeric-owner", "-C", str(root), "-cf", str(out), "."], check=True)
    got = {e.path: (e.type, d) for e, d in entries(out.read_bytes())}
    assert got[b""][0] is EntryType.DIR
    assert got[b"dir/file"] == (EntryType.REG, b"data")
    assert got[b"dir/link"][0] is EntryType.SYMLINK


# --- shared fixtures --------------------------------------------------------------------

def fixture(name: str) -> bytes:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"shared fixture {path} is absent")
    return path.read_bytes()


def test_fixture_with_every_entry_type() -> None:
    got = {e.path: e for e, _ in entries(fixture("all-entry-type.tar"))}
    assert got[b"tar/dir1/dir3/hardlink1.txt"].type is EntryType.REG
    assert got[b"tar/dir2/hardlink3.txt"].link_target == b"tar/dir1/dir3/hardlink1.txt"
    assert got[b"tar/dir2/symlink1.txt"].link_target == b"../dir1/dir3/file1.txt"


def test_fixture_made_by_macos_tar_has_pax_xattrs_and_long_name() -> None:
    got = {e.path: e for e, _ in entries(fixture("all-entry-type-macos.tar"))}
    assert got[b"tar/dir1/dir3"].xattrs == {b"dir": b"value"}
    assert any(len(p) > 200 for p in got)
    assert got[b"tar/dir1/dir3/xfile.txt"].link_target == b"tar/dir1/hardlink2.txt"


def test_fixture_empty_tar() -> None:
    assert entries(fixture("empty.tar")) == []


# --- hostile input ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/../etc/passwd", "a/.."])
def test_dotdot_components_are_rejected(name: str) -> None:
    rejects(make_tar(member(name)), r"'\.\.' component")


def test_absolute_paths_become_relative() -> None:
    assert only(make_tar(member("/etc/passwd"))).path == b"etc/passwd"


def test_hardlink_to_a_later_entry_is_rejected() -> None:
    rejects(make_tar(member("link", tarfile.LNKTYPE, linkname="target"), member("target")), "not an earlier entry")


def test_hardlink_to_a_missing_entry_is_rejected() -> None:
    rejects(make_tar(member("link", tarfile.LNKTYPE, linkname="nowhere")), "not an earlier entry")


def test_hardlink_escaping_the_layer_is_rejected() -> None:
    rejects(make_tar(member("f"), member("link", tarfile.LNKTYPE, linkname="../f")), r"'\.\.' component")


def test_hardlink_to_a_directory_is_rejected() -> None:
    rejects(make_tar(member("d", tarfile.DIRTYPE), member("link", tarfile.LNKTYPE, linkname="d")), "is a directory")


def test_bad_header_checksum_is_rejected() -> None:
    blob = bytearray(make_tar(member("a", data=b"x"), member("b", data=b"y")))
    blob[1024 + 5] ^= 0x01  # the name of the second header (after a's header + data block)
    rejects(bytes(blob), "bad tar header checksum")


def test_truncated_plain_tar_is_rejected() -> None:
    blob = make_tar(member("a", data=b"x" * 3000))
    rejects(blob[:512 + 1000], "truncated")
    rejects(blob[:300], "truncated tar header")


def test_truncated_gzip_is_rejected() -> None:
    blob = gzip.compress(make_tar(member("a", data=bytes(range(256)) * 40)))
    rejects(blob[:-6], "truncated gzip stream")


def test_corrupt_gzip_is_rejected() -> None:
    blob = bytearray(gzip.compress(make_tar(member("a", data=bytes(range(256)) * 40))))
    blob[len(blob) // 2] ^= 0xFF
    rejects(bytes(blob), "corrupt gzip stream|truncated|checksum")


def test_corrupt_zstd_is_rejected() -> None:
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(make_tar(member("a", data=b"abc" * 5000))))
    blob[len(blob) // 2] ^= 0xFF
    rejects(bytes(blob), "corrupt zstd stream|checksum|truncated")


def zstd_block_offsets(frame: bytes) -> list[int]:
    """Start offsets of the blocks of a single zstd frame (no dictionary, no checksum)."""
    descriptor = frame[4]
    single = (descriptor >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
    offsets = []
    while True:
        offsets.append(pos)
        header = int.from_bytes(frame[pos:pos + 3], "little")
        pos += 3 + (1 if (header >> 1) & 3 == 1 else header >> 3)
        if header & 1:
            return offsets


def test_zstd_cut_at_a_block_boundary_is_rejected() -> None:
    tar = make_tar(member("a", data=bytes(range(256)) * 2000))
    frame = zstandard.ZstdCompressor(level=1).compress(tar)
    last_block = zstd_block_offsets(frame)[-1]
    assert last_block > 5, "the frame should have several blocks"
    # libzstd's streaming reader alone reports this as a clean, shorter stream
    cut = frame[:last_block]
    assert len(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(cut)).read()) < len(tar)
    with pytest.raises(FormatError, match=f"layer {LAYER}: truncated zstd stream"):
        open_layer_tar(io.BytesIO(cut), layer=LAYER).read()
    rejects(cut, "truncated")


def test_unknown_entry_types_are_rejected() -> None:
    info, _ = member("vol")
    info.type = b"V"
    rejects(make_tar((info, b""), format=tarfile.GNU_FORMAT), "unsupported tar entry type")


def test_gnu_sparse_files_are_rejected(tmp_path: Path) -> None:
    info, _ = member("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    blob = bytearray(make_tar((info, b""), format=tarfile.GNU_FORMAT))
    rejects(bytes(blob), "sparse")
    info, data = member("pax-sparse")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    rejects(make_tar((info, data)), "sparse")


def test_oversized_pax_header_is_rejected() -> None:
    info, data = member("f")
    info.pax_headers = {"SCHILY.xattr.user.big": "x" * (1 << 20)}
    rejects(make_tar((info, data)), "exceeds")


def test_malformed_pax_record_is_rejected() -> None:
    info, data = member("f")
    info.pax_headers = {"comment": "hello"}
    blob = bytearray(make_tar((info, data)))
    start = blob.index(b"comment=hello")
    blob[start - 3:start - 1] = b"99"  # record length now runs past the header
    fix_checksum(blob, 0)
    rejects(bytes(blob), "PAX record")


def test_data_after_a_single_zero_block_is_rejected() -> None:
    blob = make_tar(member("a"))
    end = 512  # a's header; no data
    rejects(blob[:end] + bytes(512) + make_tar(member("b")), "single end-of-archive block")


def test_nul_in_pax_path_is_rejected() -> None:
    info, data = member("f")
    info.pax_headers = {"path": "a\0b"}
    rejects(make_tar((info, data)), "NUL")


def fix_checksum(block: bytearray, offset: int) -> None:
    header = block[offset:offset + 512]
    header[148:156] = b" " * 8
    block[offset + 148:offset + 156] = b"%06o\0 " % sum(header)


def test_normalize_path_examples() -> None:
    assert normalize_path(b"./a//b/./c/") == b"a/b/c"
    assert normalize_path(b"///") == b""
    with pytest.raises(ValueError):
        normalize_path(b"a/../b")
