"""`pack --backend-push` uploads blobs in upstream pack's 200 MiB multipart parts, not in
convert's 500 MiB ones (nydus-image-spec.md §3.2-§3.3).

A blob just over 200 MiB (uncompressible data, `--compressor none`) is pushed to the
loopback OSS and S3 servers; both give a multipart object's ETag the part count as a
`-N` suffix, so the object itself says how it was uploaded. Slow: ~200 MiB per backend.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.commands.pack import PACK_PART_SIZE

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pack-parts") / "tree"
    root.mkdir()
    rng = random.Random(200)
    with open(root / "big", "wb") as out:
        for _ in range(PACK_PART_SIZE // MiB + 1):  # one part and one MiB
            out.write(rng.randbytes(MiB))
    return root


def push(tree: Path, out: Path, backend_type: str, config: dict) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "nydusify_core.cli", "pack", "--source-dir", str(tree), "--output-dir", str(out),
         "--name", "big.meta", "--compressor", "none", "--backend-push", "--backend-type", backend_type,
         "--backend-config", json.dumps(config), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_pack_part_size_is_upstream_packs() -> None:
    assert PACK_PART_SIZE == 200 * MiB


def test_oss_blob_goes_up_in_200_mib_parts(big_tree: Path, tmp_path: Path, oss_server, oss_bucket) -> None:
    config = {"endpoint": oss_server.endpoint, "bucket_name": oss_bucket, "access_key_id": oss_server.access_key_id,
              "access_key_secret": oss_server.access_key_secret, "meta_prefix": "meta/", "blob_prefix": "blobs/"}
    result = push(big_tree, tmp_path / "out", "oss", config)
    [blob] = result["backend"]["blobs"]
    assert blob["uploaded"]
    assert oss_server.ops(oss_bucket).count("UploadPart") == 2
    import oss2

    bucket = oss2.Bucket(oss2.Auth(oss_server.access_key_id, oss_server.access_key_secret), oss_server.endpoint, oss_bucket)
    head = bucket.head_object(f"blobs/{blob['id']}")
    assert head.content_length > PACK_PART_SIZE
    assert head.headers["x-oss-object-type"] == "Multipart" and head.etag.endswith("-2")


def test_s3_blob_goes_up_in_200_mib_parts(big_tree: Path, tmp_path: Path, s3_server, s3_bucket) -> None:
    config = {"endpoint": s3_server.host, "scheme": "http", "region": s3_server.region, "bucket_name": s3_bucket,
              "access_key_id": s3_server.access_key_id, "access_key_secret": s3_server.secret_access_key,
              "meta_prefix": "meta/", "blob_prefix": "blobs/"}
    result = push(big_tree, tmp_path / "out", "s3", config)
    [blob] = result["backend"]["blobs"]
    assert blob["uploaded"]
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"blobs/{blob['id']}")
    assert head["ContentLength"] > PACK_PART_SIZE
    assert head["ETag"].strip('"').endswith("-2")
