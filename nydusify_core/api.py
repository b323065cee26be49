"""The public package API: `convert`, `pack` and `check`, each taking one options record.

The counterpart of Go nydusify's `converter.Convert(ctx, opt)` (nydus-image-spec.md §2.13)
for Python callers. Everything here is importable from `nydusify_core` directly::

    from nydusify_core import ConvertOptions, convert
    result = convert(ConvertOptions(source="oci:./image:latest", target="oci:./nydus:latest"))

Each function takes an optional plugin manager (`nydusify_core.plugins.create_plugin_manager`)
so a caller can block plugins or register its own; by default every installed plugin loads,
as for the CLI. Failures raise `nydusify_core.errors.NydusifyError` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nydusify_core.conversion import ConvertOptions, ConvertResult
from nydusify_core.conversion import convert as _convert
from nydusify_core.rafs import constants as C

if TYPE_CHECKING:
    from nydusify_core.checker import CheckOptions, CheckReport
    from nydusify_core.plugins import NydusifyPlugins
    from nydusify_core.rafs.builder import BuildResult

__all__ = [
    "CheckOptions", "CheckReport", "ConvertOptions", "ConvertResult", "PackOptions", "PackResult",
    "check", "convert", "pack",
]


def convert(options: ConvertOptions, plugins: "NydusifyPlugins | None" = None) -> ConvertResult:
    """Convert the OCI/Docker image `options.source` into a Nydus image at `options.target`.

    Stage hooks of every loaded plugin run as in `nydusify convert`; one raising aborts the
    conversion before anything later is pushed (`HookError` names the plugin).
    """
    return _convert(options, plugins)


def check(options: "CheckOptions", plugins: "NydusifyPlugins | None" = None) -> "CheckReport":
    """Check the Nydus image `options.target` (against `options.source` when given).

    Problems with the images are in the report (`report.ok`, `report.rules`,
    `report.to_json()`); an exception means the check could not run.
    """
    from nydusify_core.checker import check as _check

    return _check(options, plugins)


def __getattr__(name: str) -> Any:
    """`CheckOptions` / `CheckReport` come from `nydusify_core.checker`, imported on first use."""
    if name in ("CheckOptions", "CheckReport"):
        import nydusify_core.checker as checking

        return getattr(checking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class PackOptions:
    """What `nydusify pack` is asked to do: a local directory into a bootstrap and a blob.

    With `backend_type` set (`oss`, `s3`, `localfs`...), the blob(s) are pushed under
    `blob_prefix + id` and the bootstrap under `meta_prefix + name`, as `--backend-push`.
    """

    source_dir: Path | str
    name: str  # bootstrap file name; its stem names the blob
    output_dir: Path | str = Path(".nydus-build-output")
    fs_version: int = 6
    compressor: str = "zstd"
    digester: str = "blake3"
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    aligned_chunk: bool = False
    prefetch_patterns: tuple[str, ...] = ()
    repeatable: bool = False
    parent_bootstrap: Path | str | None = None
    chunk_dict: Path | str | None = None  # a bootstrap whose chunks are reused
    backend_type: str = ""  # "" = build locally only
    backend_config: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    backend_force_push: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_dir", Path(self.source_dir))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "prefetch_patterns", tuple(self.prefetch_patterns))


@dataclass
class PackResult:
    """Where `pack` wrote (and pushed) the bootstrap and blob."""

    bootstrap: Path
    blob: Path | None  # None when the directory holds no file data
    blob_id: str | None
    blob_size: int
    fs_version: int
    files: int
    nodes: int
    chunks: int
    backend: dict[str, Any] | None = None  # object URLs when pushed
    seconds: float = 0.0
    build: "BuildResult | None" = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The same object as `nydusify pack --json`."""
        from nydusify_core.commands.pack import PackPaths, result_json

        assert self.build is not None
        info = result_json(self.build, PackPaths(self.bootstrap, self.blob or self.bootstrap), self.seconds)
        if self.backend is not None:
            info["backend"] = self.backend
        return info


def pack(options: PackOptions, plugins: "NydusifyPlugins | None" = None) -> PackResult:
    """Pack `options.source_dir` into a RAFS bootstrap and data blob in `options.output_dir`,
    and push them to `options.backend_type` when one is given (nydus-image-spec.md §4)."""
    from nydusify_core.commands.backend import CliBackend
    from nydusify_core.commands.pack import build_and_push, existing_bootstrap
    from nydusify_core.errors import UsageError
    from nydusify_core.plugins import create_plugin_manager, parse_backend_config
    from nydusify_core.rafs.builder import BuildOptions
    from nydusify_core.types import BackendContext

    build_options = BuildOptions(
        fs_version=options.fs_version, compressor=options.compressor, digester=options.digester,
        chunk_size=options.chunk_size, aligned_chunk=options.aligned_chunk, repeatable=options.repeatable,
        prefetch=options.prefetch_patterns,
        parent_bootstrap=existing_bootstrap(_path(options.parent_bootstrap), "parent_bootstrap"),
        chunk_dict=existing_bootstrap(_path(options.chunk_dict), "chunk_dict bootstrap"),
    )
    backend = None
    if options.backend_type:  # configured and opened before building, as the CLI does
        if not options.backend_config:
            raise UsageError(f"pack to backend {options.backend_type!r} needs backend_config")
        plugins = plugins or create_plugin_manager()
        spec = plugins.backend(options.backend_type)
        config = parse_backend_config(spec, options.backend_config)
        backend = CliBackend(options.backend_type, config, spec.create(config, BackendContext(plugins=plugins)))
        backend.store("pack to a backend")
    try:
        packed = build_and_push(Path(options.source_dir), Path(options.output_dir), options.name, build_options, backend,
                                force_push=options.backend_force_push)
    finally:
        if backend is not None:
            backend.close()
    built = packed.build
    return PackResult(
        bootstrap=packed.paths.bootstrap, blob=built.blob_path, blob_id=built.blob_id, blob_size=built.blob_size,
        fs_version=built.bootstrap.version, files=built.files, nodes=built.nodes, chunks=built.chunk_count,
        backend=packed.pushed, seconds=packed.seconds, build=built,
    )


def _path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
