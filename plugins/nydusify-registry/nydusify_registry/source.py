"""Source `registry`: an image in a registry repository, by tag or digest."""

from __future__ import annotations

from typing import IO

from nydusify_core.errors import IntegrityError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.types import EndpointOptions

from nydusify_registry.connect import connect
from nydusify_registry.reference import Reference, parse_reference

MANIFEST_LIKE = frozenset(mt.INDEX_TYPES | mt.MANIFEST_TYPES | mt.SCHEMA1_TYPES | {mt.NYDUS_MANIFEST_ARTIFACT})


class RegistrySource:
    """Reads an image from a registry: `resolve` the tag or digest, then `fetch` the
    manifests and configs (verified in memory) and `open_blob` the layers (streamed,
    verified at EOF, resumed after dropped connections)."""

    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        options = options or EndpointOptions()
        self.reference: Reference = parse_reference(ref)
        self.ref = str(self.reference)
        self.client = connect(self.reference.registry, insecure=options.insecure, plain_http=options.plain_http, extra=options.extra)

    @property
    def repository(self) -> str:
        return self.reference.path

    def resolve(self) -> Descriptor:
        desc, _ = self.client.get_manifest(self.repository, self.reference.reference)
        return desc

    def fetch(self, desc: Descriptor) -> bytes:
        if desc.media_type in MANIFEST_LIKE:
            got, data = self.client.get_manifest(self.repository, desc.digest)
            if got.size != desc.size:
                raise IntegrityError(
                    f"manifest {self.reference.name}@{desc.digest} has {got.size} bytes, its descriptor says {desc.size}",
                    expected=str(desc.size), got=str(got.size),
                )
            return data
        return self.client.get_blob(self.repository, desc.digest, desc.size)

    def open_blob(self, desc: Descriptor) -> IO[bytes]:
        return self.client.open_blob(self.repository, desc.digest, desc.size)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RegistrySource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
