"""A gzip writer that deflates 1 MiB blocks on several threads, as pigz does.

The bootstrap layer is compressed after the merge, when nothing else is left to run: one
zlib stream would keep one core busy while the other idles. Each block is deflated on its
own, primed with the 32 KiB of input before it (so matches reach back as in one stream:
the ratio stays zlib's) and ended with a sync flush, which byte-aligns it so that the
blocks simply concatenate; the last one ends the stream. zlib releases the GIL while it
deflates. Memory: a few blocks in flight.
"""

from __future__ import annotations

import collections
import struct
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

__all__ = ["BlockGzipWriter"]

BLOCK = 1 << 20
_WINDOW = 32 << 10  # deflate's window: what a block may refer back to
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"  # no name, mtime 0, OS unknown


def _deflate(block: bytes, primer: bytes, level: int, last: bool) -> bytes:
    if primer:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, primer)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class BlockGzipWriter:
    """Writes one gzip member to `out`; `close()` finishes it (it does not close `out`)."""

    def __init__(self, out: IO[bytes], level: int = 6, threads: int = 2) -> None:
        self._out = out
        self._level = level
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="gzip")
        self._max_pending = 2 * max(1, threads)
        self._pending: collections.deque[Future[bytes]] = collections.deque()
        self._buf = bytearray()
        self._primer = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        out.write(_GZIP_HEADER)

    def write(self, data: bytes) -> int:
        self._buf += data
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        while len(self._buf) >= BLOCK:
            block = bytes(self._buf[:BLOCK])
            del self._buf[:BLOCK]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._pending.append(self._pool.submit(_deflate, block, self._primer, self._level, last))
        self._primer = block[-_WINDOW:]
        while len(self._pending) > self._max_pending:
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(bytes(self._buf), last=True)
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BlockGzipWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # nothing more is written: the caller discards the output
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)
