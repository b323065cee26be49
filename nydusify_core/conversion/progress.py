"""Conversion feedback: a status line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, total_layers: int, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total_layers
        self.done = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._last_draw = 0.0

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            now = time.monotonic()
            if self.tty and now - self._last_draw > 0.2:
                self._last_draw = now
                self._draw()

    def layer_done(self, label: str, blob_id: str, size: int) -> None:
        with self._lock:
            self.done += 1
            if self.tty:
                self._draw()
            else:
                log.info("layer %d/%d converted: %s -> blob %s (%d bytes)", self.done, self.total, label, blob_id[:12], size)

    def _draw(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.bytes / elapsed / 1e6
        self.stream.write(f"\rlayers {self.done}/{self.total}  read {self.bytes / 1e6:,.1f} MB  {rate:,.1f} MB/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
