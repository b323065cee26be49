"""`check` against real registries: images converted registry -> registry pass every rule
(blobs read from the target repository), merged indexes pass with `--multi-platform`, and
a manifest re-pushed with the wrong config fails the manifest rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.checker import CheckOptions, check
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import NydusifyError
from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.images import BuiltImage, push_image
from nydusify_core.testing.servers import RegistryServer, unique_name


def convert_registry(source: str, target: str, work: Path, **kw) -> None:
    convert(ConvertOptions(source=source, target=target, work_dir=work, **kw))


@pytest.fixture
def repo() -> str:
    return unique_name("check")


@pytest.fixture
def converted(registry_plain: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> tuple[str, str]:
    source, target = f"{registry_plain.host}/{repo}:v1", f"{registry_plain.host}/{repo}:v1-nydus"
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    convert_registry(source, target, tmp_path / "convert", plain_http=True)
    return source, target


def test_registry_image_passes_every_rule(converted: tuple[str, str], tmp_path: Path) -> None:
    source, target = converted
    report = check(CheckOptions(target=target, source=source, plain_http=True, work_dir=str(tmp_path / "out")))
    assert report.ok, report.render()
    assert "3 blobs" in report.rule("data").detail and "files compared" in report.rule("data").detail


def test_merged_index_in_a_registry_passes_with_multi_platform(registry_plain: RegistryServer, multiarch_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(multiarch_image, registry_plain.host, f"{repo}:multi")
    source, target = f"{registry_plain.host}/{repo}:multi", f"{registry_plain.host}/{repo}:merged"
    convert_registry(source, target, tmp_path / "convert", plain_http=True, all_platforms=True, merge_platform=True)
    report = check(CheckOptions(target=target, source=source, plain_http=True, platform="linux/arm64",
                                multi_platform=True, work_dir=str(tmp_path / "out")))
    assert report.ok, report.render()


def test_tls_registry_with_insecure_flags(registry_tls: RegistryServer, synthetic_image: BuiltImage, repo: str, tmp_path: Path) -> None:
    push_image(synthetic_image, registry_tls.host, f"{repo}:v1")
    source, target = f"{registry_tls.host}/{repo}:v1", f"{registry_tls.host}/{repo}:v1-nydus"
    convert_registry(source, target, tmp_path / "convert", source_insecure=True, target_insecure=True)
    report = check(CheckOptions(target=target, source=source, source_insecure=True, target_insecure=True, work_dir=str(tmp_path / "out")))
    assert report.ok, report.render()


def test_manifest_pushed_with_the_wrong_config_fails(registry_plain: RegistryServer, converted: tuple[str, str], repo: str, tmp_path: Path) -> None:
    source, target = converted
    session = registry_plain.session()
    base = f"{registry_plain.url}/v2/{repo}/manifests"
    src = session.get(f"{base}/v1", headers={"Accept": mt.OCI_MANIFEST}, timeout=10).json()
    nydus = session.get(f"{base}/v1-nydus", headers={"Accept": mt.OCI_MANIFEST}, timeout=10).json()
    nydus["config"] = src["config"]  # the source's config, which the repository has
    response = session.put(f"{base}/v1-nydus", data=json.dumps(nydus), headers={"Content-Type": mt.OCI_MANIFEST}, timeout=10)
    response.raise_for_status()
    report = check(CheckOptions(target=target, source=source, plain_http=True, work_dir=str(tmp_path / "out")))
    assert not report.rule("manifest").passed
    assert any("wrong config" in p for p in report.rule("manifest").problems), report.render()


def test_cli_json_against_the_registry(converted: tuple[str, str], tmp_path: Path) -> None:
    source, target = converted
    res = subprocess.run([sys.executable, "-m", "nydusify_core.cli", "check", "--target", target, "--source", source, "--plain-http",
                          "--work-dir", str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True
    assert (tmp_path / "out" / "nydus_manifest.json").is_file() and (tmp_path / "out" / "oci_manifest.json").is_file()


def test_missing_tag_cannot_run_and_raises(registry_plain: RegistryServer, repo: str, tmp_path: Path) -> None:
    with pytest.raises(NydusifyError) as info:
        check(CheckOptions(target=f"{registry_plain.host}/{repo}:absent", plain_http=True, work_dir=str(tmp_path / "out")))
    assert "\n" not in str(info.value)
