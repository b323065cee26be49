"""Running the external image tools (umoci, skopeo, GNU tar, mmdebstrap) with useful errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from nydusify_core.errors import NydusifyError

# Every builder pins time and identity so the same recipe gives the same bytes.
EPOCH = 1577836800  # 2020-01-01T00:00:00Z
EPOCH_ISO = "2020-01-01T00:00:00Z"
AUTHOR = "nydusify-test"
TOOL_TIMEOUT = 1800  # seconds; mmdebstrap on a slow mirror is the worst case
STDERR_TAIL = 4000  # characters of a failed tool's stderr kept in the error message


class ImageBuildError(NydusifyError):
    """An external tool failed or is missing while building a test image."""


def require_tools(*names: str) -> None:
    """Fail with the apt package to install rather than a bare FileNotFoundError."""
    packages = {"umoci": "umoci", "skopeo": "skopeo", "mmdebstrap": "mmdebstrap", "tar": "tar"}
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        hint = " ".join(packages.get(n, n) for n in missing)
        raise ImageBuildError(f"missing tools: {', '.join(missing)} (apt-get install -y {hint})")


def run(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
        env: Mapping[str, str] | None = None) -> str:
    """Run a tool, return its stdout; on failure raise with the command and stderr tail."""
    argv = [os.fspath(a) for a in args]
    full_env = {**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC", **(env or {})}
    try:
        proc = subprocess.run(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ImageBuildError(f"tool not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"timed out after {TOOL_TIMEOUT}s: {' '.join(argv)}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-STDERR_TAIL:]
        raise ImageBuildError(f"{' '.join(argv)} exited {proc.returncode}:\n{err}")
    return proc.stdout.decode(errors="replace")


def umoci(*args: str | os.PathLike[str]) -> str:
    return run(["umoci", *args])


def new_umoci_bundle(layout: Path, tag: str, config_args: Sequence[str]) -> tuple[str, Path, Path]:
    """A new layout holding an empty image `layout:tag` (config from `config_args`, epoch
    times, no history), unpacked into a bundle in a scratch dir beside the layout; each
    `umoci repack --refresh-bundle` then records the bundle's changes as the next layer.
    Returns (image, scratch dir, bundle)."""
    work = layout.parent / f"{layout.name}.work"
    work.mkdir(parents=True)
    image = f"{layout}:{tag}"
    umoci("init", "--layout", layout)
    umoci("new", "--image", image)
    umoci("config", "--image", image, "--no-history", "--created", EPOCH_ISO, *config_args)
    bundle = work / "bundle"
    umoci("unpack", "--image", image, bundle)
    return image, work, bundle


def skopeo(*args: str | os.PathLike[str]) -> str:
    # --insecure-policy: the test kit never relies on a host signature policy file
    return run(["skopeo", "--insecure-policy", *args])
