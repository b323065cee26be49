"""What a plugin's components must provide: sources, targets, layer builders, storage backends.

These are structural (`typing.Protocol`) so plugins need not inherit from anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from nydusify_core.oci.descriptor import Descriptor
    from nydusify_core.rafs.builder import BuildOptions
    from nydusify_core.types import BuiltLayer


@runtime_checkable
class Source(Protocol):
    """A readable image: an index or manifest plus the blobs it names."""

    ref: str

    def resolve(self) -> "Descriptor":
        """Descriptor of the image's root: an index or a manifest."""

    def fetch(self, desc: "Descriptor") -> bytes:
        """Small content (manifest, index, config), digest-verified."""

    def open_blob(self, desc: "Descriptor") -> IO[bytes]:
        """A stream of a (layer) blob; the caller verifies its digest while reading."""

    def close(self) -> None: ...


@runtime_checkable
class Target(Protocol):
    """Where converted images are written: blobs first, then manifests, then the tag."""

    ref: str
    tag: str | None  # the tag the final manifest or index is pushed under

    def has_blob(self, desc: "Descriptor") -> bool: ...

    def push_blob(self, desc: "Descriptor", stream: IO[bytes]) -> None:
        """Store a blob whose digest and size `desc` promises; must verify both."""

    def push_path(self, desc: "Descriptor", path: Path) -> None:
        """`push_blob` of a local file (can be re-read on retries)."""

    def push_manifest(self, desc: "Descriptor", data: bytes, *, tag: str | None = None) -> None:
        """Store a manifest or index; with `tag`, make the reference point at it."""

    def close(self) -> None: ...


@runtime_checkable
class StorageBackend(Protocol):
    """Where Nydus data blobs live (registry, object storage, local directory).

    Blob ids are 64 lowercase hex digits. Writes are all-or-nothing: a blob is either
    absent or complete, so `exists` never reports a half-written object.
    """

    type: str

    def exists(self, blob_id: str) -> bool: ...

    def size(self, blob_id: str) -> int:
        """Raise `NotFoundError` when absent."""

    def put(self, blob_id: str, path: Path, *, force: bool = False) -> None:
        """Upload the file at `path`; skip when present unless `force`."""

    def open(self, blob_id: str) -> IO[bytes]:
        """A stream of the whole blob."""

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`, or `IntegrityError` when short."""

    def delete(self, blob_id: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    """Optional extension of `StorageBackend` for objects named by key, not blob id.

    `pack --backend-push` stores a bootstrap under `meta_prefix + name` and blobs under
    `blob_prefix + blob id`; `unpack`/`inspect --bootstrap-key` read a bootstrap back by
    key. Object-storage backends (oss, s3) implement it; for the others those options
    fail with a clear error (see `require_object_store`). Backend configs that support
    pack carry `meta_prefix` and `blob_prefix` fields.
    """

    def object_exists(self, key: str) -> bool: ...

    def put_object(self, key: str, path: Path) -> str:
        """Upload the file at `path` to `key` (overwriting), all or nothing; return its URL."""

    def open_object(self, key: str) -> IO[bytes]:
        """A stream of the whole object; `NotFoundError` when absent."""

    def object_url(self, key: str) -> str:
        """How logs and `--json` name the object, e.g. `oss://bucket/key` (never secrets)."""

    def with_object_prefix(self, prefix: str) -> "ObjectStore":
        """The same client, with blob ids mapped to `prefix + blob id`."""


OBJECT_STORE_METHODS = ("object_exists", "put_object", "open_object", "object_url", "with_object_prefix")


def require_object_store(backend: object, what: str) -> ObjectStore:
    """`backend` as an `ObjectStore`, or a `UsageError` saying which feature needs it."""
    from nydusify_core.errors import UsageError

    missing = [m for m in OBJECT_STORE_METHODS if not callable(getattr(backend, m, None))]
    if missing:
        kind = getattr(backend, "type", type(backend).__name__)
        raise UsageError(f"backend {kind!r} cannot store objects by key ({', '.join(missing)} missing), which {what} needs; use oss or s3")
    return backend  # type: ignore[return-value]


@runtime_checkable
class LayerBuilder(Protocol):
    """Turns one layer's uncompressed tar stream into a packaged Nydus blob layer plus its
    own bootstrap, and merges per-layer bootstraps into an image's bootstrap.

    Layers are built independently (possibly in parallel threads), so a builder must not
    share mutable state between `build_layer` calls.
    """

    name: str

    def build_layer(self, tar_stream: IO[bytes], work_dir: Path, options: "BuildOptions", *, label: str = "") -> "BuiltLayer":
        """Build one layer into files under `work_dir`; `label` names the layer in errors."""

    def merge(self, layers: Sequence["BuiltLayer"], output: Path, options: "BuildOptions") -> list[str]:
        """Overlay the layers' bootstraps (lowest first, OCI whiteouts) into `output`; the
        merged blob table names each blob by its layer's `blob_id`. Returns the table's ids."""


def iter_file(stream: IO[bytes], bufsize: int = 1 << 20) -> Iterator[bytes]:
    while True:
        block = stream.read(bufsize)
        if not block:
            return
        yield block
