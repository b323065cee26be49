"""nydusify plugin: storage backend `s3` (Amazon S3 and S3-compatible stores, through boto3).

Config (`--backend-config`): `{"endpoint": "host[:port]", "scheme": "https", "region": ...,
"bucket_name": ..., "access_key_id": ..., "access_key_secret": ..., "object_prefix": ...}`.
Without keys in the config, credentials come from `nydusify_resolve_credentials(kind="s3")`
when a plugin answers it, else from boto3's default chain (environment, shared config).
"""

from __future__ import annotations

from typing import Iterable

from nydusify_core import hookimpl
from nydusify_core.lazy import lazy_callable, lazy_exports
from nydusify_core.types import BackendSpec

from nydusify_s3.config import S3Config

__version__ = "0.1.0"
__all__ = ["S3Backend", "S3Config", "CONVERT_PART_SIZE", "PACK_PART_SIZE"]


# the backend module imports boto3, slow to load: only when an s3 backend is used
__getattr__ = lazy_exports(__name__, {"S3Backend": "backend", "CONVERT_PART_SIZE": "backend", "PACK_PART_SIZE": "backend"})


@hookimpl
def nydusify_register_backends() -> Iterable[BackendSpec]:
    yield BackendSpec(
        name="s3",
        description="blobs in S3 or an S3-compatible store (config: endpoint, scheme, region, bucket_name, keys, object_prefix)",
        config_type=S3Config,
        create=lazy_callable("nydusify_s3.backend:S3Backend"),
    )
