"""`BackendContract`: the behaviour every storage backend promises.

A backend distribution subclasses it in its own tests and provides a `backend` fixture
(a fresh, empty backend); every test below then runs against it, as devpi-postgresql
re-runs devpi-server's suite.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nydusify_core.errors import IntegrityError, NotFoundError, NydusifyError
from nydusify_core.protocols import StorageBackend

__all__ = ["BackendContract", "make_blob"]


def make_blob(tmp_path: Path, size: int, seed: int = 0) -> tuple[str, Path, bytes]:
    """A blob file of `size` pseudo-random bytes, named by its sha256 like a Nydus blob id."""
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = bytes(data[:size])
    blob_id = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"blob-{seed}"
    path.write_bytes(data)
    return blob_id, path, data


class BackendContract:
    """Subclass and provide a `backend` fixture yielding an empty `StorageBackend`."""

    large_blob_size = 3 << 20

    @pytest.fixture
    def backend(self) -> StorageBackend:  # pragma: no cover - subclasses override
        raise NotImplementedError("provide a `backend` fixture")

    def test_is_a_storage_backend(self, backend: StorageBackend) -> None:
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.type, str) and backend.type

    def test_absent_blob_does_not_exist(self, backend: StorageBackend) -> None:
        assert backend.exists("0" * 64) is False

    def test_size_of_absent_blob_is_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(NotFoundError):
            backend.size("1" * 64)

    def test_put_then_exists_and_size(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 1000)
        backend.put(blob_id, path)
        assert backend.exists(blob_id)
        assert backend.size(blob_id) == len(data)

    def test_open_returns_whole_blob(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 70000, seed=1)
        backend.put(blob_id, path)
        with backend.open(blob_id) as f:
            assert f.read() == data

    def test_read_range(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 10000, seed=2)
        backend.put(blob_id, path)
        assert backend.read_range(blob_id, 1234, 100) == data[1234:1334]
        assert backend.read_range(blob_id, 0, 1) == data[:1]
        assert backend.read_range(blob_id, len(data) - 5, 5) == data[-5:]

    def test_read_range_beyond_end_fails(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 100, seed=3)
        backend.put(blob_id, path)
        with pytest.raises((IntegrityError, NydusifyError)):
            backend.read_range(blob_id, 90, 20)

    def test_put_existing_without_force_keeps_it(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 500, seed=4)
        backend.put(blob_id, path)
        backend.put(blob_id, path)
        assert backend.size(blob_id) == len(data)

    def test_force_put_overwrites(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, 600, seed=5)
        backend.put(blob_id, path)
        backend.put(blob_id, path, force=True)
        with backend.open(blob_id) as f:
            assert f.read() == data

    def test_large_blob_round_trips(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, data = make_blob(tmp_path, self.large_blob_size, seed=6)
        backend.put(blob_id, path)
        assert backend.size(blob_id) == len(data)
        with backend.open(blob_id) as f:
            assert hashlib.sha256(f.read()).hexdigest() == blob_id

    def test_delete(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id, path, _ = make_blob(tmp_path, 300, seed=7)
        backend.put(blob_id, path)
        backend.delete(blob_id)
        assert backend.exists(blob_id) is False

    def test_invalid_blob_id_is_rejected(self, backend: StorageBackend, tmp_path: Path) -> None:
        _, path, _ = make_blob(tmp_path, 10, seed=8)
        for bad in ("../etc/passwd", "ABC", "", "g" * 64):
            with pytest.raises(NydusifyError):
                backend.put(bad, path)

    def test_put_missing_file_leaves_nothing(self, backend: StorageBackend, tmp_path: Path) -> None:
        blob_id = "2" * 64
        with pytest.raises((OSError, NydusifyError)):
            backend.put(blob_id, tmp_path / "does-not-exist")
        assert backend.exists(blob_id) is False
