"""`RangedBlobFile`: random access to a backend blob through `read_range`, with read-ahead.

The backend is the real built-in `localfs` one; what is checked is that the adapter returns
the blob's bytes for any seek/read pattern and that read-ahead saves requests.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nydusify_core.builtin.localfs import LocalfsBackend, LocalfsConfig
from nydusify_core.errors import NotFoundError
from nydusify_core.rafs.remote import RangedBlobFile

BLOB = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes


@pytest.fixture
def stored(tmp_path: Path) -> tuple[LocalfsBackend, str]:
    backend = LocalfsBackend(LocalfsConfig(dir=str(tmp_path)))
    blob_id = hashlib.sha256(BLOB).hexdigest()
    src = tmp_path / "src"
    src.write_bytes(BLOB)
    backend.put(blob_id, src)
    return backend, blob_id


def test_reads_match_the_blob_at_any_offset(stored) -> None:
    backend, blob_id = stored
    f = RangedBlobFile(backend, blob_id, readahead=4096)
    assert f.size == len(BLOB)
    for offset, size in [(0, 10), (4090, 20), (len(BLOB) - 3, 10), (12345, 70000), (len(BLOB), 5)]:
        f.seek(offset)
        assert f.read(size) == BLOB[offset : offset + size]
    f.seek(-4, os.SEEK_END)
    assert f.read() == b"tail"


def test_sequential_small_reads_share_one_request_per_window(stored) -> None:
    backend, blob_id = stored
    f = RangedBlobFile(backend, blob_id, readahead=64 * 1024)
    data = b"".join(f.read(1000) for _ in range(64))
    assert data == BLOB[:64000]
    assert f.requests == 1


def test_without_read_ahead_every_read_is_a_request(stored) -> None:
    backend, blob_id = stored
    f = RangedBlobFile(backend, blob_id, readahead=0)
    for _ in range(5):
        f.read(10)
    assert f.requests == 5


def test_missing_blob_is_not_found(stored) -> None:
    backend, _ = stored
    with pytest.raises(NotFoundError):
        RangedBlobFile(backend, "0" * 64)
