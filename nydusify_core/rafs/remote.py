"""Blobs read in place from a storage backend, through ranged reads.

`BlobReader` only needs `seek`/`read` on a file of known size; `RangedBlobFile` gives it
that over `StorageBackend.read_range`, so `unpack` never downloads a whole blob. Chunk
reads are small and mostly sequential, so one read-ahead window (fetched with a single
ranged request, at least `readahead` bytes) serves most of them without a round trip.
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable

from nydusify_core.errors import UsageError
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.model import BlobInfo

DEFAULT_READAHEAD = 1 << 20  # one request per MiB of sequential chunk data

BlobOpener = Callable[[int, BlobInfo], BlobReader]


class RangedBlobFile(io.RawIOBase):
    """A read-only, seekable file over `backend.read_range(blob_id, ...)`."""

    def __init__(self, backend: Any, blob_id: str, size: int | None = None, *, readahead: int = DEFAULT_READAHEAD) -> None:
        if readahead < 0:
            raise UsageError(f"read-ahead must not be negative, got {readahead}")
        self._backend, self.blob_id, self.readahead = backend, blob_id, readahead
        self.size = backend.size(blob_id) if size is None else size
        self._pos = 0
        self._window_start, self._window = 0, b""
        self.requests = 0  # ranged requests made, for tests and debugging

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._range(self._pos, end)
        self._pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _range(self, start: int, end: int) -> bytes:
        w_start, w_end = self._window_start, self._window_start + len(self._window)
        if w_start <= start and end <= w_end:
            return self._window[start - w_start : end - w_start]
        want = end - start
        if want >= self.readahead:
            self.requests += 1
            return self._backend.read_range(self.blob_id, start, want)
        fetch_end = min(self.size, start + self.readahead)
        self.requests += 1
        self._window_start, self._window = start, self._backend.read_range(self.blob_id, start, fetch_end - start)
        return self._window[: want]


class _RemoteBlobReader(BlobReader):
    """A blob reader that names its object (its URL) in errors, as the file readers do."""

    def __init__(self, f: RangedBlobFile, blob: BlobInfo, *, source: str) -> None:
        super().__init__(f, blob, size=f.size)
        self.source = source


def backend_blob_opener(backend: Any, *, readahead: int = DEFAULT_READAHEAD) -> tuple[BlobOpener, Callable[[], None]]:
    """Open blobs by id in `backend` (ranged reads); returns (opener, closer) like `blob_dir_opener`."""
    readers: dict[int, BlobReader] = {}

    def opener(index: int, blob: BlobInfo) -> BlobReader:
        if index not in readers:
            f = RangedBlobFile(backend, blob.blob_id, readahead=readahead)
            url = backend.blob_url(blob.blob_id) if callable(getattr(backend, "blob_url", None)) else blob.blob_id
            readers[index] = _RemoteBlobReader(f, blob, source=url)
        return readers[index]

    def close() -> None:
        readers.clear()

    return opener, close
