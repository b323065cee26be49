"""Source and target `oci-layout`: an OCI image layout directory (`oci:PATH[:TAG]`)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Iterable

from nydusify_core.hookspecs import hookimpl
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.layout import PREFIX, OciLayout, parse_ref
from nydusify_core.types import EndpointOptions, SourceSpec, TargetSpec


class OciLayoutSource:
    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        self.ref = ref
        parsed = parse_ref(ref)
        self.layout = OciLayout(parsed.path)
        self.tag = parsed.tag

    def resolve(self) -> Descriptor:
        return self.layout.resolve(self.tag)

    def fetch(self, desc: Descriptor) -> bytes:
        return self.layout.read_blob(desc)

    def open_blob(self, desc: Descriptor) -> IO[bytes]:
        return self.layout.open_blob(desc)

    def close(self) -> None:
        pass


class OciLayoutTarget:
    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        self.ref = ref
        parsed = parse_ref(ref)
        self.layout = OciLayout(parsed.path)
        self.tag = parsed.tag or "latest"
        self.layout.init()

    def has_blob(self, desc: Descriptor) -> bool:
        return self.layout.has_blob(desc.digest)

    def push_blob(self, desc: Descriptor, stream: IO[bytes]) -> None:
        self.layout.write_blob(desc, stream)

    def push_path(self, desc: Descriptor, path: Path) -> None:
        with open(path, "rb") as f:
            self.layout.write_blob(desc, f)

    def adopt_path(self, desc: Descriptor, path: Path) -> None:
        """`push_path` of a file whose digest the caller computed itself: hard-linked, not re-hashed."""
        self.layout.adopt_blob(desc, path)

    def push_manifest(self, desc: Descriptor, data: bytes, *, tag: str | None = None) -> None:
        self.layout.write_blob_bytes(desc, data)
        if tag is not None:
            self.layout.set_ref(desc, tag)

    def close(self) -> None:
        pass


def _accepts(ref: str) -> bool:
    return ref.startswith(PREFIX)


@hookimpl
def nydusify_register_sources() -> Iterable[SourceSpec]:
    yield SourceSpec(name="oci-layout", description="an OCI image layout directory (oci:PATH[:TAG])", accepts=_accepts, open=OciLayoutSource)


@hookimpl
def nydusify_register_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="oci-layout", description="an OCI image layout directory (oci:PATH[:TAG])", accepts=_accepts, open=OciLayoutTarget)
