"""`check` against real converted images (OCI layouts): it passes on what `convert` makes,
and fails, naming the rule and the cause, on images tampered with after conversion."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from nydusify_core.checker import OUTPUT_FILES, CheckOptions, CheckReport, check
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import NydusifyError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.layout import OciLayout
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.testing.cli import run_cli
from nydusify_core.testing.images import flipped_layer_copy
from nydusify_core.testing.nydus import open_nydus_layout


def convert_to(source: str, out: Path, work: Path, **kw: Any) -> str:
    convert(ConvertOptions(source=source, target=f"oci:{out}:latest", work_dir=work, **kw))
    return f"oci:{out}:latest"


def run_check(target: str, work: Path, **kw: Any) -> CheckReport:
    return check(CheckOptions(target=target, work_dir=str(work), **kw))


def failed(report: CheckReport) -> dict[str, list[str]]:
    return {r.name: r.problems for r in report.rules if not r.passed}


@pytest.fixture(scope="module")
def converted(synthetic_image, tmp_path_factory) -> Path:
    """The synthetic image converted once; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("check-converted")
    convert_to(synthetic_image.ref, root / "nydus", root / "work")
    return root / "nydus"


@pytest.fixture
def copy(converted: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(converted, out)
    return out


def ref(layout: Path) -> str:
    return f"oci:{layout}:latest"


def edit_manifest(layout: Path, change: Callable[[dict], None]) -> None:
    """Rewrite the tagged manifest of `layout` with `change` and re-tag it."""
    oci = OciLayout(layout)
    root = oci.resolve("latest")
    manifest = json.loads(oci.read_blob(root))
    change(manifest)
    data = json.dumps(manifest).encode()
    desc = Descriptor.for_bytes(root.media_type, data)
    oci.write_blob_bytes(desc, data)
    oci.set_ref(desc, "latest")


def add_blob(layout: Path, media_type: str, data: bytes, **kw: Any) -> dict:
    desc = Descriptor.for_bytes(media_type, data, **kw)
    OciLayout(layout).write_blob_bytes(desc, data)
    return desc.to_json()


# --- passing ------------------------------------------------------------------------------


def test_converted_image_passes_every_rule_against_its_source(converted: Path, synthetic_image, tmp_path: Path) -> None:
    report = run_check(ref(converted), tmp_path / "out", source=synthetic_image.ref)
    assert report.ok, report.render()
    assert [r.name for r in report.rules] == ["manifest", "bootstrap", "filesystem", "data"]
    assert all(r.status == "passed" for r in report.rules)
    assert "files compared with the source" in report.rule("data").detail


def test_without_source_the_filesystem_rule_is_skipped(converted: Path, tmp_path: Path) -> None:
    report = run_check(ref(converted), tmp_path / "out")
    assert report.ok
    fs = report.rule("filesystem")
    assert fs.skipped and fs.passed and "--source" in fs.detail
    assert report.rule("data").status == "passed" and "chunks verified" in report.rule("data").detail


def test_work_dir_holds_the_manifests_configs_and_bootstrap(converted: Path, synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_check(ref(converted), out, source=synthetic_image.ref)
    for name in ("nydus_bootstrap", "nydus_bootstrap_debug.json", "nydus_config.json", "nydus_manifest.json", "oci_config.json", "oci_manifest.json"):
        assert (out / name).is_file(), name
    bs = read_bootstrap((out / "nydus_bootstrap").read_bytes())
    debug = json.loads((out / "nydus_bootstrap_debug.json").read_text())
    assert debug["blobs"] == [b.blob_id for b in bs.blobs]
    assert json.loads((out / "oci_config.json").read_text())["rootfs"]["diff_ids"] == [layer.diff_id for layer in synthetic_image.layers]
    assert set(p.name for p in out.iterdir()) <= set(OUTPUT_FILES)


def test_rafs_v5_lz4_image_passes(synthetic_image, tmp_path: Path) -> None:
    target = convert_to(synthetic_image.ref, tmp_path / "nydus", tmp_path / "work", fs_version=5, compressor="lz4_block")
    report = run_check(target, tmp_path / "out", source=synthetic_image.ref)
    assert report.ok, report.render()


def test_zstd_layers_source_passes(synthetic_zstd_image, tmp_path: Path) -> None:
    target = convert_to(synthetic_zstd_image.ref, tmp_path / "nydus", tmp_path / "work")
    assert run_check(target, tmp_path / "out", source=synthetic_zstd_image.ref).ok


@pytest.fixture(scope="module")
def multiarch_converted(multiarch_image, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("check-multiarch")
    convert_to(multiarch_image.ref, root / "all", root / "w1", all_platforms=True)
    convert_to(multiarch_image.ref, root / "merged", root / "w2", all_platforms=True, merge_platform=True)
    return root / "all", root / "merged"


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_each_platform_of_a_converted_index_passes(multiarch_converted, multiarch_image, platform: str, tmp_path: Path) -> None:
    report = run_check(ref(multiarch_converted[0]), tmp_path / "out", source=multiarch_image.ref, platform=platform)
    assert report.ok, report.render()
    assert report.platform == platform
    assert (tmp_path / "out" / "nydus_index.json").is_file() and (tmp_path / "out" / "oci_index.json").is_file()


def test_merged_index_passes_with_multi_platform(multiarch_converted, multiarch_image, tmp_path: Path) -> None:
    report = run_check(ref(multiarch_converted[1]), tmp_path / "out", source=multiarch_image.ref,
                       platform="linux/arm64", multi_platform=True)
    assert report.ok, report.render()


def test_merged_index_alone_compares_configs_with_its_oci_member(multiarch_converted, tmp_path: Path) -> None:
    report = run_check(ref(multiarch_converted[1]), tmp_path / "out", platform="linux/amd64", multi_platform=True)
    assert report.ok, report.render()
    assert (tmp_path / "out" / "oci_manifest.json").is_file()


def test_multi_platform_fails_on_an_index_without_oci_manifests(multiarch_converted, tmp_path: Path) -> None:
    report = run_check(ref(multiarch_converted[0]), tmp_path / "out", platform="linux/amd64", multi_platform=True)
    assert failed(report).keys() == {"manifest"}
    assert any("no OCI manifest" in p for p in report.rule("manifest").problems)


# --- tampered images fail, naming the cause -------------------------------------------------


def test_one_flipped_byte_in_a_blob_fails_the_data_rule(copy: Path, tmp_path: Path) -> None:
    nydus = open_nydus_layout(copy, tmp_path / "boot")
    chunk = max((c for _, n in nydus.bootstrap.walk() for c in n.chunks), key=lambda c: c.compressed_size)
    blob = nydus.bootstrap.blobs[chunk.blob_index].blob_id
    path = copy / "blobs" / "sha256" / blob
    data = bytearray(path.read_bytes())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x01
    path.unlink()  # the converted layout may hard-link blobs: never write through a link
    path.write_bytes(bytes(data))
    report = run_check(ref(copy), tmp_path / "out")
    assert failed(report).keys() == {"data"}
    problems = report.rule("data").problems
    assert any(blob in p and f"chunk at {chunk.compressed_offset}" in p for p in problems), problems
    assert any(blob in p and "digest mismatch" in p for p in problems), problems


def test_a_deleted_blob_fails_naming_it(copy: Path, tmp_path: Path) -> None:
    nydus = open_nydus_layout(copy, tmp_path / "boot")
    blob = nydus.bootstrap.blobs[0].blob_id
    (copy / "blobs" / "sha256" / blob).unlink()
    report = run_check(ref(copy), tmp_path / "out")
    assert "data" in failed(report)
    assert any(blob in p and "missing" in p for p in report.rule("data").problems), report.rule("data").problems


def test_a_wrong_fs_version_annotation_fails_the_manifest_rule(copy: Path, tmp_path: Path) -> None:
    def change(m: dict) -> None:
        m["layers"][-1]["annotations"][mt.ANNOTATION_FS_VERSION] = "5"

    edit_manifest(copy, change)
    report = run_check(ref(copy), tmp_path / "out")
    assert failed(report).keys() == {"manifest"}
    assert any("fs-version 5" in p and "RAFS v6" in p for p in report.rule("manifest").problems)


def test_a_blob_layer_without_its_annotation_fails_the_manifest_rule(copy: Path, tmp_path: Path) -> None:
    def change(m: dict) -> None:
        del m["layers"][0]["annotations"][mt.ANNOTATION_NYDUS_BLOB]

    edit_manifest(copy, change)
    report = run_check(ref(copy), tmp_path / "out")
    assert failed(report).keys() == {"manifest"}
    assert any("layer 0" in p and "not a Nydus blob layer" in p for p in report.rule("manifest").problems)


def test_a_manifest_pointing_at_the_wrong_config_fails(copy: Path, synthetic_image, tmp_path: Path) -> None:
    source_config = synthetic_image.blob_path(synthetic_image.manifest.config_digest).read_bytes()
    config = add_blob(copy, mt.OCI_CONFIG, source_config)

    def change(m: dict) -> None:
        m["config"] = config

    edit_manifest(copy, change)
    report = run_check(ref(copy), tmp_path / "out")
    assert failed(report).keys() == {"manifest"}
    assert any("diff_ids" in p and "wrong config" in p for p in report.rule("manifest").problems)


def test_a_missing_config_fails_the_manifest_rule(copy: Path, tmp_path: Path) -> None:
    def change(m: dict) -> None:
        m["config"]["digest"] = "sha256:" + "0" * 64

    edit_manifest(copy, change)
    report = run_check(ref(copy), tmp_path / "out")
    assert "manifest" in failed(report)
    assert any("config sha256:000" in p for p in report.rule("manifest").problems)


def _replace_bootstrap_layer(layout: Path, data: bytes) -> None:
    layer = add_blob(layout, mt.OCI_LAYER_GZIP, data)

    def change(m: dict) -> None:
        m["layers"][-1] = {**m["layers"][-1], "digest": layer["digest"], "size": layer["size"]}

    edit_manifest(layout, change)


def test_a_truncated_bootstrap_layer_fails_the_bootstrap_rule(copy: Path, tmp_path: Path) -> None:
    nydus = open_nydus_layout(copy, tmp_path / "boot")
    whole = (copy / "blobs" / "sha256" / nydus.manifest.layers[-1].hex).read_bytes()
    _replace_bootstrap_layer(copy, whole[: len(whole) // 2])
    report = run_check(ref(copy), tmp_path / "out")
    assert "bootstrap" in failed(report)
    assert any("truncated" in p for p in report.rule("bootstrap").problems), report.rule("bootstrap").problems
    assert report.rule("data").status == "failed"  # nothing to verify the blobs with
    assert not (tmp_path / "out" / "nydus_bootstrap").exists()


def test_a_garbage_bootstrap_fails_the_bootstrap_rule(copy: Path, tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("image/image.boot")
        junk = b"\x00not a bootstrap" * 512
        info.size = len(junk)
        tar.addfile(info, io.BytesIO(junk))
    _replace_bootstrap_layer(copy, gzip.compress(buf.getvalue()))
    report = run_check(ref(copy), tmp_path / "out")
    assert "bootstrap" in failed(report)
    assert any("invalid bootstrap" in p and "not a RAFS bootstrap" in p for p in report.rule("bootstrap").problems)


def test_a_bootstrap_of_another_image_fails_the_filesystem_rule(copy: Path, multiarch_converted, synthetic_image, tmp_path: Path) -> None:
    other = open_nydus_layout(multiarch_converted[0], tmp_path / "other", platform="linux/arm64")
    layer = (multiarch_converted[0] / "blobs" / "sha256" / other.manifest.layers[-1].hex).read_bytes()
    _replace_bootstrap_layer(copy, layer)
    report = run_check(ref(copy), tmp_path / "out", source=synthetic_image.ref)
    problems = report.rule("filesystem").problems
    assert report.rule("filesystem").status == "failed"
    assert any(p.startswith("missing in the Nydus image: /") for p in problems), problems


def test_a_non_nydus_target_fails_the_manifest_rule(synthetic_image, tmp_path: Path) -> None:
    report = run_check(synthetic_image.ref, tmp_path / "out")
    assert not report.ok
    assert any("not a Nydus image" in p for p in report.rule("manifest").problems)
    assert report.rule("bootstrap").status == "failed"


# --- command line -------------------------------------------------------------------------


def test_cli_exit_zero_and_one_line_per_rule(converted: Path, synthetic_image, tmp_path: Path) -> None:
    res = run_cli("check", "--target", ref(converted), "--source", synthetic_image.ref, "--work-dir", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["PASSED", "manifest:"], ["PASSED", "bootstrap:"], ["PASSED", "filesystem:"], ["PASSED", "data:"]]
    assert lines[-1].endswith(": OK")


def test_cli_json_report_and_non_zero_exit_on_failure(copy: Path, tmp_path: Path) -> None:
    nydus = open_nydus_layout(copy, tmp_path / "boot")
    (copy / "blobs" / "sha256" / nydus.bootstrap.blobs[-1].blob_id).unlink()
    res = run_cli("check", "--target", ref(copy), "--work-dir", tmp_path / "out", "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False
    assert {r["name"]: r["status"] for r in report["rules"]} == {"manifest": "passed", "bootstrap": "passed", "filesystem": "skipped", "data": "failed"}
    assert "Traceback" not in res.stderr and res.stderr.strip() == "nydusify: error: check failed: data"


def test_cli_unreadable_target_is_one_line(tmp_path: Path) -> None:
    res = run_cli("check", "--target", f"oci:{tmp_path / 'nothing'}:latest", "--work-dir", tmp_path / "out")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("nydusify: error:")


def test_cli_backend_config_without_type_is_a_usage_error(converted: Path, tmp_path: Path) -> None:
    res = run_cli("check", "--target", ref(converted), "--backend-config", "{}", "--work-dir", tmp_path / "out")
    assert res.returncode == 2 and "--backend-type" in res.stderr and "Traceback" not in res.stderr


def test_a_nydus_source_is_refused(converted: Path, tmp_path: Path) -> None:
    with pytest.raises(NydusifyError, match="is a Nydus image"):
        run_check(ref(converted), tmp_path / "out", source=ref(converted))


@pytest.mark.parametrize("name", ["synthetic-docker", "synthetic-uncompressed", "synthetic-docker-archive"])
def test_other_source_kinds_pass(name: str, tmp_path: Path) -> None:
    from nydusify_core.testing.images import get_image

    image = get_image(name)
    target = convert_to(image.ref, tmp_path / "nydus", tmp_path / "work")
    report = run_check(target, tmp_path / "out", source=image.ref)
    assert report.ok, report.render()


# --- hostile input --------------------------------------------------------------------------


def test_a_corrupt_source_layer_fails_the_filesystem_rule_naming_it(converted: Path, synthetic_image, tmp_path: Path) -> None:
    layer = synthetic_image.layers[1]
    source = flipped_layer_copy(synthetic_image, tmp_path / "source", layer=1)
    report = run_check(ref(converted), tmp_path / "out", source=source)
    problems = report.rule("filesystem").problems
    assert report.rule("filesystem").status == "failed"
    assert len(problems) == 1 and problems[0].startswith("source:") and layer.digest in problems[0], problems


def test_a_corrupt_index_json_is_one_line(copy: Path, tmp_path: Path) -> None:
    (copy / "index.json").write_text('{"schemaVersion": 2, "manifests": [{"digest": 7}]}')
    res = run_cli("check", "--target", ref(copy), "--work-dir", tmp_path / "out")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("nydusify: error:")


def test_an_unparsable_manifest_fails_the_manifest_rule(copy: Path, tmp_path: Path) -> None:
    data = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": 3}'
    desc = Descriptor.for_bytes(mt.OCI_MANIFEST, data)
    OciLayout(copy).write_blob_bytes(desc, data)
    OciLayout(copy).set_ref(desc, "latest")
    report = run_check(ref(copy), tmp_path / "out")
    assert report.rule("manifest").status == "failed"
    assert any("lacks a config descriptor" in p for p in report.rule("manifest").problems), report.render()
    assert report.rule("bootstrap").status == "failed"


def test_without_data_no_blob_is_read(copy: Path, synthetic_image, tmp_path: Path) -> None:
    nydus = open_nydus_layout(copy, tmp_path / "boot")
    (copy / "blobs" / "sha256" / nydus.bootstrap.blobs[0].blob_id).unlink()
    report = run_check(ref(copy), tmp_path / "out", source=synthetic_image.ref, check_data=False)
    assert report.ok, report.render()
    assert report.rule("data").skipped and report.rule("filesystem").status == "passed"
