"""`convert --backend-type oss|s3`: blobs go to object storage (`object_prefix + blob id`),
the OCI layout gets a manifest listing only the bootstrap (§1.6), and every file reads
back through the backend (`unpack --backend-type`, ranged reads) equal to the source rootfs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import AuthError
from nydusify_core.testing.cli import run_cli
from nydusify_core.testing.images import expected_rootfs
from nydusify_core.testing.servers import BACKEND_OBJECT_PREFIX
from nydusify_core.testing.nydus import open_nydus_layout
from nydusify_core.testing.trees import diff_trees, snapshot

# as in tests/test_convert.py: what a Nydus image does not keep, by design
IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}
PREFIX = BACKEND_OBJECT_PREFIX


def convert_to(source: str, out: Path, work: Path, backend_type: str, config: dict, **kw) -> dict:
    options = ConvertOptions(source=source, target=f"oci:{out}:latest", work_dir=work,
                             backend_type=backend_type, backend_config=config, **kw)
    return convert(options).to_json()


@pytest.fixture(params=["oss", "s3"])
def backend(request) -> tuple[str, dict]:
    return request.param, request.getfixturevalue(f"{request.param}_backend_config")


def test_every_file_reads_back_through_the_backend(synthetic_image, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    out = tmp_path / "nydus"
    result = convert_to(synthetic_image.ref, out, tmp_path / "work", backend_type, config)
    nydus = open_nydus_layout(out, tmp_path / "boot")
    assert len(nydus.manifest.layers) == 1  # only the bootstrap layer (§1.6)
    assert {b.blob_id for b in nydus.bootstrap.blobs} <= {b["id"] for b in result["blobs"]}
    res = run_cli("unpack", "--bootstrap", nydus.bootstrap_path, "--backend-type", backend_type,
                  "--backend-config", json.dumps(config), "--output", tmp_path / "unpacked", timeout=600)
    assert res.returncode == 0, res.stderr
    diffs = diff_trees(snapshot(expected_rootfs(synthetic_image)), snapshot(tmp_path / "unpacked"), ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def test_blobs_are_objects_named_prefix_plus_blob_id(synthetic_image, tmp_path: Path, oss_server, oss_backend_config) -> None:
    result = convert_to(synthetic_image.ref, tmp_path / "nydus", tmp_path / "work", "oss", oss_backend_config)
    keys = set(oss_server.object_keys(oss_backend_config["bucket_name"]))
    assert keys == {PREFIX + b["id"] for b in result["blobs"]}


def test_existing_blobs_are_skipped_unless_forced(synthetic_image, tmp_path: Path, oss_server, oss_backend_config) -> None:
    bucket = oss_backend_config["bucket_name"]
    result = convert_to(synthetic_image.ref, tmp_path / "a", tmp_path / "wa", "oss", oss_backend_config)
    blobs = len(result["blobs"])
    assert oss_server.ops(bucket).count("PutObject") == blobs

    oss_server.reset_stats()
    convert_to(synthetic_image.ref, tmp_path / "b", tmp_path / "wb", "oss", oss_backend_config)
    assert oss_server.ops(bucket).count("PutObject") == 0
    assert oss_server.ops(bucket).count("HeadObject") >= blobs

    oss_server.reset_stats()
    convert_to(synthetic_image.ref, tmp_path / "c", tmp_path / "wc", "oss", oss_backend_config, backend_force_push=True)
    assert oss_server.ops(bucket).count("PutObject") == blobs


def test_wrong_secret_fails_with_an_auth_error_naming_no_secret(synthetic_image, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    wrong = "NotTheSecret0123456789abcdef"
    with pytest.raises(AuthError) as info:
        convert_to(synthetic_image.ref, tmp_path / "nydus", tmp_path / "work", backend_type, {**config, "access_key_secret": wrong})
    assert wrong not in str(info.value) and config["access_key_secret"] not in str(info.value)


def test_cli_wrong_secret_is_one_line(synthetic_image, tmp_path: Path, oss_backend_config) -> None:
    wrong = "NotTheSecret0123456789abcdef"
    res = run_cli("convert", "--source", synthetic_image.ref, "--target", f"oci:{tmp_path / 'out'}:latest", "--backend-type", "oss",
                  "--backend-config", json.dumps({**oss_backend_config, "access_key_secret": wrong}), timeout=600)
    errors = [line for line in res.stderr.splitlines() if line.startswith("nydusify: ")]
    assert res.returncode != 0 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == errors[0]  # progress lines before it are INFO logs
    assert "403" in errors[0] and "access_key_secret" in errors[0]
    assert wrong not in res.stderr and oss_backend_config["access_key_secret"] not in res.stderr
