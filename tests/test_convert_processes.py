"""Layers built in worker processes (large images, `layer_processes`) give exactly the image
built in threads, and a worker's failure is the same one-line error, whether the workers
were forked (a single-threaded caller) or started as new interpreters."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core import hookimpl
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.conversion.layerproc import ENV_START, WORKER_NAME
from nydusify_core.errors import FormatError, IntegrityError, NydusifyError
from nydusify_core.testing.imagebuild.ocidir import one_layer_layout
from nydusify_core.testing.images import flipped_layer_copy


def layer_workers() -> list[int]:
    """Pids of this process's layer worker children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        name, rest = stat.split(b" (", 1)[1].rsplit(b")", 1)
        if int(rest.split()[1]) == os.getpid() and name == WORKER_NAME:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True, params=["fork", "exec"])
def start_method(request, monkeypatch) -> str:
    """Each test runs with forked workers (where this process has one thread) and exec'd ones."""
    if request.param == "exec":
        monkeypatch.setenv(ENV_START, "exec")
    else:
        monkeypatch.delenv(ENV_START, raising=False)
    return request.param


def worker_cmdlines() -> list[bytes]:
    return [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in layer_workers()]


def run(source: str, out: Path, work: Path, plugins=None, **kw) -> str:
    options = ConvertOptions(source=source, target=f"oci:{out}:latest", work_dir=work, workers=2, **kw)
    result = convert(options, plugins)
    assert result.descriptor is not None
    return result.descriptor.digest


@pytest.mark.parametrize("fixture", ["synthetic_image", "multiarch_image"])
def test_worker_processes_build_the_same_image_as_threads(fixture: str, request, tmp_path: Path) -> None:
    image = request.getfixturevalue(fixture)
    extra = {"all_platforms": True} if fixture == "multiarch_image" else {}
    in_threads = run(image.ref, tmp_path / "threads", tmp_path / "w1", layer_processes=False, **extra)
    in_processes = run(image.ref, tmp_path / "processes", tmp_path / "w2", layer_processes=True, **extra)
    assert in_processes == in_threads
    assert sorted(os.listdir(tmp_path / "processes" / "blobs" / "sha256")) == sorted(os.listdir(tmp_path / "threads" / "blobs" / "sha256"))
    assert layer_workers() == []  # stopped at the end


def test_small_images_build_in_threads(synthetic_image, tmp_path: Path, plugin_manager, register_plugin) -> None:
    seen: list[list[int]] = []

    class Spy:
        @hookimpl
        def nydusify_before_build_layer(self, ctx, layer) -> None:
            seen.append(layer_workers())

    register_plugin(Spy())
    run(synthetic_image.ref, tmp_path / "out", tmp_path / "work", plugin_manager)
    assert seen and all(pids == [] for pids in seen)


def truncated_gzip(image, root: Path) -> str:
    """An image whose one layer is a gzip stream cut short, listed under its own digest:
    only inflating it (in the worker) finds the fault."""
    tar = gzip.decompress((image.path / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]).read_bytes())
    return one_layer_layout(root, gzip.compress(tar, mtime=0)[:-100], "sha256:" + hashlib.sha256(tar).hexdigest())


@pytest.mark.parametrize("make, error", [(flipped_layer_copy, IntegrityError), (truncated_gzip, FormatError)])
def test_a_bad_layer_fails_the_same_way_in_a_worker(make, error, synthetic_image, tmp_path: Path) -> None:
    source = make(synthetic_image, tmp_path / "src")
    errors = []
    for mode in (False, True):
        with pytest.raises(NydusifyError) as info:
            run(source, tmp_path / f"out-{mode}", tmp_path / f"work-{mode}", layer_processes=mode)
        errors.append((type(info.value), str(info.value)))
        index = tmp_path / f"out-{mode}" / "index.json"
        assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    assert errors[0] == errors[1]
    assert errors[1][0] is error


def test_a_worker_that_dies_fails_its_layer_in_one_line(synthetic_image, tmp_path: Path, plugin_manager, register_plugin) -> None:
    class Killer:
        @hookimpl
        def nydusify_before_build_layer(self, ctx, layer) -> None:
            for pid in layer_workers():
                os.kill(pid, signal.SIGKILL)

    register_plugin(Killer())
    with pytest.raises(NydusifyError, match=r"layer \d+ \(sha256:[0-9a-f]+\): the layer worker process died") as info:
        run(synthetic_image.ref, tmp_path / "out", tmp_path / "work", plugin_manager, layer_processes=True)
    assert "\n" not in str(info.value)
    assert layer_workers() == []
    assert not (tmp_path / "work").exists()


_FORK_PROBE = """
import sys, threading
from pathlib import Path
from nydusify_core import hookimpl
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.plugins import create_plugin_manager
from test_convert_processes import worker_cmdlines

class Spy:
    @hookimpl
    def nydusify_before_build_layer(self, ctx, layer):
        for cmdline in worker_cmdlines():
            print("fork" if cmdline == Path("/proc/self/cmdline").read_bytes() else "exec")

if sys.argv[3] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
plugins = create_plugin_manager()
plugins.pm.register(Spy())
convert(ConvertOptions(source=sys.argv[1], target=f"oci:{sys.argv[2]}:latest", workers=2, layer_processes=True), plugins)
"""


@pytest.mark.parametrize("threads, expected", [("one", "fork"), ("thread", "exec")])
def test_workers_are_forked_only_from_a_single_threaded_process(threads: str, expected: str, start_method: str,
                                                               synthetic_image, tmp_path: Path) -> None:
    """Run in a fresh interpreter: this test process may already run server threads."""
    probe = subprocess.run(
        [sys.executable, "-c", _FORK_PROBE, synthetic_image.ref, str(tmp_path / "out"), threads],
        capture_output=True, text=True, cwd=Path(__file__).parent, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert probe.returncode == 0, probe.stderr
    kinds = probe.stdout.split()
    assert len(kinds) >= 2 and set(kinds) == {"exec" if start_method == "exec" else expected}
