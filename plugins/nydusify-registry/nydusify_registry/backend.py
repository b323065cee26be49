"""Storage backend `registry`: Nydus data blobs as blobs of the target repository.

Nothing else is needed at runtime: nydusd fetches blobs by digest from that repository,
and the blobs being layers of the pushed manifest protects them from registry GC.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from nydusify_core.builtin.localfs import check_blob_id
from nydusify_core.errors import NotFoundError, UsageError
from nydusify_core.types import BackendContext

from nydusify_registry.client import RetryPolicy
from nydusify_registry.config import RegistryBackendConfig
from nydusify_registry.connect import connect
from nydusify_registry.reference import parse_reference

__all__ = ["RegistryBackend", "RegistryBackendConfig"]


class RegistryBackend:
    type = "registry"

    def __init__(self, config: RegistryBackendConfig | None = None, context: BackendContext | None = None) -> None:
        config = config or RegistryBackendConfig()
        context = context or BackendContext()
        if not context.target_ref:
            raise UsageError("the registry backend stores blobs in the target repository, but no target reference was given")
        if config.retries < 1 or config.chunk_size < 0:
            raise UsageError("registry backend config: 'retries' must be at least 1 and 'chunk_size' not negative")
        self.reference = parse_reference(context.target_ref)
        extra = {"ca_file": config.ca_file, "chunk_size": config.chunk_size, "retry": RetryPolicy(attempts=config.retries)}
        self.client = connect(
            self.reference.registry,
            insecure=config.insecure or context.insecure,
            plain_http=config.plain_http,
            extra=extra,
            plugins=context.plugins,
        )

    @property
    def repository(self) -> str:
        return self.reference.path

    @staticmethod
    def _digest(blob_id: str) -> str:
        return "sha256:" + check_blob_id(blob_id)

    def exists(self, blob_id: str) -> bool:
        return self.client.has_blob(self.repository, self._digest(blob_id))

    def size(self, blob_id: str) -> int:
        size = self.client.blob_size(self.repository, self._digest(blob_id))
        if size is None:
            raise NotFoundError(f"blob {blob_id} not found in {self.reference.name}")
        return size

    def put(self, blob_id: str, path: Path, *, force: bool = False) -> None:
        digest = self._digest(blob_id)
        path = Path(path)
        size = path.stat().st_size  # a missing file fails here, before anything is sent
        if not force and self.client.has_blob(self.repository, digest):
            return
        self.client.push_blob(self.repository, digest, size, path)

    def open(self, blob_id: str) -> IO[bytes]:
        return self.client.open_blob(self.repository, self._digest(blob_id))

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        return self.client.read_blob_range(self.repository, self._digest(blob_id), offset, length)

    def delete(self, blob_id: str) -> None:
        self.client.delete_blob(self.repository, self._digest(blob_id))

    def close(self) -> None:
        self.client.close()
