"""The `oss` backend keeps every promise of `BackendContract`, against a real OSS protocol server."""

from __future__ import annotations

from typing import Iterator

import pytest

from nydusify_core.testing.backend_contract import BackendContract
from nydusify_core.testing.oss_server import OssServer
from nydusify_oss import OssBackend, OssConfig

PART_SIZE = 1 << 20  # the contract's 3 MiB blob goes up in three parallel parts


class TestOssBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, oss_server: OssServer, oss_bucket: str) -> Iterator[OssBackend]:
        config = OssConfig(
            endpoint=oss_server.endpoint,
            bucket_name=oss_bucket,
            access_key_id=oss_server.access_key_id,
            access_key_secret=oss_server.access_key_secret,
            object_prefix="nydus/blobs/",
        )
        backend = OssBackend(config, part_size=PART_SIZE, backoff=0)
        yield backend
        backend.close()


class TestOssBackendContractNoPrefix(BackendContract):
    """Plain keys, and the plugin's defaults (one PUT per blob below 500 MiB)."""

    @pytest.fixture
    def backend(self, oss_server: OssServer, oss_bucket: str) -> Iterator[OssBackend]:
        config = OssConfig(
            endpoint=oss_server.endpoint,
            bucket_name=oss_bucket,
            access_key_id=oss_server.access_key_id,
            access_key_secret=oss_server.access_key_secret,
        )
        backend = OssBackend(config)
        yield backend
        backend.close()
