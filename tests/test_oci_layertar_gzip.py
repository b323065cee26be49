"""The layer reader inflates gzip itself (zlib, large blocks): it must accept exactly what
`gzip.GzipFile` accepts (several members, NUL padding) and reject the same damage."""

from __future__ import annotations

import gzip
import hashlib
import io
import os

import pytest

from nydusify_core.errors import FormatError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.layertar import open_layer_tar

GZ = mt.OCI_LAYER_GZIP if hasattr(mt, "OCI_LAYER_GZIP") else "application/vnd.oci.image.layer.v1.tar+gzip"
DATA = os.urandom(300_000) + bytes(3_000_000) + b"tail" * 100_000  # several 1 MiB input blocks


def inflate(blob: bytes, read_size: int = 1 << 20) -> bytes:
    stream = open_layer_tar(io.BytesIO(blob), media_type=GZ, layer="L")
    out = []
    while block := stream.read(read_size):
        out.append(block)
    return b"".join(out)


@pytest.mark.parametrize("read_size", [1, 511, 1 << 20, 5 << 20])
def test_single_member_round_trips_whatever_the_read_size(read_size: int) -> None:
    data = DATA[:200_000] if read_size < 512 else DATA
    assert inflate(gzip.compress(data), read_size) == data


def test_concatenated_members_are_one_stream() -> None:
    blob = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    assert inflate(blob) == DATA


def test_nul_padding_after_a_member_is_skipped() -> None:
    blob = gzip.compress(DATA[:5000]) + bytes(700) + gzip.compress(DATA[5000:6000]) + bytes(3)
    assert inflate(blob) == DATA[:6000]


def test_header_fields_are_parsed() -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="layer.tar", mode="wb", fileobj=buf, mtime=1) as f:  # FNAME set
        f.write(DATA[:10000])
    assert inflate(buf.getvalue()) == DATA[:10000]


def test_the_decoded_stream_hashes_what_it_returns() -> None:
    stream = open_layer_tar(io.BytesIO(gzip.compress(DATA)), media_type=GZ)
    while stream.read(1 << 20):
        pass
    assert stream.raw.diff_id == "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("cut", [1, 6, 9, 5000])
def test_a_cut_member_is_truncated(cut: int) -> None:
    blob = gzip.compress(DATA)
    with pytest.raises(FormatError, match="layer L: truncated gzip stream"):
        inflate(blob[:-cut])


def test_a_bad_crc_is_corrupt() -> None:
    blob = bytearray(gzip.compress(DATA[:10000]))
    blob[-6] ^= 0xFF  # inside the CRC32 of the trailer
    with pytest.raises(FormatError, match="layer L: corrupt gzip stream"):
        inflate(bytes(blob))


def test_garbage_after_a_member_is_corrupt() -> None:
    with pytest.raises(FormatError, match="layer L: corrupt gzip stream"):
        inflate(gzip.compress(DATA[:1000]) + b"garbage!")
