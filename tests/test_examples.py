"""The scripts in examples/ run as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_converter_example_converts_the_bundled_image_into_an_oci_layout(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "converter.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["source"] == f"oci:{tmp_path / 'source'}:latest" and result["target"] == f"oci:{tmp_path / 'nydus'}:latest"
    index = json.loads((tmp_path / "nydus" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == result["digest"]
    assert len(result["blobs"]) == 2  # the example image has two layers


def test_converter_example_reports_errors_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "converter.py"), "--out", str(tmp_path),
                          "--source", f"oci:{tmp_path / 'missing'}:latest"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith("converter: ") and run.stderr.count("\n") == 1
