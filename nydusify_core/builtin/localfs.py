"""Storage backend `localfs`: blobs as files `<dir>/<blob id>` (upstream's `{"dir": ...}`)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

from nydusify_core.errors import IntegrityError, NotFoundError, UsageError
from nydusify_core.fsutil import atomic_output
from nydusify_core.hookspecs import hookimpl
from nydusify_core.types import BackendContext, BackendSpec

_BLOB_ID = re.compile(r"^[0-9a-f]{64}$")


def check_blob_id(blob_id: str) -> str:
    """Blob ids become file names and object keys: only 64 lowercase hex digits pass."""
    if not isinstance(blob_id, str) or not _BLOB_ID.match(blob_id):
        raise UsageError(f"invalid blob id {blob_id!r} (expected 64 lowercase hex digits)")
    return blob_id


@dataclass(frozen=True)
class LocalfsConfig:
    dir: str


class LocalfsBackend:
    type = "localfs"

    def __init__(self, config: LocalfsConfig, context: BackendContext | None = None) -> None:
        if not config.dir:
            raise UsageError("localfs backend config: 'dir' must not be empty")
        self.root = Path(config.dir)

    def _path(self, blob_id: str) -> Path:
        return self.root / check_blob_id(blob_id)

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def size(self, blob_id: str) -> int:
        try:
            return self._path(blob_id).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found in {self.root}") from None

    def put(self, blob_id: str, path: Path, *, force: bool = False) -> None:
        dest = self._path(blob_id)
        if not force and dest.is_file():
            return
        with open(path, "rb") as src, atomic_output(dest) as out:
            shutil.copyfileobj(src, out, 1 << 20)

    def open(self, blob_id: str) -> IO[bytes]:
        try:
            return open(self._path(blob_id), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found in {self.root}") from None

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range {offset}+{length}")
        with self.open(blob_id) as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise IntegrityError(f"blob {blob_id}: range {offset}+{length} is beyond its end")
        return data

    def delete(self, blob_id: str) -> None:
        try:
            self._path(blob_id).unlink()
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found in {self.root}") from None

    def close(self) -> None:
        pass


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="localfs",
        description="blobs as files in a local directory (config: {\"dir\": PATH})",
        config_type=LocalfsConfig,
        create=LocalfsBackend,
    )
