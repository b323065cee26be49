"""Stream wrappers that check a blob's sha256 digest and size while it is read."""

from __future__ import annotations

import hashlib
import io
from typing import IO

from nydusify_core.errors import IntegrityError


class VerifyingReader(io.RawIOBase):
    """Reads `stream` and raises `IntegrityError` at EOF (or on overrun) when the bytes do
    not have `digest` and `size`. Nothing downstream may trust data before EOF is reached."""

    def __init__(self, stream: IO[bytes], digest: str, size: int | None, what: str = "blob") -> None:
        self._stream = stream
        self._expected = digest
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self._count = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if hasattr(self._stream, "readinto"):  # straight into the caller's buffer
            n = self._stream.readinto(buffer) or 0
            data = memoryview(buffer)[:n]
        else:
            data = self._stream.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        if n:
            self._hash.update(data)
            self._count += n
            if self._size is not None and self._count > self._size:
                raise IntegrityError(f"{self._what} {self._expected} is longer than its declared {self._size} bytes")
        elif not self._done:
            self._done = True
            self._finish()
        return n

    def _finish(self) -> None:
        if self._size is not None and self._count != self._size:
            raise IntegrityError(
                f"{self._what} {self._expected} is truncated: got {self._count} of {self._size} bytes",
                expected=str(self._size), got=str(self._count),
            )
        got = "sha256:" + self._hash.hexdigest()
        if got != self._expected:
            raise IntegrityError(f"{self._what} digest mismatch: expected {self._expected}, got {got}", expected=self._expected, got=got)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


def verified_reader(stream: IO[bytes], digest: str, size: int | None, what: str = "blob") -> IO[bytes]:
    return io.BufferedReader(VerifyingReader(stream, digest, size, what), buffer_size=1 << 20)
