"""Chunk digesters (rafs-format.md §2.2, §5.2): blake3 (nydus default) and sha256.

Both C implementations release the GIL on large inputs, so chunk hashing scales across
threads. Packaging digests (TOC entries, blob ids) are always sha256.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import blake3

from nydusify_core.errors import FormatError
from nydusify_core.rafs import constants as C

__all__ = ["DIGESTERS", "check_digester", "digest", "hasher", "sha256", "sha256_hex"]

DIGESTERS = tuple(C.DIGESTER_IDS)

_FACTORIES: dict[str, Callable[[], Any]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}


def check_digester(name: str) -> str:
    """Return `name` if supported, else raise FormatError."""
    if name not in _FACTORIES:
        raise FormatError(f"unsupported digester {name!r} (expected one of {', '.join(DIGESTERS)})")
    return name


def hasher(algorithm: str) -> Any:
    """A fresh incremental hasher (`update`, `digest`, `hexdigest`)."""
    return _FACTORIES[check_digester(algorithm)]()


def digest(algorithm: str, data: bytes | bytearray | memoryview) -> bytes:
    """32-byte digest of `data`."""
    h = _FACTORIES[check_digester(algorithm)]()
    h.update(data)
    return h.digest()


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
