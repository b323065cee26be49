"""From nydusify's endpoint options to a `RegistryClient`: TLS, retries and where
credentials come from.

Keys read from `EndpointOptions.extra` (all optional):
``credentials`` (a `Credentials`, or a callable host -> `Credentials | None`),
``plugins`` (a `NydusifyPlugins`, asked through `nydusify_resolve_credentials`),
``ca_file`` (CA bundle path), ``chunk_size`` (bytes), ``retry`` (a `RetryPolicy`),
``mount_from`` (references whose repositories a target may mount blobs from),
``force_push`` (upload blobs even when present).
Without ``credentials`` or ``plugins`` the Docker CLI config is read directly.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from nydusify_core.errors import UsageError
from nydusify_core.types import Credentials

from nydusify_registry.client import DEFAULT_CHUNK_SIZE, ClientOptions, RegistryClient, RetryPolicy
from nydusify_registry.dockerconfig import docker_credentials

CredentialLookup = Callable[[], "Credentials | None"]


def credential_lookup(host: str, extra: Mapping[str, Any] | None = None, plugins: Any = None) -> CredentialLookup:
    """A callable that finds credentials for `host` when the registry first asks."""
    extra = extra or {}
    given = extra.get("credentials")
    plugins = plugins if plugins is not None else extra.get("plugins")

    def lookup() -> Credentials | None:
        if isinstance(given, Credentials):
            return given
        if callable(given):
            return given(host)
        if plugins is not None:
            return plugins.resolve_credentials("registry", host)
        return docker_credentials(host)

    return lookup


def client_options(*, insecure: bool, plain_http: bool, extra: Mapping[str, Any] | None = None) -> ClientOptions:
    extra = extra or {}
    retry = extra.get("retry") or RetryPolicy()
    if not isinstance(retry, RetryPolicy):
        raise UsageError("endpoint option 'retry' must be a RetryPolicy")
    chunk = extra.get("chunk_size", DEFAULT_CHUNK_SIZE)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
        raise UsageError(f"endpoint option 'chunk_size' must be a non-negative integer, not {chunk!r}")
    ca_file = extra.get("ca_file") or None
    return ClientOptions(insecure=insecure, plain_http=plain_http, ca_file=str(ca_file) if ca_file else None, retry=retry, chunk_size=chunk)


def connect(host: str, *, insecure: bool = False, plain_http: bool = False, extra: Mapping[str, Any] | None = None, plugins: Any = None) -> RegistryClient:
    """A client for `host` configured from endpoint options."""
    options = client_options(insecure=insecure, plain_http=plain_http, extra=extra)
    return RegistryClient(host, credentials=credential_lookup(host, extra, plugins), options=options)
