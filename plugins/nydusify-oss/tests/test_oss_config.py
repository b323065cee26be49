"""`oss` backend config: the upstream fields, strictly parsed, with one-line errors and no
secrets. What every object-store config promises runs from `ObjectStoreConfigSuite`; the
OSS rules (endpoint forms, bucket-name syntax, `scheme` ignored) are below it."""

from __future__ import annotations

import pytest

from nydusify_core.plugins import NydusifyPlugins
from nydusify_core.testing.object_config import ObjectStoreConfigSuite
from nydusify_oss import OssBackend, OssConfig


class TestOssConfig(ObjectStoreConfigSuite):
    backend_name = "oss"
    backend_class = OssBackend
    config_class = OssConfig
    distribution_module = "nydusify_oss"
    sdk_module = "oss2"
    secret = "oss-secret-that-must-never-show"
    valid = {
        "endpoint": "oss-cn-hangzhou.aliyuncs.com",
        "bucket_name": "nydus-blobs",
        "access_key_id": "LTAI-test",
        "access_key_secret": secret,
    }
    required = ("endpoint", "bucket_name")
    string_fields = ("endpoint", "bucket_name", "access_key_secret", "object_prefix")
    foreign_field = ("region", "cn-hangzhou")
    too_small_part_size = 1024
    part_size_error = "below the OSS minimum"

    def test_scheme_is_an_accepted_field(self, plugin_manager: NydusifyPlugins) -> None:
        self.parse(plugin_manager, scheme="https")

    def test_empty_endpoint_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        assert "'endpoint' must not be empty" in self.usage_error(plugin_manager, endpoint="")

    @pytest.mark.parametrize("bucket", ["", "ab", "Upper", "-dash", "dash-", "under_score"])
    def test_invalid_bucket_name_is_rejected(self, plugin_manager: NydusifyPlugins, bucket: str) -> None:
        assert "invalid 'bucket_name'" in self.usage_error(plugin_manager, bucket_name=bucket)

    def test_endpoint_with_an_unknown_scheme_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        assert "scheme must be http or https" in self.usage_error(plugin_manager, endpoint="ftp://oss.example")

    @pytest.mark.parametrize(
        ("endpoint", "url"),
        [
            ("oss-cn-hangzhou.aliyuncs.com", "http://oss-cn-hangzhou.aliyuncs.com"),
            ("https://oss-cn-hangzhou.aliyuncs.com/", "https://oss-cn-hangzhou.aliyuncs.com"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ],
    )
    def test_endpoint_without_scheme_means_http(self, plugin_manager: NydusifyPlugins, endpoint: str, url: str) -> None:
        assert self.parse(plugin_manager, endpoint=endpoint).endpoint_url == url

    def test_scheme_field_is_ignored(self, plugin_manager: NydusifyPlugins) -> None:
        assert self.parse(plugin_manager, scheme="https").endpoint_url == "http://oss-cn-hangzhou.aliyuncs.com"
