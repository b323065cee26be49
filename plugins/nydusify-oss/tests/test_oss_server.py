"""The test kit's OSS server answers oss2 2.19 like OSS does: signatures, objects, multipart, listings."""

from __future__ import annotations

from pathlib import Path

import oss2
import pytest
import requests

from nydusify_core.testing.oss_server import OssServer, crc64_ecma


@pytest.fixture
def bucket(oss_server: OssServer, oss_bucket: str) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth(oss_server.access_key_id, oss_server.access_key_secret), oss_server.endpoint, oss_bucket)


def test_put_get_head_with_slashes_and_odd_characters(bucket: oss2.Bucket) -> None:
    key = "dir/sub dir/a+b%c~d"
    result = bucket.put_object(key, b"hello world")
    assert result.crc == crc64_ecma(b"hello world").crcValue
    assert bucket.get_object(key).read() == b"hello world"
    head = bucket.head_object(key)
    assert head.content_length == 11 and head.server_crc == result.crc
    assert head.etag == "5EB63BBBE01EEED093CB22BB8F5ACDC3"  # upper-case MD5, as OSS


def test_wrong_secret_is_signature_does_not_match(oss_server: OssServer, oss_bucket: str) -> None:
    bad = oss2.Bucket(oss2.Auth(oss_server.access_key_id, "wrong"), oss_server.endpoint, oss_bucket)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as info:
        bad.put_object("k", b"x")
    assert info.value.status == 403
    with pytest.raises(oss2.exceptions.ServerError) as head_info:  # HEAD: the error comes in x-oss-err
        bad.head_object("k")
    assert head_info.value.code == "SignatureDoesNotMatch"


def test_unsigned_request_is_denied(oss_server: OssServer, oss_bucket: str) -> None:
    response = requests.get(f"{oss_server.endpoint}/{oss_bucket}/k")
    assert response.status_code == 403 and b"<Code>AccessDenied</Code>" in response.content


def test_signed_url_works(bucket: oss2.Bucket) -> None:
    bucket.put_object("k", b"data")
    assert requests.get(bucket.sign_url("GET", "k", 60)).content == b"data"


def test_ranges_follow_oss_rules(bucket: oss2.Bucket) -> None:
    bucket.put_object("k", b"0123456789")
    assert bucket.get_object("k", byte_range=(2, 4)).read() == b"234"
    assert bucket.get_object("k", byte_range=(7, 20)).read() == b"0123456789"  # legacy: whole object
    standard = {"x-oss-range-behavior": "standard"}
    assert bucket.get_object("k", byte_range=(7, 20), headers=standard).read() == b"789"
    with pytest.raises(oss2.exceptions.ServerError) as info:
        bucket.get_object("k", byte_range=(10, 20), headers=standard)
    assert info.value.status == 416


def test_resumable_upload_with_parallel_parts(bucket: oss2.Bucket, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1400  # 350 KiB: four parts of 100 KiB
    source = tmp_path / "f"
    source.write_bytes(data)
    oss2.resumable_upload(
        bucket, "big", str(source), store=oss2.ResumableStore(root=str(tmp_path)),
        multipart_threshold=100 * 1024, part_size=100 * 1024, num_threads=2,
    )
    assert bucket.get_object("big").read() == data
    assert bucket.head_object("big").object_type == "Multipart"


def test_small_parts_are_rejected_at_completion(bucket: oss2.Bucket) -> None:
    upload_id = bucket.init_multipart_upload("k").upload_id
    parts = [oss2.models.PartInfo(n, bucket.upload_part("k", upload_id, n, b"x" * 10).etag) for n in (1, 2)]
    with pytest.raises(oss2.exceptions.ServerError) as info:
        bucket.complete_multipart_upload("k", upload_id, parts)
    assert info.value.code == "EntityTooSmall"
    bucket.abort_multipart_upload("k", upload_id)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.list_parts("k", upload_id)


def test_list_parts_pages_with_next_marker(bucket: oss2.Bucket) -> None:
    upload_id = bucket.init_multipart_upload("k").upload_id
    for n in range(1, 6):
        bucket.upload_part("k", upload_id, n, b"p")
    first = bucket.list_parts("k", upload_id, max_parts=2)
    assert [p.part_number for p in first.parts] == [1, 2] and first.is_truncated and first.next_marker == "2"
    assert [p.part_number for p in oss2.PartIterator(bucket, "k", upload_id, max_parts=2)] == [1, 2, 3, 4, 5]
    assert [u.upload_id for u in oss2.MultipartUploadIterator(bucket)] == [upload_id]
    bucket.abort_multipart_upload("k", upload_id)


def test_listings_v1_and_v2_page_and_group(bucket: oss2.Bucket) -> None:
    keys = ["a/1", "a/2", "b", "c/x/y", "d"]
    for key in keys:
        bucket.put_object(key, b"")
    assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=2)] == keys
    assert [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=2)] == keys
    grouped = [o.key for o in oss2.ObjectIteratorV2(bucket, delimiter="/", max_keys=1)]
    assert grouped == ["a/", "b", "c/", "d"]
    assert [o.key for o in oss2.ObjectIterator(bucket, prefix="c/")] == ["c/x/y"]


def test_buckets_can_be_created_and_inspected(oss_server: OssServer) -> None:
    auth = oss2.Auth(oss_server.access_key_id, oss_server.access_key_secret)
    bucket = oss2.Bucket(auth, oss_server.endpoint, "made-by-the-sdk")
    bucket.create_bucket()
    assert bucket.get_bucket_info().name == "made-by-the-sdk"
    assert "made-by-the-sdk" in [b.name for b in oss2.BucketIterator(oss2.Service(auth, oss_server.endpoint))]
    bucket.delete_bucket()


def test_injected_failures_are_bounded(bucket: oss2.Bucket, oss_server: OssServer, oss_bucket: str) -> None:
    bucket.put_object("k", b"v")
    oss_server.inject_failure(op="GetObject", bucket=oss_bucket, count=1, mode="drop")
    oss_server.inject_failure(op="GetObject", bucket=oss_bucket, count=1, status=503, code="ServiceUnavailable")
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.get_object("k")
    with pytest.raises(oss2.exceptions.ServerError) as info:
        bucket.get_object("k")
    assert info.value.status == 503
    assert bucket.get_object("k").read() == b"v"


def test_objects_are_stored_as_files_under_the_root(oss_server: OssServer, bucket: oss2.Bucket) -> None:
    bucket.put_object("k", b"stored")
    assert any(p.read_bytes() == b"stored" for p in (oss_server.root / "objects").iterdir() if p.is_file())
