"""The block-parallel gzip writer (bootstrap layers): any size of input comes back intact
from standard gzip readers, and compresses as well as one zlib stream."""

from __future__ import annotations

import gzip
import io
import random
import shutil
import subprocess
import zlib

import pytest

from nydusify_core.oci.blockgzip import BLOCK, BlockGzipWriter


def mixed(size: int) -> bytes:
    """Half text, half noise, in runs: data where matches across block edges matter."""
    rng = random.Random(size)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(300) if rng.random() < 0.5 else b"inode %d mode 0755 uid 0 gid 0\n" % rng.randrange(1 << 20)
    return bytes(out[:size])


def block_gzip(data: bytes, pieces: int = 7, threads: int = 2) -> bytes:
    out = io.BytesIO()
    with BlockGzipWriter(out, 6, threads=threads) as gz:
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            gz.write(data[i:i + step])
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + BLOCK // 2])
def test_any_size_decompresses_to_the_input(size: int) -> None:
    data = mixed(size)
    assert gzip.decompress(block_gzip(data)) == data


def test_the_system_gzip_accepts_the_stream(tmp_path) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("no gzip command on this machine")
    data = mixed(2 * BLOCK + 123)
    (tmp_path / "x.gz").write_bytes(block_gzip(data))
    assert subprocess.run(["gzip", "-dc", str(tmp_path / "x.gz")], capture_output=True, check=True).stdout == data


def test_blocks_compress_as_well_as_one_stream() -> None:
    data = mixed(4 * BLOCK)
    assert len(block_gzip(data)) <= len(zlib.compress(data, 6)) * 1.01


def test_one_thread_writes_the_same_bytes_as_several() -> None:
    data = mixed(3 * BLOCK)
    assert block_gzip(data, threads=1) == block_gzip(data, threads=3)


def test_an_error_inside_leaves_no_trailer() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with BlockGzipWriter(out) as gz:
            gz.write(b"x" * 10)
            raise RuntimeError("stop")
    with pytest.raises(EOFError):
        gzip.decompress(out.getvalue())
