"""nydusify plugin: storage backend `oss` (Aliyun Object Storage Service, through oss2).

Config (`--backend-config`): `{"endpoint": ..., "bucket_name": ..., "access_key_id": ...,
"access_key_secret": ..., "object_prefix": ...}`. Without keys in the config, credentials
come from `nydusify_resolve_credentials(kind="oss")`, which this plugin answers from
`OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET`.
"""

from __future__ import annotations

from typing import Iterable

from nydusify_core import hookimpl
from nydusify_core.lazy import lazy_callable, lazy_exports
from nydusify_core.types import BackendSpec, Credentials

from nydusify_oss.config import ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, OssConfig, env_credentials

__version__ = "0.1.0"
__all__ = [
    "OssBackend",
    "OssConfig",
    "CONVERT_PART_SIZE",
    "PACK_PART_SIZE",
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
]


# the backend module imports oss2, slow to load: only when an oss backend is used
__getattr__ = lazy_exports(__name__, {"OssBackend": "backend", "CONVERT_PART_SIZE": "backend", "PACK_PART_SIZE": "backend"})


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="oss",
        description="blobs in Aliyun OSS (config: endpoint, bucket_name, access_key_id, access_key_secret, object_prefix)",
        config_type=OssConfig,
        create=lazy_callable("nydusify_oss.backend:OssBackend"),
    )


@hookimpl(trylast=True)
def nydusify_resolve_credentials(kind: str, location: str) -> Credentials | None:
    """OSS keys from the environment; `trylast` so other plugins can override them."""
    if kind != "oss":
        return None
    return env_credentials()
