"""OCI content descriptors and platforms, with strict JSON parsing."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from nydusify_core.errors import FormatError, UsageError

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Only sha256 digests are accepted: they name files and URLs, so validate before use."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise FormatError(f"invalid digest {digest!r} (expected sha256:<64 hex>)")
    return digest


@dataclass(frozen=True)
class Platform:
    os: str = ""
    architecture: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse `os/arch[/variant]` as given to --platform."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r} (expected os/arch[/variant])")
        arch = parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if arch == "arm64" and variant == "v8":
            variant = ""
        return cls(os=parts[0], architecture=arch, variant=variant)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> "Platform | None":
        if obj is None:
            return None
        if not isinstance(obj, Mapping):
            raise FormatError("descriptor platform is not an object")
        return cls(
            os=str(obj.get("os", "")),
            architecture=str(obj.get("architecture", "")),
            variant=str(obj.get("variant", "")),
            os_version=str(obj.get("os.version", "")),
            os_features=tuple(str(f) for f in obj.get("os.features", ()) or ()),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, want: "Platform") -> bool:
        """True when this (image) platform satisfies the wanted one; arm64 variant v8 is implied."""
        variant = "" if (self.architecture == "arm64" and self.variant == "v8") else self.variant
        return (
            self.os == want.os
            and self.architecture == want.architecture
            and (not want.variant or variant == want.variant)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_json(cls, obj: Any) -> "Descriptor":
        if not isinstance(obj, Mapping):
            raise FormatError("descriptor is not a JSON object")
        try:
            media_type, digest, size = obj["mediaType"], obj["digest"], obj["size"]
        except KeyError as exc:
            raise FormatError(f"descriptor lacks {exc.args[0]!r}") from None
        if not isinstance(media_type, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"descriptor of {digest!r} has an invalid mediaType or size")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise FormatError(f"descriptor of {digest} has invalid annotations")
        return cls(
            media_type=media_type,
            digest=check_digest(digest),
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            platform=Platform.from_json(obj.get("platform")),
            urls=tuple(obj.get("urls") or ()),
            artifact_type=str(obj.get("artifactType", "")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def with_annotations(self, extra: Mapping[str, str]) -> "Descriptor":
        return replace(self, annotations={**self.annotations, **extra})

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **kwargs: Any) -> "Descriptor":
        return cls(media_type=media_type, digest=sha256_digest(data), size=len(data), **kwargs)
