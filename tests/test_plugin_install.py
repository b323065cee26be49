"""Discovery for real: install the example plugin distributions (a storage backend and a
stage-hook plugin), see them listed, and convert through them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nydusify-example-backend"
EXAMPLE_HOOK = ROOT / "examples" / "nydusify-example-hook"


def pip_install(source: Path, factory: pytest.TempPathFactory) -> Path:
    """`source` installed (not editable) into a private target directory, as a user would."""
    target = factory.mktemp("site")
    build_dir = factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300, cwd=build_dir,
    )
    return target


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example backend plugin, installed."""
    return pip_install(EXAMPLE, tmp_path_factory)


@pytest.fixture(scope="module")
def installed_hook_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example stage-hook plugin, installed."""
    return pip_install(EXAMPLE_HOOK, tmp_path_factory)


def nydusify(site: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **(env_extra or {})}
    for var in ("NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD", "NYDUSIFY_PLUGINS", "NYDUSIFY_DISABLE_PLUGINS", "NYDUS_HOOK_PLUGIN_PATH"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def layout_manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())


def test_installed_plugin_appears_in_plugins_json(installed_example: Path) -> None:
    result = nydusify(installed_example, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["name"] == "nydusify-example-backend")
    assert row["status"] == "loaded" and row["version"] == "0.1.0"
    assert row["provides"] == ["backend:sharded-dir"]


def test_broken_installed_plugin_is_listed_as_failed(installed_example: Path) -> None:
    module = installed_example / "nydusify_example_backend" / "__init__.py"
    original = module.read_text()
    module.write_text("raise ImportError('missing dependency for the example')\n")
    try:
        result = nydusify(installed_example, "plugins", "--all", "--json")
    finally:
        module.write_text(original)
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["name"] == "nydusify-example-backend")
    assert row["status"] == "failed" and "missing dependency" in row["error"]
    assert any(r["status"] == "builtin" for r in json.loads(result.stdout))


def test_conversion_stores_blobs_through_the_installed_backend(installed_example: Path, synthetic_image, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    result = nydusify(installed_example, "convert", "--json", "--source", synthetic_image.ref, "--target", f"oci:{tmp_path / 'out'}:latest",
                      "--work-dir", str(tmp_path / "work"), "--backend-type", "sharded-dir", "--backend-config", json.dumps({"dir": str(blobs)}))
    assert result.returncode == 0, result.stderr
    ids = [b["id"] for b in json.loads(result.stdout)["blobs"]]
    assert ids and all((blobs / i[:2] / i).is_file() for i in ids)


def test_installed_hook_plugin_appears_in_plugins_json(installed_hook_example: Path) -> None:
    result = nydusify(installed_hook_example, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["name"] == "nydusify-example-hook")
    assert row["status"] == "loaded" and row["version"] == "0.1.0"
    assert {"before_convert", "manifest_annotations", "before_push_manifest", "after_convert"} <= {h.removeprefix("nydusify_") for h in row["hooks"]}


def test_conversion_through_the_installed_hook_plugin_is_audited_and_annotated(installed_hook_example: Path, synthetic_image, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    out = tmp_path / "out"
    result = nydusify(installed_hook_example, "convert", "--json", "--source", synthetic_image.ref, "--target", f"oci:{out}:latest",
                      "--work-dir", str(tmp_path / "work"), env_extra={"NYDUSIFY_EXAMPLE_AUDIT_LOG": str(audit)})
    assert result.returncode == 0, result.stderr
    stages = [json.loads(line)["stage"] for line in audit.read_text().splitlines()]
    assert stages[0] == "before_convert" and stages[-3:] == ["before_push_manifest", "after_push_manifest", "after_convert"]
    assert stages.count("after_upload_blob") == len(json.loads(result.stdout)["blobs"])
    assert layout_manifest(out)["annotations"]["org.example.nydusify.audited-by"] == "nydusify-example-hook"


def test_installed_hook_plugin_vetoes_the_push_naming_itself(installed_hook_example: Path, synthetic_image, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = nydusify(installed_hook_example, "convert", "--source", synthetic_image.ref, "--target", f"oci:{out}:latest",
                      "--work-dir", str(tmp_path / "work"),
                      env_extra={"NYDUSIFY_EXAMPLE_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "NYDUSIFY_EXAMPLE_MAX_BLOBS": "1"})
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 1 and len(errors) == 1, result.stderr  # one line, no traceback
    assert "nydusify-example-hook" in errors[0] and "audit policy allows 1" in errors[0]
    assert json.loads((out / "index.json").read_text())["manifests"] == []
