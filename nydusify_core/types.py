"""Frozen records passed between the core and plugins."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from nydusify_core.errors import PluginError

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(f"invalid {kind} name {name!r}: use lowercase kebab-case, e.g. 'oci-layout'")


@dataclass(frozen=True)
class ComponentSpec:
    """Base of every registration record: a unique lowercase name and a one-line description."""

    name: str
    description: str

    kind = "component"

    def __post_init__(self) -> None:
        _check_name(self.kind, self.name)


@dataclass(frozen=True)
class SourceSpec(ComponentSpec):
    """A source fetcher. `accepts(ref)` auto-detects; `open(ref, options)` returns a `Source`.

    A `catch_all` spec (the registry: any docker reference) is chosen only when no other
    spec accepts the reference, so prefixed schemes like `oci:` always win.
    """

    accepts: Callable[[str], bool] = field(default=lambda ref: False, repr=False)
    open: Callable[[str, "EndpointOptions"], Any] = field(default=None, repr=False)  # type: ignore[assignment]
    catch_all: bool = False

    kind = "source"


@dataclass(frozen=True)
class TargetSpec(ComponentSpec):
    """A target. `accepts(ref)` auto-detects; `open(ref, options)` returns a `Target`.
    `catch_all` as for `SourceSpec`."""

    accepts: Callable[[str], bool] = field(default=lambda ref: False, repr=False)
    open: Callable[[str, "EndpointOptions"], Any] = field(default=None, repr=False)  # type: ignore[assignment]
    catch_all: bool = False

    kind = "target"


@dataclass(frozen=True)
class BuilderSpec(ComponentSpec):
    """A layer builder. `create(options)` returns a `LayerBuilder`."""

    create: Callable[[Any], Any] = field(default=None, repr=False)  # type: ignore[assignment]

    kind = "builder"


@dataclass(frozen=True)
class BackendSpec(ComponentSpec):
    """A storage backend.

    `config_type` is a dataclass; the JSON given by --backend-config[-file] is parsed into it
    (unknown keys rejected) and passed to `create(config, context)`.
    """

    config_type: type = field(default=dict, repr=False)
    create: Callable[[Any, "BackendContext"], Any] = field(default=None, repr=False)  # type: ignore[assignment]

    kind = "backend"


@dataclass(frozen=True)
class Credentials:
    """A username/password or token. `repr` never shows the secret."""

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class EndpointOptions:
    """How to reach a source or target: TLS, platform selection, credentials lookup."""

    insecure: bool = False
    plain_http: bool = False
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False
    work_dir: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendContext:
    """What a backend may need besides its config: the target reference (registry backend)."""

    target_ref: str = ""
    insecure: bool = False
    work_dir: Path | None = None
    plugins: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LayerInfo:
    """A source layer about to be converted."""

    index: int
    digest: str
    media_type: str
    size: int
    platform: str = ""


# BuiltLayer.extra key: True when the builder hashed blob_path itself while writing it, so a
# local target may adopt the file (hard link) without re-reading it.
BLOB_DIGEST_COMPUTED = "blob_digest_computed"


@dataclass(frozen=True)
class BuiltLayer:
    """Output of building one layer: a data blob (maybe none) and a bootstrap."""

    bootstrap_path: Path  # this layer's own bootstrap, input of the merge
    blob_path: Path  # the packaged Nydus blob layer, as pushed
    blob_id: str  # hex sha256 of blob_path: the layer digest and the merged blob id
    blob_size: int
    has_data: bool = True  # False when the layer holds no file data (empty blob table)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + self.blob_id


@dataclass(frozen=True)
class BlobRef:
    """A blob as the hook payload names it: id (hex) and size."""

    id: str
    size: int


@dataclass(frozen=True)
class PushInfo:
    """Payload of the manifest-push hooks; the fields of Go nydusify's hook `Info`."""

    bootstrap_path: str
    source_ref: str
    target_ref: str
    blobs: tuple[BlobRef, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "bootstrap_path": self.bootstrap_path,
            "source_ref": self.source_ref,
            "target_ref": self.target_ref,
            "blobs": [{"id": b.id, "size": b.size} for b in self.blobs],
        }


@dataclass(frozen=True)
class ConvertContext:
    """Read-only view of one conversion, handed to every stage hook."""

    source_ref: str
    target_ref: str
    work_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    platform: str = ""
    source_type: str = ""
    target_type: str = ""
    backend_type: str = ""


@dataclass(frozen=True)
class PluginInfo:
    """One row of `nydusify plugins`."""

    name: str
    version: str
    status: str  # "builtin", "loaded", "failed", "blocked"
    hooks: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    distribution: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "hooks": list(self.hooks),
            "provides": list(self.provides),
        }
        if self.error:
            out["error"] = self.error
        return out
