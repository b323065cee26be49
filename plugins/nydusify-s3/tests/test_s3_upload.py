"""`s3` backend behaviour beyond the contract: keys, URLs, credentials, multipart, retries, aborts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from nydusify_core import hookimpl
from nydusify_core.errors import AuthError, BackendError, NotFoundError
from nydusify_core.plugins import NydusifyPlugins
from nydusify_core.testing.backend_contract import make_blob
from nydusify_core.testing.servers import S3Server
from nydusify_core.types import BackendContext, Credentials
from nydusify_s3 import S3Backend, S3Config
from nydusify_s3.backend import MIN_PART_SIZE

PART = MIN_PART_SIZE
BIG = 2 * PART + 4321  # three parts, the last one short

MakeBackend = Callable[..., S3Backend]


@pytest.fixture
def make_backend(s3_server: S3Server, s3_bucket: str, s3_proxy: Any) -> Iterator[MakeBackend]:
    """`make_backend(**config_or_tuning)`: a backend through the fault proxy, small parts."""
    made: list[S3Backend] = []

    def make(**kwargs: Any) -> S3Backend:
        tuning = {k: kwargs.pop(k) for k in ("part_size", "workers", "max_attempts") if k in kwargs}
        context = kwargs.pop("context", None)
        fields = {
            "endpoint": s3_proxy.host,
            "scheme": "http",
            "region": s3_server.region,
            "bucket_name": s3_bucket,
            "access_key_id": s3_server.access_key_id,
            "access_key_secret": s3_server.secret_access_key,
            **kwargs,
        }
        backend = S3Backend(S3Config(**fields), context, **{"part_size": PART, **tuning})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def keys(s3_server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def pending_uploads(s3_server: S3Server, bucket: str) -> list[Any]:
    return s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_object_key_is_object_prefix_plus_blob_id_path_style(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend(object_prefix="registry/nydus/")
    blob_id, path, data = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    assert keys(s3_server, s3_bucket) == [f"registry/nydus/{blob_id}"]
    assert f"/{s3_bucket}/registry/nydus/{blob_id}" in s3_proxy.paths  # path-style addressing
    assert backend.blob_url(blob_id) == f"http://{s3_proxy.host}/{s3_bucket}/registry/nydus/{blob_id}"


def test_put_object_under_the_meta_prefix_returns_its_url(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend(meta_prefix="meta/", blob_prefix="blobs/")
    bootstrap = tmp_path / "image.boot"
    bootstrap.write_bytes(b"bootstrap bytes")
    url = backend.put_object(backend.meta_key("image.boot"), bootstrap)
    assert url == f"http://{s3_proxy.host}/{s3_bucket}/meta/image.boot"
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="meta/image.boot")["Body"].read()
    assert body == b"bootstrap bytes"


def test_with_object_prefix_derives_a_blob_client(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(blob_prefix="blobs/")
    blobs = backend.with_object_prefix(backend.config.blob_prefix)
    blob_id, path, _ = make_blob(tmp_path, 10)
    blobs.put(blob_id, path)
    assert keys(s3_server, s3_bucket) == [f"blobs/{blob_id}"]
    assert not backend.exists(blob_id)


def test_existing_blob_is_not_uploaded_again(make_backend: MakeBackend, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend()
    blob_id, path, _ = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    backend.put(blob_id, path)
    assert s3_proxy.ops.count("PutObject") == 1


def test_blob_larger_than_a_part_goes_up_in_parallel_parts(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend(workers=3)
    blob_id, path, data = make_blob(tmp_path, BIG)
    s3_proxy.rendezvous("UploadPart", parties=3)
    backend.put(blob_id, path)
    assert s3_proxy.ops.count("UploadPart") == 3 and "PutObject" not in s3_proxy.ops
    assert s3_proxy.peak_concurrency("UploadPart") == 3
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=blob_id)
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    assert backend.read_range(blob_id, PART - 10, 20) == data[PART - 10 : PART + 10]


def test_blob_of_exactly_one_part_is_a_single_put(make_backend: MakeBackend, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend()
    blob_id, path, _ = make_blob(tmp_path, PART)
    backend.put(blob_id, path)
    assert "CreateMultipartUpload" not in s3_proxy.ops


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_failed_parts_are_retried(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, s3_proxy: Any, tmp_path: Path, mode: str) -> None:
    backend = make_backend(max_attempts=3)
    blob_id, path, data = make_blob(tmp_path, BIG)
    fault = s3_proxy.inject_failure("UploadPart", count=2, mode=mode)
    backend.put(blob_id, path)
    assert fault.exhausted
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=blob_id)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == blob_id
    assert pending_uploads(s3_server, s3_bucket) == []


@pytest.mark.parametrize("op", ["PutObject", "HeadObject", "GetObject", "CreateMultipartUpload", "CompleteMultipartUpload"])
def test_every_request_kind_is_retried(make_backend: MakeBackend, s3_proxy: Any, tmp_path: Path, op: str) -> None:
    backend = make_backend(max_attempts=2)
    size = 100 if op == "PutObject" else BIG
    blob_id, path, data = make_blob(tmp_path, size)
    fault = s3_proxy.inject_failure(op, count=1)
    backend.put(blob_id, path)
    assert backend.read_range(blob_id, 0, size) == data
    assert fault.exhausted


def test_interrupted_multipart_upload_leaves_no_object(make_backend: MakeBackend, s3_server: S3Server, s3_bucket: str, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend(max_attempts=2, workers=2)
    blob_id, path, _ = make_blob(tmp_path, BIG)
    s3_proxy.inject_failure("UploadPart", count=100, mode="drop")
    with pytest.raises(BackendError, match="upload"):
        backend.put(blob_id, path)
    assert "AbortMultipartUpload" in s3_proxy.ops
    assert pending_uploads(s3_server, s3_bucket) == []
    assert keys(s3_server, s3_bucket) == []
    assert backend.exists(blob_id) is False


def test_client_errors_are_not_retried(make_backend: MakeBackend, s3_proxy: Any, tmp_path: Path) -> None:
    backend = make_backend(max_attempts=3)
    blob_id, path, _ = make_blob(tmp_path, 100)
    s3_proxy.inject_failure("PutObject", count=3, status=400, code="InvalidArgument")
    with pytest.raises(BackendError, match="HTTP 400 InvalidArgument"):
        backend.put(blob_id, path)
    assert s3_proxy.ops.count("PutObject") == 1


def test_other_head_errors_are_fatal_not_absent(make_backend: MakeBackend, s3_proxy: Any) -> None:
    backend = make_backend(max_attempts=1)
    s3_proxy.inject_failure("HeadObject", count=1, status=503)
    with pytest.raises(BackendError, match="HTTP 503"):
        backend.exists("0" * 64)


def test_wrong_secret_is_a_clear_auth_error(make_backend: MakeBackend, s3_server: S3Server, tmp_path: Path) -> None:
    wrong = "definitely-not-the-secret"
    backend = make_backend(access_key_secret=wrong)
    blob_id, path, _ = make_blob(tmp_path, 100)
    with pytest.raises(AuthError) as info:
        backend.put_object(backend.key_for(blob_id), path)
    assert "SignatureDoesNotMatch" in str(info.value) and "access_key_secret" in str(info.value)
    with pytest.raises(AuthError) as head_info:
        backend.exists(blob_id)
    for message in (str(info.value), str(head_info.value)):
        assert "\n" not in message and wrong not in message and s3_server.secret_access_key not in message


def test_unknown_key_id_is_an_auth_error(make_backend: MakeBackend, tmp_path: Path) -> None:
    backend = make_backend(access_key_id="AKIANOBODY")
    blob_id, path, _ = make_blob(tmp_path, 100)
    with pytest.raises(AuthError, match="InvalidAccessKeyId"):
        backend.put_object(backend.key_for(blob_id), path)


def test_missing_bucket_is_an_error(make_backend: MakeBackend, tmp_path: Path) -> None:
    backend = make_backend(bucket_name="no-such-bucket-here")
    blob_id, path, _ = make_blob(tmp_path, 100)
    with pytest.raises(BackendError, match="bucket 'no-such-bucket-here' does not exist"):
        backend.put_object(backend.key_for(blob_id), path)


def test_unreachable_endpoint_is_a_backend_error(make_backend: MakeBackend) -> None:
    backend = make_backend(endpoint="127.0.0.1:9", max_attempts=1)
    with pytest.raises(BackendError, match="127.0.0.1:9"):
        backend.exists("0" * 64)


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An AWS default chain that finds nothing unless the test provides it."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_credentials_from_the_environment(make_backend: MakeBackend, s3_server: S3Server, no_aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    backend = make_backend(access_key_id="", access_key_secret="")
    blob_id, path, _ = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    assert backend.exists(blob_id)


def test_credentials_from_the_shared_file(make_backend: MakeBackend, s3_server: S3Server, no_aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shared = tmp_path / "credentials"
    shared.write_text(f"[default]\naws_access_key_id = {s3_server.access_key_id}\naws_secret_access_key = {s3_server.secret_access_key}\n")
    no_aws_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    backend = make_backend(access_key_id="", access_key_secret="")
    assert backend.exists("0" * 64) is False


def test_credentials_from_a_plugin(
    make_backend: MakeBackend, s3_server: S3Server, no_aws_env: pytest.MonkeyPatch, plugin_manager: NydusifyPlugins, register_plugin: Any
) -> None:
    class Vault:
        @hookimpl
        def nydusify_resolve_credentials(self, kind: str, location: str) -> Credentials | None:
            if kind == "s3":
                return Credentials(username=s3_server.access_key_id, password=s3_server.secret_access_key)
            return None

    register_plugin(Vault())
    backend = make_backend(access_key_id="", access_key_secret="", context=BackendContext(plugins=plugin_manager))
    assert backend.exists("0" * 64) is False


def test_no_credentials_anywhere_is_a_clear_auth_error(make_backend: MakeBackend, no_aws_env: pytest.MonkeyPatch) -> None:
    backend = make_backend(access_key_id="", access_key_secret="")
    with pytest.raises(AuthError, match="no S3 credentials"):
        backend.exists("0" * 64)


def test_delete_of_absent_blob_is_not_found(make_backend: MakeBackend) -> None:
    with pytest.raises(NotFoundError):
        make_backend().delete("3" * 64)
