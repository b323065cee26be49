"""nydusify-registry: OCI/Docker registries as source, target and blob storage backend.

Registered through the `nydusify` entry-point group: source and target `registry` (any
Docker reference without another transport prefix), backend `registry` (blobs in the
target repository) and credentials from the Docker CLI config.
"""

from __future__ import annotations

from typing import Iterable

from nydusify_core.hookspecs import hookimpl
from nydusify_core.lazy import lazy_callable, lazy_exports
from nydusify_core.types import BackendSpec, Credentials, SourceSpec, TargetSpec

from nydusify_registry.config import RegistryBackendConfig
from nydusify_registry.dockerconfig import DockerConfig, docker_credentials, load_docker_config
from nydusify_registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from nydusify_registry.reference import InvalidReferenceError, Reference, accepts, parse_reference, target_from_suffix

# names whose modules import `requests` (about 80 ms): loaded when first used, so that
# conversions that never touch a registry do not pay for it at start-up
__getattr__ = lazy_exports(__name__, {
    "ClientOptions": "client", "RegistryClient": "client", "RetryPolicy": "client",
    "RegistryBackend": "backend", "RegistrySource": "source", "RegistryTarget": "target",
})

__version__ = "0.1.0"

__all__ = [
    "ClientOptions",
    "DockerConfig",
    "InvalidReferenceError",
    "Reference",
    "RegistryAuthError",
    "RegistryBackend",
    "RegistryBackendConfig",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistrySource",
    "RegistryTarget",
    "RetryPolicy",
    "docker_credentials",
    "load_docker_config",
    "parse_reference",
    "target_from_suffix",
]

_DESCRIPTION = "an image in an OCI/Docker registry (host/repo[:tag][@digest])"


@hookimpl
def nydusify_register_sources() -> Iterable[SourceSpec]:
    yield SourceSpec(name="registry", description=_DESCRIPTION, accepts=accepts,
                     open=lazy_callable("nydusify_registry.source:RegistrySource"), catch_all=True)


@hookimpl
def nydusify_register_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="registry", description=_DESCRIPTION, accepts=accepts,
                     open=lazy_callable("nydusify_registry.target:RegistryTarget"), catch_all=True)


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="registry",
        description="blobs in the target image's repository (config optional: insecure, plain_http, ca_file, chunk_size, retries)",
        config_type=RegistryBackendConfig,
        create=lazy_callable("nydusify_registry.backend:RegistryBackend"),
    )


@hookimpl
def nydusify_resolve_credentials(kind: str, location: str) -> Credentials | None:
    """Registry credentials from the Docker CLI config (`auths`, `credsStore`, `credHelpers`)."""
    if kind != "registry":
        return None
    host = location.split("://", 1)[-1].split("/", 1)[0]
    return docker_credentials(host)
