"""The package API: `convert`, `pack`, `check` and their option records, importable from
`nydusify_core`, documented, and doing what the matching commands do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nydusify_core
from nydusify_core import ConvertOptions, PackOptions, PackResult, convert, pack
from nydusify_core.errors import NotFoundError, UsageError

PUBLIC = ("convert", "ConvertOptions", "ConvertResult", "pack", "PackOptions", "PackResult", "check", "CheckOptions", "CheckReport")


def layout_manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_text())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("api\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 64)
    return root


def test_import_nydusify_core_loads_no_pipeline() -> None:
    code = "import sys, nydusify_core; print(sorted(m for m in sys.modules if m.startswith('nydusify_core.')))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.replace("'", '"'))
    assert loaded == ["nydusify_core.hookspecs"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_importable_and_documented(name: str) -> None:
    value = getattr(nydusify_core, name)
    assert name in nydusify_core.__all__ and name in dir(nydusify_core)
    assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_the_option_records_are_the_ones_the_commands_use() -> None:
    from nydusify_core.checker import runner
    from nydusify_core.conversion import options

    assert nydusify_core.ConvertOptions is options.ConvertOptions
    assert nydusify_core.CheckOptions is runner.CheckOptions


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nydusify_core.nope  # noqa: B018


def test_convert_writes_a_nydus_image(synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "nydus"
    result = convert(ConvertOptions(source=synthetic_image.ref, target=f"oci:{out}:latest", work_dir=str(tmp_path / "work")))
    manifest = layout_manifest(out)
    assert result.descriptor is not None and result.to_json()["digest"] == result.descriptor.digest
    assert [b.id for b in result.blobs] == [layer["digest"].split(":")[1] for layer in manifest["layers"][:-1]]
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_convert_options_are_validated_when_made() -> None:
    with pytest.raises(UsageError, match="fs-version"):
        ConvertOptions(source="oci:/a", target="oci:/b", fs_version=4)


def test_pack_gives_what_the_pack_command_gives(tree: Path, tmp_path: Path) -> None:
    result = pack(PackOptions(source_dir=str(tree), name="app.meta", output_dir=tmp_path / "api", repeatable=True))
    assert isinstance(result, PackResult)
    assert result.bootstrap == tmp_path / "api" / "app.meta" and result.blob == tmp_path / "api" / "app.blob"
    assert result.fs_version == 6 and result.files == 2 and result.blob_size == result.blob.stat().st_size
    cli = subprocess.run(
        [sys.executable, "-m", "nydusify_core.cli", "pack", "--json", "--repeatable", "--source-dir", str(tree), "--name", "app.meta",
         "--output-dir", str(tmp_path / "cli")], capture_output=True, text=True, check=True,
    )
    from_cli = json.loads(cli.stdout)
    assert (tmp_path / "cli" / "app.meta").read_bytes() == result.bootstrap.read_bytes()
    assert from_cli["blob_id"] == result.blob_id == result.to_json()["blob_id"]


def test_pack_pushes_to_an_object_store(tree: Path, tmp_path: Path, s3_server, s3_bucket) -> None:
    config = {
        "endpoint": s3_server.host, "scheme": "http", "region": s3_server.region, "bucket_name": s3_bucket,
        "access_key_id": s3_server.access_key_id, "access_key_secret": s3_server.secret_access_key,
        "meta_prefix": "meta/", "blob_prefix": "blobs/",
    }
    result = pack(PackOptions(source_dir=tree, name="app.meta", output_dir=tmp_path / "out", backend_type="s3", backend_config=config))
    assert result.backend is not None and result.backend["bootstrap_url"].endswith("meta/app.meta")
    assert [b["id"] for b in result.backend["blobs"]] == [result.blob_id]
    assert result.blob == tmp_path / "out" / result.blob_id  # named by id once pushed, as the CLI does
    assert "access_key_secret" not in repr(PackOptions(source_dir=tree, name="x", backend_config=config))


def test_pack_refuses_bad_input_naming_it(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist or is not a directory"):
        pack(PackOptions(source_dir=tmp_path / "missing", name="x", output_dir=tmp_path / "out"))
    with pytest.raises(NotFoundError, match="parent_bootstrap"):
        pack(PackOptions(source_dir=tree, name="x", output_dir=tmp_path / "out", parent_bootstrap=tmp_path / "none"))
    with pytest.raises(UsageError, match="needs backend_config"):
        pack(PackOptions(source_dir=tree, name="x", output_dir=tmp_path / "out", backend_type="s3"))


def test_check_reports_on_a_converted_image(synthetic_image, tmp_path: Path) -> None:
    from nydusify_core import CheckOptions, CheckReport, check

    out = tmp_path / "nydus"
    convert(ConvertOptions(source=synthetic_image.ref, target=f"oci:{out}:latest", work_dir=tmp_path / "work"))
    report = check(CheckOptions(target=f"oci:{out}:latest", source=synthetic_image.ref, work_dir=tmp_path / "check"))
    assert isinstance(report, CheckReport)
    assert report.ok, report.render()
    assert {r["name"] for r in report.to_json()["rules"]} >= {"manifest", "bootstrap"}
