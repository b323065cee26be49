"""Every option of a conversion, validated once, in one frozen record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nydusify_core.errors import UsageError
from nydusify_core.rafs import constants as C


@dataclass(frozen=True)
class ConvertOptions:
    """What `nydusify convert` is asked to do (flag names as in nydusify v2.2)."""

    source: str
    target: str
    source_type: str = ""  # "" = detect from the reference
    target_type: str = ""
    source_insecure: bool = False
    target_insecure: bool = False
    plain_http: bool = False
    backend_type: str = ""  # "" = blobs go to the target as layers
    backend_config: Mapping[str, Any] = field(default_factory=dict)
    backend_force_push: bool = False
    builder: str = "rafs"
    fs_version: int = 6
    compressor: str = "zstd"
    chunk_size: int = C.DEFAULT_CHUNK_SIZE
    aligned_chunk: bool = False
    prefetch_patterns: tuple[str, ...] = ("/",)
    oci: bool = False
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False
    merge_platform: bool = False
    work_dir: Path | str = Path("./tmp")
    workers: int = 0  # 0 = one per CPU
    layer_processes: bool | None = None  # build layers in worker processes; None = for large images
    keep_dataless: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir))  # callers of the API pass strings
        object.__setattr__(self, "platforms", tuple(self.platforms))
        object.__setattr__(self, "prefetch_patterns", tuple(self.prefetch_patterns))
        if not self.source:
            raise UsageError("--source is required")
        if not self.target:
            raise UsageError("--target (or --target-suffix) is required")
        if self.fs_version not in (5, 6):
            raise UsageError(f"--fs-version must be 5 or 6, not {self.fs_version}")
        if self.compressor not in C.BUILD_COMPRESSORS:
            raise UsageError(f"--compressor must be one of {', '.join(C.BUILD_COMPRESSORS)}")
        size = self.chunk_size
        if size & (size - 1) or not C.MIN_CHUNK_SIZE <= size <= C.MAX_BUILD_CHUNK_SIZE:
            raise UsageError(f"--fs-chunk-size {size:#x} must be a power of two from 0x1000 to 0x100000")
        for pattern in self.prefetch_patterns:
            if not pattern.startswith("/"):
                raise UsageError(f"prefetch path {pattern!r} must be absolute")
        if self.workers < 0:
            raise UsageError("--workers must not be negative")

    @property
    def external_backend(self) -> bool:
        return self.backend_type not in ("", "registry")


# a Docker/OCI tag (distribution's reference grammar)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
# transports whose references are paths, not registry references
_PATH_TRANSPORTS = ("oci:", "oci-archive:", "dir:", "docker-archive:")


def target_with_suffix(source: str, suffix: str) -> str:
    """`--target-suffix`: the tagged source reference plus `suffix` (digests are refused).

    A registry reference without a tag gets `latest` first, as the Docker CLI would read it
    (`localhost:5000/app` -> `localhost:5000/app:latest-nydus`; a port is not a tag), and
    the suffixed tag must still be a valid tag."""
    if not suffix:
        raise UsageError("--target-suffix must not be empty")
    if "@" in source:
        raise UsageError("--target-suffix cannot be used with a source pinned by digest")
    if source.startswith("oci:"):
        return source + suffix if source.count(":") >= 2 else f"{source}:latest{suffix}"
    if source.startswith(_PATH_TRANSPORTS):
        raise UsageError(f"--target-suffix needs a registry or oci: source, not {source!r}; give --target")
    name = source[len("docker://"):] if source.startswith("docker://") else source
    last = name.rsplit("/", 1)[-1]
    repo, _, tag = last.partition(":")
    tag = (tag or "latest") + suffix
    if not _TAG.fullmatch(tag):
        raise UsageError(f"--target-suffix {suffix!r} gives the invalid tag {tag!r}")
    return f"{name[: len(name) - len(last)]}{repo}:{tag}"
