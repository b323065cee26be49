"""A stream read ahead by a background thread.

Inflating a layer (zlib/zstd), hashing it (sha256) and checking the source digest all
release the GIL, so running them in their own thread lets them overlap the builder's tar
parsing and blob writing instead of adding to it. Memory stays bounded: at most `depth`
blocks are read ahead.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import IO

__all__ = ["ReadAhead"]

_POLL = 0.1  # seconds between checks of the stop flag while the queue is full


class ReadAhead(io.RawIOBase):
    """Reads `src` in `block`-byte reads on a thread, up to `depth` blocks ahead.

    An exception raised by `src` is raised again by the next read here, at the point in
    the stream where it happened. `close()` stops the thread (it does not close `src`).
    """

    def __init__(self, src: IO[bytes], *, block: int = 1 << 20, depth: int = 4, name: str = "readahead") -> None:
        self._src = src
        self._block = block
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._error: BaseException | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._src.read(self._block)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._error is not None:
            raise self._error
        if not self._current:
            if self._eof:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._error = item
                raise item
            if not item:
                self._eof = True
                return 0
            self._current = memoryview(item)
        n = min(len(b), len(self._current))
        b[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join()
            self._current = memoryview(b"")
            super().close()
