"""Request and response bodies: uploads that can be re-sent from the start on every
attempt, and bounded reads of urllib3 responses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any, Callable, Union

from nydusify_core.errors import IntegrityError

STREAM_BLOCK = 1 << 20

Body = Union[bytes, Path, Callable[[], IO[bytes]]]
"""Bytes, a file path, or a callable returning a fresh stream positioned at 0."""


def read_upto(raw: Any, count: int, *, decode: bool = False) -> bytes:
    """Up to `count` bytes, stopping early only at the end of the body (urllib3 returns
    short reads; a dropped connection raises on the next read)."""
    parts: list[bytes] = []
    left = count
    while left > 0:
        block = raw.read(min(left, STREAM_BLOCK), decode_content=decode)
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def discard(raw: Any, count: int) -> None:
    left = count
    while left > 0:
        block = raw.read(min(left, STREAM_BLOCK), decode_content=False)
        if not block:
            raise IntegrityError(f"blob ended before offset {count}")
        left -= len(block)


class SizedReader:
    """A file-like body with a known length, so requests sends `Content-Length` and
    streams it instead of loading it."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream, self._size, self._left = stream, size, size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read(n)
        self._left -= len(data)
        return data

    def __iter__(self) -> Any:
        return iter(lambda: self.read(STREAM_BLOCK), b"")

    def close(self) -> None:
        self._stream.close()


def sized(body: Body, size: int) -> Callable[[], Any]:
    if size == 0:
        return lambda: b""  # an empty reader would be sent chunked
    if isinstance(body, bytes):
        if len(body) != size:
            raise IntegrityError(f"blob body has {len(body)} bytes, expected {size}")
        return lambda: body
    return lambda: SizedReader(open_at(body, 0), size)


def open_at(body: Body, offset: int) -> IO[bytes]:
    if isinstance(body, bytes):
        stream: IO[bytes] = io.BytesIO(body)
    elif isinstance(body, Path):
        stream = open(body, "rb")
    else:
        stream = body()
    if offset:
        stream.seek(offset)
    return stream


def open_body(body: Body | Callable[[], Any] | None) -> Any:
    """A fresh request body for one attempt."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, Path):
        return open(body, "rb")
    return body()

