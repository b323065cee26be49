"""Settings of the registry plugin that must load without its HTTP stack: `requests` is
imported only when a registry is actually used, so local conversions start faster."""

from __future__ import annotations

from dataclasses import dataclass

# blobs up to this size go in one PUT: a chunked upload costs the registry about 40% more
# time (measured on docker-registry 2.8, 100 MiB blob on loopback), so only really large
# blobs take the resumable chunked path
DEFAULT_CHUNK_SIZE = 128 << 20


@dataclass(frozen=True)
class RegistryBackendConfig:
    """`--backend-config` of the registry backend; every field is optional (the
    repository is the conversion's target reference)."""

    insecure: bool = False  # or-ed with the target's --target-insecure
    plain_http: bool = False
    ca_file: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE  # blobs above this are uploaded in chunks; 0: never
    retries: int = 5  # attempts per request / upload in total
