"""`oss` backend behaviour beyond the contract: keys, credentials, multipart, retries, aborts, CRC."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import oss2
import pytest

from nydusify_core.errors import AuthError, BackendError, NydusifyError
from nydusify_core.plugins import NydusifyPlugins
from nydusify_core.testing.backend_contract import make_blob
from nydusify_core.testing.oss_server import OssServer
from nydusify_core.types import BackendContext
from nydusify_oss import OssBackend, OssConfig
from nydusify_oss.backend import MIN_PART_SIZE

PART = MIN_PART_SIZE
BIG = 4 * PART + 1234  # five parts, the last one short

MakeBackend = Callable[..., OssBackend]


@pytest.fixture
def make_backend(oss_server: OssServer, oss_bucket: str) -> Iterator[MakeBackend]:
    """`make_backend(**config_or_tuning)`: a backend on a fresh bucket, small parts, no pauses."""
    made: list[OssBackend] = []

    def make(**kwargs: object) -> OssBackend:
        tuning = {k: kwargs.pop(k) for k in ("part_size", "workers", "max_attempts", "backoff", "context") if k in kwargs}
        fields = {
            "endpoint": oss_server.endpoint,
            "bucket_name": oss_bucket,
            "access_key_id": oss_server.access_key_id,
            "access_key_secret": oss_server.access_key_secret,
            **kwargs,
        }
        context = tuning.pop("context", None)
        backend = OssBackend(OssConfig(**fields), context, **{"part_size": PART, "backoff": 0, **tuning})  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def test_object_key_is_object_prefix_plus_blob_id(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(object_prefix="registry/nydus/")
    blob_id, path, data = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    assert oss_server.object_keys(oss_bucket) == [f"registry/nydus/{blob_id}"]
    assert oss_server.object_data(oss_bucket, f"registry/nydus/{blob_id}") == data
    assert backend.blob_url(blob_id) == f"oss://{oss_bucket}/registry/nydus/{blob_id}"


def test_put_object_under_the_meta_prefix_returns_its_url(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(meta_prefix="meta/", blob_prefix="blobs/")
    bootstrap = tmp_path / "image.boot"
    bootstrap.write_bytes(b"bootstrap bytes")
    url = backend.put_object(backend.meta_key("image.boot"), bootstrap)
    assert url == f"oss://{oss_bucket}/meta/image.boot"
    assert oss_server.object_data(oss_bucket, "meta/image.boot") == b"bootstrap bytes"
    assert backend.object_exists("meta/image.boot")


def test_with_object_prefix_derives_a_blob_client(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(blob_prefix="blobs/")
    blobs = backend.with_object_prefix(backend.config.blob_prefix)
    blob_id, path, _ = make_blob(tmp_path, 10)
    blobs.put(blob_id, path)
    assert oss_server.object_keys(oss_bucket) == [f"blobs/{blob_id}"]
    assert not backend.exists(blob_id)


def test_existing_blob_is_not_uploaded_again(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend()
    blob_id, path, _ = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    backend.put(blob_id, path)
    assert oss_server.ops(oss_bucket).count("PutObject") == 1


def test_blob_larger_than_a_part_goes_up_in_parallel_parts(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(workers=3)
    blob_id, path, data = make_blob(tmp_path, BIG)
    oss_server.rendezvous("UploadPart", parties=3)
    backend.put(blob_id, path)
    ops = oss_server.ops(oss_bucket)
    assert ops.count("UploadPart") == 5 and "PutObject" not in ops
    assert oss_server.peak_concurrency("UploadPart", oss_bucket) == 3
    assert oss_server.object_data(oss_bucket, blob_id) == data
    assert backend.read_range(blob_id, PART - 10, 20) == data[PART - 10 : PART + 10]


def test_blob_of_exactly_one_part_is_a_single_put(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend()
    blob_id, path, _ = make_blob(tmp_path, PART)
    backend.put(blob_id, path)
    assert "InitiateMultipartUpload" not in oss_server.ops(oss_bucket)


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_failed_parts_are_retried(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path, mode: str) -> None:
    backend = make_backend(max_attempts=3)
    blob_id, path, data = make_blob(tmp_path, BIG)
    fault = oss_server.inject_failure(op="UploadPart", bucket=oss_bucket, count=2, mode=mode)
    backend.put(blob_id, path)
    assert fault.exhausted
    assert oss_server.object_data(oss_bucket, blob_id) == data
    assert oss_server.pending_uploads(oss_bucket) == []


@pytest.mark.parametrize("op", ["PutObject", "HeadObject", "GetObject", "InitiateMultipartUpload", "CompleteMultipartUpload"])
def test_every_request_kind_is_retried(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path, op: str) -> None:
    backend = make_backend(max_attempts=2)
    size = 100 if op == "PutObject" else BIG
    blob_id, path, data = make_blob(tmp_path, size)
    fault = oss_server.inject_failure(op=op, bucket=oss_bucket, count=1)
    backend.put(blob_id, path)
    assert backend.read_range(blob_id, 0, size) == data
    assert fault.exhausted


def test_interrupted_multipart_upload_leaves_no_object(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(max_attempts=2, workers=2)
    blob_id, path, _ = make_blob(tmp_path, BIG)
    oss_server.inject_failure(op="UploadPart", bucket=oss_bucket, key=blob_id, count=100, mode="drop")
    with pytest.raises(BackendError, match="upload part"):
        backend.put(blob_id, path)
    assert "AbortMultipartUpload" in oss_server.ops(oss_bucket)
    oss_server.clear_faults()
    assert oss_server.pending_uploads(oss_bucket) == []
    assert oss_server.object_keys(oss_bucket) == []
    assert backend.exists(blob_id) is False


def test_failed_completion_is_aborted(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(max_attempts=2)
    blob_id, path, _ = make_blob(tmp_path, BIG)
    oss_server.inject_failure(op="CompleteMultipartUpload", bucket=oss_bucket, count=2, status=503, code="ServiceUnavailable")
    with pytest.raises(BackendError, match="HTTP 503 ServiceUnavailable"):
        backend.put(blob_id, path)
    assert oss_server.pending_uploads(oss_bucket) == []
    assert backend.exists(blob_id) is False


def test_client_errors_are_not_retried(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend(max_attempts=3)
    blob_id, path, _ = make_blob(tmp_path, 100)
    oss_server.inject_failure(op="PutObject", bucket=oss_bucket, count=3, status=400, code="InvalidArgument")
    with pytest.raises(BackendError, match="HTTP 400 InvalidArgument"):
        backend.put(blob_id, path)
    assert oss_server.ops(oss_bucket).count("PutObject") == 1


def test_wrong_secret_is_a_clear_auth_error(make_backend: MakeBackend, oss_server: OssServer, tmp_path: Path) -> None:
    wrong = "definitely-not-the-secret"
    backend = make_backend(access_key_secret=wrong)
    blob_id, path, _ = make_blob(tmp_path, 100)
    big_id, big_path, _ = make_blob(tmp_path, 4 << 20, seed=1)  # refused before its body is read
    one_part = make_backend(access_key_secret=wrong, part_size=8 << 20)
    actions = (lambda: backend.put(blob_id, path), lambda: backend.exists(blob_id), lambda: one_part.put_object(big_id, big_path))
    for action in actions:
        with pytest.raises(AuthError) as info:
            action()
        message = str(info.value)
        assert "SignatureDoesNotMatch" in message and "access_key_secret" in message
        assert wrong not in message and oss_server.access_key_secret not in message


def test_unknown_key_id_is_an_auth_error(make_backend: MakeBackend) -> None:
    backend = make_backend(access_key_id="nobody")
    with pytest.raises(AuthError, match="InvalidAccessKeyId"):
        backend.exists("0" * 64)


def test_missing_bucket_is_an_error_not_an_absent_blob(make_backend: MakeBackend) -> None:
    backend = make_backend(bucket_name="no-such-bucket-here")
    with pytest.raises(BackendError, match="bucket 'no-such-bucket-here' does not exist"):
        backend.exists("0" * 64)


def test_unreachable_endpoint_is_a_backend_error(make_backend: MakeBackend) -> None:
    backend = make_backend(endpoint="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(BackendError, match="cannot reach http://127.0.0.1:9"):
        backend.exists("0" * 64)


def test_credentials_come_from_the_environment(
    make_backend: MakeBackend, oss_server: OssServer, plugin_manager: NydusifyPlugins, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", oss_server.access_key_id)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", oss_server.access_key_secret)
    cred = plugin_manager.resolve_credentials("oss", oss_server.endpoint)
    assert cred is not None and cred.username == oss_server.access_key_id
    backend = make_backend(access_key_id="", access_key_secret="", context=BackendContext(plugins=plugin_manager))
    blob_id, path, _ = make_blob(tmp_path, 100)
    backend.put(blob_id, path)
    assert backend.exists(blob_id)


def test_without_any_credentials_requests_are_anonymous(make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("OSS_ACCESS_KEY_SECRET", raising=False)
    backend = make_backend(access_key_id="", access_key_secret="")
    with pytest.raises(AuthError, match="AccessDenied"):
        backend.exists("0" * 64)


def test_missing_crc_header_is_a_warning(
    make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend()
    blob_id, path, data = make_blob(tmp_path, BIG)
    monkeypatch.setattr(oss_server, "omit_crc", True)
    with caplog.at_level(logging.WARNING, logger="nydusify_oss"):
        backend.put(blob_id, path)
    assert "no x-oss-hash-crc64ecma" in caplog.text
    assert oss_server.object_data(oss_bucket, blob_id) == data


def test_object_crc_matches_the_sdk_helper(make_backend: MakeBackend, oss_server: OssServer, oss_bucket: str, tmp_path: Path) -> None:
    backend = make_backend()
    blob_id, path, data = make_blob(tmp_path, BIG)
    backend.put(blob_id, path)
    crc = oss2.utils.Crc64()
    crc.update(data)
    head = oss2.Bucket(oss2.Auth(oss_server.access_key_id, oss_server.access_key_secret), oss_server.endpoint, oss_bucket).head_object(blob_id)
    assert head.server_crc == crc.crc


def test_delete_of_absent_blob_is_not_found(make_backend: MakeBackend) -> None:
    with pytest.raises(NydusifyError, match="not found"):
        make_backend().delete("3" * 64)
