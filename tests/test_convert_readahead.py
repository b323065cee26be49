"""`ReadAhead` hands on exactly the bytes of its source, errors where they happen, and
stops its thread when closed early."""

from __future__ import annotations

import io
import os
import threading

import pytest

from nydusify_core.conversion.readahead import ReadAhead

DATA = os.urandom(3_000_000)


class Failing(io.RawIOBase):
    """A source that fails after `good` bytes."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if not self.left:
            raise OSError("disk on fire")
        n = min(len(b), self.left)
        b[:n] = DATA[:n]
        self.left -= n
        return n


@pytest.mark.parametrize("block,read", [(1 << 20, 1 << 20), (4096, 100_000), (1 << 20, 511)])
def test_bytes_pass_through_unchanged(block: int, read: int) -> None:
    ahead = ReadAhead(io.BytesIO(DATA), block=block, depth=2)
    out = []
    while piece := ahead.read(read):
        out.append(piece)
    assert b"".join(out) == DATA
    assert ahead.read(10) == b""
    ahead.close()


def test_an_error_of_the_source_is_raised_after_the_good_bytes() -> None:
    ahead = io.BufferedReader(ReadAhead(io.BufferedReader(Failing(5000)), block=1000), 1000)
    assert ahead.read(5000) == DATA[:5000]
    with pytest.raises(OSError, match="disk on fire"):
        ahead.read(1)
    with pytest.raises(OSError, match="disk on fire"):
        ahead.read(1)  # and again: the stream stays failed


def test_closing_early_stops_the_thread() -> None:
    ahead = ReadAhead(io.BytesIO(DATA), block=1000, depth=1)
    assert ahead.read(10) == DATA[:10]
    ahead.close()
    assert not any(t.name == "readahead" and t.is_alive() for t in threading.enumerate())
