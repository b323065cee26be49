"""What object-storage backends (OSS, S3, ...) share: blobs as objects `object_prefix + id`.

A backend subclasses `KeyedObjectBackend` and provides the per-key operations
(`object_exists`, `put_object`, `open_object`, `object_url`, `_delete_object`); the blob
verbs of the `StorageBackend` protocol and pack's key helpers follow from them.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import IO, Any, TypeVar

from nydusify_core.builtin.localfs import check_blob_id
from nydusify_core.errors import NotFoundError

log = logging.getLogger(__name__)
B = TypeVar("B", bound="KeyedObjectBackend")


class KeyedObjectBackend:
    object_prefix: str
    config: Any  # has `meta_prefix`

    # --- provided by the backend ----------------------------------------------------

    def object_exists(self, key: str) -> bool:
        raise NotImplementedError

    def put_object(self, key: str, path: Path | str) -> str:
        raise NotImplementedError

    def open_object(self, key: str) -> IO[bytes]:
        raise NotImplementedError

    def object_url(self, key: str) -> str:
        raise NotImplementedError

    def _delete_object(self, key: str) -> None:
        raise NotImplementedError

    # --- keys and URLs --------------------------------------------------------------

    def key_for(self, blob_id: str) -> str:
        """The object key of a blob: `object_prefix + blob id`."""
        return self.object_prefix + check_blob_id(blob_id)

    def meta_key(self, name: str) -> str:
        """The object key of a bootstrap pushed by `pack`: `meta_prefix + name`."""
        return self.config.meta_prefix + name

    def blob_url(self, blob_id: str) -> str:
        return self.object_url(self.key_for(blob_id))

    def with_object_prefix(self: B, prefix: str) -> B:
        """The same client with another blob key prefix (pack derives a `blob_prefix` one)."""
        clone = copy.copy(self)
        clone.object_prefix = prefix
        return clone

    # --- StorageBackend verbs -------------------------------------------------------

    def exists(self, blob_id: str) -> bool:
        return self.object_exists(self.key_for(blob_id))

    def put(self, blob_id: str, path: Path, *, force: bool = False) -> None:
        key = self.key_for(blob_id)
        if not force and self.object_exists(key):
            log.debug("blob %s already at %s, not uploading", blob_id, self.object_url(key))
            return
        self.put_object(key, path)

    def open(self, blob_id: str) -> IO[bytes]:
        return self.open_object(self.key_for(blob_id))

    def delete(self, blob_id: str) -> None:
        key = self.key_for(blob_id)
        if not self.object_exists(key):
            raise NotFoundError(f"blob {blob_id} not found at {self.object_url(key)}")
        self._delete_object(key)
