"""The `s3` backend keeps every promise of `BackendContract`, against moto's S3 server."""

from __future__ import annotations

from typing import Iterator

import pytest

from nydusify_core.testing.backend_contract import BackendContract
from nydusify_core.testing.servers import S3Server
from nydusify_s3 import S3Backend, S3Config
from nydusify_s3.backend import MIN_PART_SIZE


class TestS3BackendContract(BackendContract):
    large_blob_size = 2 * MIN_PART_SIZE + 12345  # three parts

    @pytest.fixture
    def backend(self, s3_server: S3Server, s3_bucket: str) -> Iterator[S3Backend]:
        config = S3Config(
            endpoint=s3_server.host,
            scheme="http",
            region=s3_server.region,
            bucket_name=s3_bucket,
            access_key_id=s3_server.access_key_id,
            access_key_secret=s3_server.secret_access_key,
            object_prefix="nydus/blobs/",
        )
        backend = S3Backend(config, part_size=MIN_PART_SIZE)
        yield backend
        backend.close()
