"""`s3` backend config: the upstream fields and defaults, strictly parsed, one-line errors, no
secrets. What every object-store config promises runs from `ObjectStoreConfigSuite`; the S3
rules (AWS defaults, endpoint without scheme or path, `scheme`, `region`) are below it."""

from __future__ import annotations

import pytest

from nydusify_core.plugins import NydusifyPlugins
from nydusify_core.testing.object_config import ObjectStoreConfigSuite
from nydusify_core.types import BackendContext
from nydusify_s3 import S3Backend, S3Config


class TestS3Config(ObjectStoreConfigSuite):
    backend_name = "s3"
    backend_class = S3Backend
    config_class = S3Config
    distribution_module = "nydusify_s3"
    sdk_module = "boto3"
    secret = "s3-secret-that-must-never-show"
    valid = {
        "region": "eu-west-1",
        "bucket_name": "nydus-blobs",
        "access_key_id": "AKIATEST",
        "access_key_secret": secret,
    }
    required = ("bucket_name", "region")
    string_fields = ("endpoint", "region", "bucket_name", "access_key_secret", "object_prefix")
    foreign_field = ("dir", "/tmp")
    too_small_part_size = 1 << 20
    part_size_error = "below the S3 minimum"

    def test_defaults_are_aws_over_https(self, plugin_manager: NydusifyPlugins) -> None:
        config = self.parse(plugin_manager)
        assert (config.endpoint, config.scheme) == ("s3.amazonaws.com", "https")
        assert config.endpoint_url == "https://s3.amazonaws.com"

    def test_endpoint_and_scheme_make_the_url(self, plugin_manager: NydusifyPlugins) -> None:
        assert self.parse(plugin_manager, endpoint="minio.local:9000", scheme="http").endpoint_url == "http://minio.local:9000"

    def test_empty_region_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        assert "'region' must not be empty" in self.usage_error(plugin_manager, region="")

    @pytest.mark.parametrize("bucket", ["", "a/b", "two words"])
    def test_invalid_bucket_name_is_rejected(self, plugin_manager: NydusifyPlugins, bucket: str) -> None:
        assert "'bucket_name' must be a bucket name" in self.usage_error(plugin_manager, bucket_name=bucket)

    @pytest.mark.parametrize("endpoint", ["http://minio.local:9000", "https://s3.amazonaws.com"])
    def test_scheme_in_endpoint_is_rejected_with_a_hint(self, plugin_manager: NydusifyPlugins, endpoint: str) -> None:
        assert "put the scheme in `scheme`" in self.usage_error(plugin_manager, endpoint=endpoint)

    def test_path_in_endpoint_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        assert "without a path" in self.usage_error(plugin_manager, endpoint="minio.local/bucket")

    def test_unknown_scheme_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        assert "'scheme' must be" in self.usage_error(plugin_manager, scheme="ftp")

    def test_blob_urls_are_path_style(self, plugin_manager: NydusifyPlugins) -> None:
        backend = S3Backend(self.parse(plugin_manager, object_prefix="p/"), BackendContext(plugins=plugin_manager))
        try:
            assert backend.blob_url("a" * 64) == "https://s3.amazonaws.com/nydus-blobs/p/" + "a" * 64
        finally:
            backend.close()
