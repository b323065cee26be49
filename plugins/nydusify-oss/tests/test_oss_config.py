"""`oss` backend config: the upstream fields, strictly parsed, with one-line errors and no secrets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nydusify_core.errors import UsageError
from nydusify_core.plugins import NydusifyPlugins, parse_backend_config
from nydusify_core.types import BackendContext
from nydusify_oss import OssBackend, OssConfig

SECRET = "oss-secret-that-must-never-show"
VALID = {
    "endpoint": "oss-cn-hangzhou.aliyuncs.com",
    "bucket_name": "nydus-blobs",
    "access_key_id": "LTAI-test",
    "access_key_secret": SECRET,
}


def parse(plugin_manager: NydusifyPlugins, **changes: object) -> OssConfig:
    raw = {**VALID, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    return parse_backend_config(plugin_manager.backend("oss"), raw)


def usage_error(plugin_manager: NydusifyPlugins, **changes: object) -> str:
    with pytest.raises(UsageError) as info:
        parse(plugin_manager, **changes)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


def test_the_plugin_registers_backend_oss(plugin_manager: NydusifyPlugins) -> None:
    spec = plugin_manager.backend("oss")
    assert spec.config_type is OssConfig
    assert isinstance(spec.create(parse(plugin_manager), BackendContext()), OssBackend)


def test_loading_the_plugin_does_not_import_oss2() -> None:
    """`nydusify` starts every plugin; the SDK loads only when the backend is used."""
    code = "import sys, nydusify_oss; assert 'oss2' not in sys.modules, 'imported oss2'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_upstream_field_is_accepted(plugin_manager: NydusifyPlugins) -> None:
    config = parse(plugin_manager, object_prefix="nydus/", meta_prefix="meta/", blob_prefix="blob/", scheme="https")
    assert (config.object_prefix, config.meta_prefix, config.blob_prefix) == ("nydus/", "meta/", "blob/")


def test_secret_is_not_in_the_repr(plugin_manager: NydusifyPlugins) -> None:
    assert SECRET not in repr(parse(plugin_manager))


def test_unknown_field_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "unknown field(s) region" in usage_error(plugin_manager, region="cn-hangzhou")


@pytest.mark.parametrize("field", ["endpoint", "bucket_name"])
def test_required_field_missing(plugin_manager: NydusifyPlugins, field: str) -> None:
    assert f"missing required field(s) {field}" in usage_error(plugin_manager, **{field: None})


def test_empty_endpoint_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "'endpoint' must not be empty" in usage_error(plugin_manager, endpoint="")


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "-dash", "dash-", "under_score"])
def test_invalid_bucket_name_is_rejected(plugin_manager: NydusifyPlugins, bucket: str) -> None:
    assert "invalid 'bucket_name'" in usage_error(plugin_manager, bucket_name=bucket)


@pytest.mark.parametrize("field", ["endpoint", "bucket_name", "access_key_secret", "object_prefix"])
@pytest.mark.parametrize("value", [1, True, ["x"], {"a": "b"}])
def test_non_string_values_are_rejected(plugin_manager: NydusifyPlugins, field: str, value: object) -> None:
    assert f"field {field!r} must be a string" in usage_error(plugin_manager, **{field: value})


def test_a_secret_of_the_wrong_type_is_not_echoed(plugin_manager: NydusifyPlugins) -> None:
    message = usage_error(plugin_manager, access_key_secret=[SECRET])
    assert "must be a string" in message


def test_key_id_without_secret_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "set both 'access_key_id' and 'access_key_secret'" in usage_error(plugin_manager, access_key_secret="")


def test_endpoint_with_an_unknown_scheme_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    assert "scheme must be http or https" in usage_error(plugin_manager, endpoint="ftp://oss.example")


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("oss-cn-hangzhou.aliyuncs.com", "http://oss-cn-hangzhou.aliyuncs.com"),
        ("https://oss-cn-hangzhou.aliyuncs.com/", "https://oss-cn-hangzhou.aliyuncs.com"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_endpoint_without_scheme_means_http(plugin_manager: NydusifyPlugins, endpoint: str, url: str) -> None:
    assert parse(plugin_manager, endpoint=endpoint).endpoint_url == url


def test_scheme_field_is_ignored(plugin_manager: NydusifyPlugins) -> None:
    assert parse(plugin_manager, scheme="https").endpoint_url == "http://oss-cn-hangzhou.aliyuncs.com"


def test_backend_is_created_through_its_spec(plugin_manager: NydusifyPlugins) -> None:
    spec = plugin_manager.backend("oss")
    backend = spec.create(parse(plugin_manager, object_prefix="p/"), BackendContext(plugins=plugin_manager))
    try:
        assert backend.type == "oss"
        assert backend.key_for("a" * 64) == "p/" + "a" * 64
    finally:
        backend.close()


def test_too_small_part_size_is_rejected(plugin_manager: NydusifyPlugins) -> None:
    with pytest.raises(UsageError, match="below the OSS minimum"):
        OssBackend(parse(plugin_manager), part_size=1024)
