"""Discovery for real: install the example plugin distribution and see it listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nydusify-example-backend"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed (not editable) into a private target directory."""
    target = tmp_path_factory.mktemp("site")
    build_dir = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300, cwd=build_dir,
    )
    return target


def nydusify(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for var in ("NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD", "NYDUSIFY_PLUGINS", "NYDUSIFY_DISABLE_PLUGINS"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *args], capture_output=True, text=True, env=env, timeout=60)


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
