"""`s3` backend config: the upstream fields and defaults, strictly parsed, one-line errors, no secrets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nydusify_core.errors import UsageError
from nydusify_core.plugins import NydusifyPlugins, parse_backend_config
from nydusify_core.types import BackendContext
from nydusify_s3 import S3Backend, S3Config

SECRET = "s3-secret-that-must-never-show"
VALID = {
    "region": "eu-west-1",
    "bucket_name": "nydus-blobs",
    "access_key_id": "AKIATEST",
    "access_key_secret": SECRET,
}


def parse(plugin_manager: NydusifyPlugins, **changes: object) -> S3Config:
    raw = {k: v for k, v in {**VALID, **changes}.items() if v is not None}
    return parse_backend_config(plugin_manager.backend("s3"), raw)


def usage_error(plugin_manager: NydusifyPlugins, **changes: object) -> str:
    with pytest.raises(UsageError) as info:
        parse(plugin_manager, **changes)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


def test_the_plugin_registers_backend_s3(plugin_manager: NydusifyPlugins) -> None:
    spec = plugin_manager.backend("s3")
    assert spec.config_type is S3Config
    assert isinstance(spec.create(parse(plugin_manager), BackendContext()), S3Backend)


def test_loading_the_plugin_does_not_import_boto3() -> None:
    """`nydusify` starts every plugin; the SDK loads only when the backend is used."""
    code = "import sys, nydusify_s3; assert 'boto3' not in sys.modules, 'imported boto3'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_aws_over_https(plugin_manager: NydusifyPlugins) -> None:
    config = parse(plugin_manager)
    assert (config.endpoint, config.scheme) == ("s3.amazonaws.com", "https")
    assert config.endpoint_url == "https://s3.amazonaws.com"


def test_every_upstream_field_is_accepted(plugin_manager: NydusifyPlugins) -> None:
    config = parse(
        plugin_manager, endpoint="minio.local:9000", scheme="http", object_prefix="nydus/", meta_prefix="meta/", blob_prefix="blob/"
    )
    assert config.endpoint_url == "http://minio.local:9000"
    assert (config.object_prefix, config.meta_prefix, config.blob_prefix) == ("nydus/", "meta/", "blob/")


def test_secret_is_not_in_the_repr(plugin_manager: NydusifyPlugins) -> None:
    assert SECRET not in repr(parse(plugin_manager))


def test_unknown_field_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "unknown field(s) dir" in usage_error(plugin_manager, dir="/tmp")


@pytest.mark.parametrize("field", ["bucket_name", "region"])
def test_required_field_missing(plugin_manager: NydusifyPlugins, field: str) -> None:
    assert f"missing required field(s) {field}" in usage_error(plugin_manager, **{field: None})


def test_empty_region_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "'region' must not be empty" in usage_error(plugin_manager, region="")


@pytest.mark.parametrize("bucket", ["", "a/b", "two words"])
def test_invalid_bucket_name_is_rejected(plugin_manager: NydusifyPlugins, bucket: str) -> None:
    assert "'bucket_name' must be a bucket name" in usage_error(plugin_manager, bucket_name=bucket)


@pytest.mark.parametrize("endpoint", ["http://minio.local:9000", "https://s3.amazonaws.com"])
def test_scheme_in_endpoint_is_rejected_with_a_hint(plugin_manager: NydusifyPlugins, endpoint: str) -> None:
    assert "put the scheme in `scheme`" in usage_error(plugin_manager, endpoint=endpoint)


def test_path_in_endpoint_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "without a path" in usage_error(plugin_manager, endpoint="minio.local/bucket")


def test_unknown_scheme_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "'scheme' must be" in usage_error(plugin_manager, scheme="ftp")


@pytest.mark.parametrize("field", ["endpoint", "region", "bucket_name", "access_key_secret", "object_prefix"])
@pytest.mark.parametrize("value", [1, False, ["x"], {"a": "b"}])
def test_non_string_values_are_rejected(plugin_manager: NydusifyPlugins, field: str, value: object) -> None:
    assert f"field {field!r} must be a string" in usage_error(plugin_manager, **{field: value})


def test_a_secret_of_the_wrong_type_is_not_echoed(plugin_manager: NydusifyPlugins) -> None:
    assert "must be a string" in usage_error(plugin_manager, access_key_secret={"value": SECRET})


def test_secret_without_key_id_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "set both 'access_key_id' and 'access_key_secret'" in usage_error(plugin_manager, access_key_id="")


def test_backend_is_created_through_its_spec(plugin_manager: NydusifyPlugins) -> None:
    spec = plugin_manager.backend("s3")
    backend = spec.create(parse(plugin_manager, object_prefix="p/"), BackendContext(plugins=plugin_manager))
    try:
        assert backend.type == "s3"
        assert backend.key_for("a" * 64) == "p/" + "a" * 64
        assert backend.blob_url("a" * 64) == "https://s3.amazonaws.com/nydus-blobs/p/" + "a" * 64
    finally:
        backend.close()


def test_too_small_part_size_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    with pytest.raises(UsageError, match="below the S3 minimum"):
        S3Backend(parse(plugin_manager), part_size=1 << 20)
