"""Expand a blob into nydusd's cache layout: every chunk decompressed at its uncompressed offset.

EROFS reads chunk data at `blkaddr * 4096` of a device (rafs-format.md §3.12, §9), so a
RAFS v6 image can be kernel-mounted (or checked by fsck.erofs) only over this layout,
never over the stored (packed, compressed) blob.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from nydusify_core.errors import FormatError
from nydusify_core.rafs.blob import BlobReader
from nydusify_core.rafs.model import BlobInfo, ChunkInfo

__all__ = ["expand_blob"]


def expand_blob(
    blob_path: str | Path,
    out_path: str | Path,
    blob: BlobInfo | None = None,
    chunks: Iterable[ChunkInfo] | None = None,
    *,
    verify: bool = True,
) -> int:
    """Write the cache-layout file of `blob_path` to `out_path` (atomically); returns its size.

    Chunk locations come from `chunks` (records of this blob, e.g. from a v5 bootstrap)
    or else from the blob's own CI table. The file is sparse where no chunk lands and is
    exactly `blob.uncompressed_size` long when `blob` is given.
    """
    out = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        end = 0
        with open(blob_path, "rb") as f, os.fdopen(fd, "wb") as dst:
            reader = BlobReader(f, blob)
            seen: set[int] = set()
            if chunks is not None:
                for c in chunks:
                    uoff = c.uncompressed_offset
                    if uoff in seen:
                        continue
                    seen.add(uoff)
                    data = reader.read_chunk(c, verify=verify)
                    os.pwrite(dst.fileno(), data, uoff)
                    end = max(end, uoff + len(data))
            else:
                for _, e, data in reader.iter_chunks():
                    os.pwrite(dst.fileno(), data, e.uncompressed_offset)
                    end = max(end, e.uncompressed_offset + len(data))
            size = blob.uncompressed_size if blob is not None and blob.uncompressed_size else end
            if size < end:
                raise FormatError(f"chunks end at {end}, beyond the blob's uncompressed size {size}")
            dst.truncate(size)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        return size
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
