"""A conversion killed at any stage leaves no tag; running the command again starts clean and
produces the same image as an uninterrupted run.

The crash is real: a stage hook SIGKILLs its own process (no cleanup code runs).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CRASHING_CONVERT = """
import os, signal, sys
from nydusify_core import hookimpl
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.plugins import create_plugin_manager

stage, source, target, work = sys.argv[1:]

class Crash:
    def __getattr__(self, name):
        raise AttributeError(name)

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

setattr(Crash, stage, hookimpl(crash))
plugins = create_plugin_manager()
plugins.pm.register(Crash(), name="crash")
convert(ConvertOptions(source=source, target=target, work_dir=work), plugins)
"""

STAGES = [
    "nydusify_after_build_layer",
    "nydusify_after_upload_blob",
    "nydusify_before_push_manifest",
]


def manifests(layout: Path) -> list[dict]:
    index = layout / "index.json"
    return json.loads(index.read_text())["manifests"] if index.exists() else []


def nydusify_convert(source: str, target: str, work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nydusify_core.cli", "--log-level", "warning", "convert",
         "--source", source, "--target", target, "--work-dir", str(work)],
        capture_output=True, text=True,
    )


@pytest.fixture(scope="module")
def clean_run(synthetic_image, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("clean")
    res = nydusify_convert(synthetic_image.ref, f"oci:{root / 'out'}:latest", root / "work")
    assert res.returncode == 0, res.stderr
    [manifest] = manifests(root / "out")
    return manifest


@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_conversion_leaves_no_tag_and_a_rerun_matches_a_clean_run(
    stage: str, synthetic_image, clean_run: dict, tmp_path: Path,
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    target = f"oci:{out}:latest"
    killed = subprocess.run([sys.executable, "-c", CRASHING_CONVERT, stage, synthetic_image.ref, target, str(work)],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert manifests(out) == []
    assert any(work.iterdir()), "the killed run should have left its scratch dir behind"

    res = nydusify_convert(synthetic_image.ref, target, work)
    assert res.returncode == 0, res.stderr
    assert manifests(out) == [clean_run]
    assert not work.exists() or not any(work.iterdir()), "the crashed run's scratch dir was not removed"
