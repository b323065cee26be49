"""`check` of images whose blobs live in OSS, S3 or a local directory (`convert --backend-type`): the manifest
lists only the bootstrap, so the data rule reads the blobs through `--backend-type` /
`--backend-config` and fails, naming the blob, when one is missing or altered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.checker import CheckOptions, check
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.testing.nydus import open_nydus_layout



@pytest.fixture
def localfs_backend_config(tmp_path: Path) -> dict:
    return {"dir": str(tmp_path / "blobs")}


@pytest.fixture(params=["oss", "s3", "localfs"])
def converted(request, synthetic_image, tmp_path: Path) -> tuple[str, str, dict]:
    """(target ref, backend type, backend config) of the synthetic image converted to a backend."""
    backend_type = request.param
    config = request.getfixturevalue(f"{backend_type}_backend_config")
    out = tmp_path / "nydus"
    convert(ConvertOptions(source=synthetic_image.ref, target=f"oci:{out}:latest", work_dir=tmp_path / "work",
                           backend_type=backend_type, backend_config=config))
    return f"oci:{out}:latest", backend_type, config


def run_check(target: str, work: Path, backend_type: str = "", config: dict | None = None, **kw):
    return check(CheckOptions(target=target, work_dir=str(work), backend_type=backend_type,
                              backend_config=json.dumps(config) if config else None, **kw))


def test_every_rule_passes_with_the_backend(converted, synthetic_image, tmp_path: Path) -> None:
    target, backend_type, config = converted
    report = run_check(target, tmp_path / "out", backend_type, config, source=synthetic_image.ref)
    assert report.ok, report.render()
    assert "chunks verified" in report.rule("data").detail


def test_without_backend_flags_blobs_are_not_read(converted, tmp_path: Path) -> None:
    target, _, _ = converted
    report = run_check(target, tmp_path / "out")
    assert report.ok, report.render()
    data = report.rule("data")
    assert data.skipped and "--backend-type" in data.detail


def test_a_deleted_object_fails_bootstrap_and_data_naming_the_blob(converted, tmp_path: Path, synthetic_image) -> None:
    target, backend_type, config = converted
    nydus = open_nydus_layout(target[4:].rsplit(":", 1)[0], tmp_path / "boot")
    blob = nydus.bootstrap.blobs[0].blob_id
    from nydusify_core.plugins import create_plugin_manager, parse_backend_config
    from nydusify_core.types import BackendContext

    spec = create_plugin_manager().backend(backend_type)
    backend = spec.create(parse_backend_config(spec, config), BackendContext())
    backend.delete(blob)
    backend.close()
    report = run_check(target, tmp_path / "out", backend_type, config)
    assert not report.ok
    assert any(blob in p for p in report.rule("bootstrap").problems), report.render()
    assert any(blob in p for p in report.rule("data").problems), report.render()


def test_cli_with_backend_config_file(converted, tmp_path: Path) -> None:
    target, backend_type, config = converted
    cfg = tmp_path / "backend.json"
    cfg.write_text(json.dumps(config))
    res = subprocess.run([sys.executable, "-m", "nydusify_core.cli", "check", "--target", target, "--backend-type", backend_type,
                          "--backend-config-file", str(cfg), "--work-dir", str(tmp_path / "out"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True
