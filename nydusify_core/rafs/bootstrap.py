"""One entry point for bootstraps of either RAFS version.

nydusd decides the version by trying the v5 magic at offset 0 first, then the EROFS magic
at 1024 (rafs-format.md §3.1); we do the same so that callers never need to know.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.model import Bootstrap

__all__ = ["detect_version", "read_bootstrap", "write_bootstrap"]


def detect_version(data: bytes | bytearray | memoryview) -> int:
    """5 or 6, from the magic numbers; `FormatError` if neither is present."""
    if len(data) >= 4 and struct.unpack_from("<I", data, 0)[0] == C.V5_MAGIC:
        return 5
    if len(data) >= C.EROFS_SUPER_OFFSET + 4 and struct.unpack_from("<I", data, C.EROFS_SUPER_OFFSET)[0] == C.EROFS_SUPER_MAGIC:
        return 6
    raise FormatError("not a RAFS bootstrap: neither the v5 nor the EROFS magic is present")


def read_bootstrap(data: bytes | bytearray | memoryview) -> Bootstrap:
    """Parse a v5 or v6 bootstrap into model records."""
    if detect_version(data) == 5:
        from nydusify_core.rafs.v5 import read_v5

        return read_v5(data)
    from nydusify_core.rafs.v6 import read_v6  # imported lazily: written separately

    return read_v6(data)


def _v6_writer() -> Callable[..., bytes]:
    try:
        from nydusify_core.rafs.v6 import write_v6  # type: ignore[attr-defined]
    except ImportError:
        from nydusify_core.rafs.v6_writer import write_v6
    return write_v6


def write_bootstrap(bs: Bootstrap, **options: Any) -> bytes:
    """Serialize `bs` in the layout of `bs.version`; `options` go to `write_v5`/`write_v6`."""
    if bs.version == 5:
        from nydusify_core.rafs.v5 import write_v5

        return write_v5(bs, **options)
    if bs.version == 6:
        return _v6_writer()(bs, **options)
    raise FormatError(f"unsupported RAFS version {bs.version}")
