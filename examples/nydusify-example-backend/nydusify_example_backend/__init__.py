"""An example plugin: storage backend `sharded-dir` (blobs at `<dir>/<id[:2]>/<id>`).

It is what a third-party backend looks like: a config dataclass, a class with the
`StorageBackend` methods (here inherited from the built-in `localfs`, changing only where a
blob lives), and one `nydusify_register_backends` implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nydusify_core import hookimpl
from nydusify_core.builtin.localfs import LocalfsBackend, LocalfsConfig, check_blob_id
from nydusify_core.types import BackendContext, BackendSpec


@dataclass(frozen=True)
class ShardedDirConfig:
    dir: str


class ShardedDirBackend(LocalfsBackend):
    type = "sharded-dir"

    def __init__(self, config: ShardedDirConfig, context: BackendContext | None = None) -> None:
        super().__init__(LocalfsConfig(dir=config.dir), context)

    def _path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="sharded-dir",
        description="example: blobs in <dir>/<id[:2]>/<id>",
        config_type=ShardedDirConfig,
        create=ShardedDirBackend,
    )
