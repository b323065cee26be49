"""An example plugin: storage backend `sharded-dir` (blobs at `<dir>/<id[:2]>/<id>`).

It is what a third-party backend looks like: a config dataclass, a class with the
`StorageBackend` methods, and one `nydusify_register_backends` implementation.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

from nydusify_core import hookimpl
from nydusify_core.builtin.localfs import check_blob_id
from nydusify_core.errors import IntegrityError, NotFoundError
from nydusify_core.fsutil import atomic_output
from nydusify_core.types import BackendContext, BackendSpec


@dataclass(frozen=True)
class ShardedDirConfig:
    dir: str


class ShardedDirBackend:
    type = "sharded-dir"

    def __init__(self, config: ShardedDirConfig, context: BackendContext | None = None) -> None:
        self.root = Path(config.dir)

    def _path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def size(self, blob_id: str) -> int:
        try:
            return self._path(blob_id).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found") from None

    def put(self, blob_id: str, path: Path, *, force: bool = False) -> None:
        dest = self._path(blob_id)
        if dest.is_file() and not force:
            return
        with open(path, "rb") as src, atomic_output(dest) as out:
            shutil.copyfileobj(src, out)

    def open(self, blob_id: str) -> IO[bytes]:
        try:
            return open(self._path(blob_id), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found") from None

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        with self.open(blob_id) as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise IntegrityError(f"blob {blob_id}: range {offset}+{length} beyond its end")
        return data

    def delete(self, blob_id: str) -> None:
        try:
            self._path(blob_id).unlink()
        except FileNotFoundError:
            raise NotFoundError(f"blob {blob_id} not found") from None

    def close(self) -> None:
        pass


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="sharded-dir",
        description="example: blobs in <dir>/<id[:2]>/<id>",
        config_type=ShardedDirConfig,
        create=ShardedDirBackend,
    )
