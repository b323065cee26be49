"""The `debian` image: a real Debian bookworm rootfs from mmdebstrap, split into layers the
way a Dockerfile would (base, package installs, a slimming step that deletes files).

Each stage is a fresh mmdebstrap run with a growing package list; its tree replaces the
umoci bundle's rootfs and `umoci repack` records the difference as the next layer. It uses
the machine's own apt sources (so it needs its mirror, and takes a minute or two); the
result is not byte-reproducible across mirror updates, which the cache key does not track.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nydusify_core.testing.imagebuild.tools import (
    AUTHOR, EPOCH, EPOCH_ISO, ImageBuildError, new_umoci_bundle, require_tools, run, umoci,
)

RECIPE = "debian/1"  # bump on any change below
SUITE = "bookworm"
APT_SOURCE_FILES = ("/etc/apt/sources.list",)
APT_SOURCE_GLOBS = ("/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources")
CONFIG_ARGS = [
    "--author", AUTHOR, "--architecture", "amd64", "--os", "linux", "--config.cmd", "/bin/bash",
    "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--config.label", "nydus.test.image=debian",
]
# a Dockerfile's usual slimming step: many file and directory whiteouts
CLEANUP_DIRS = ("usr/share/man", "usr/share/info", "usr/share/lintian")


@dataclass(frozen=True)
class DebianVariant:
    """Package stages: each tuple is installed on top of minbase and becomes one layer."""

    name: str
    stages: tuple[tuple[str, ...], ...]


VARIANTS = {
    # tests: minbase + cleanup, 2 layers, ~160 MB
    "minbase": DebianVariant("minbase", ((),)),
    # benchmarks: 4 layers, >= 250 MB uncompressed
    "full": DebianVariant("full", (
        (),
        ("python3",),
        ("python3", "git", "curl", "ca-certificates", "openssh-client", "gnupg", "procps",
         "less", "xz-utils", "file", "vim-tiny"),
    )),
}


def apt_sources() -> list[str]:
    """The host's configured, non-empty apt source files (mmdebstrap takes them as mirrors)."""
    found = [p for p in APT_SOURCE_FILES if os.path.isfile(p)]
    for pattern in APT_SOURCE_GLOBS:
        directory, glob = pattern.rsplit("/", 1)
        found.extend(sorted(str(p) for p in Path(directory).glob(glob)))
    return [p for p in found if os.path.getsize(p) > 0]


def _mmdebstrap(target: Path, packages: tuple[str, ...], sources: list[str]) -> None:
    run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
         *([f"--include={','.join(packages)}"] if packages else []),
         # the image must not point at this machine's mirror, nor carry its resolver/hostname
         "--customize-hook=rm -f \"$1\"/etc/apt/sources.list.d/* \"$1\"/etc/apt/sources.list;"
         " echo '# apt sources removed by the nydusify test kit' > \"$1\"/etc/apt/sources.list",
         "--customize-hook=: > \"$1\"/etc/resolv.conf; echo localhost > \"$1\"/etc/hostname",
         SUITE, target, *sources],
        env={"SOURCE_DATE_EPOCH": str(EPOCH)})


def _cleanup(rootfs: Path) -> None:
    for path in (rootfs / "usr/share/doc").rglob("changelog*"):
        if path.is_file() or path.is_symlink():
            path.unlink()
    for d in CLEANUP_DIRS:
        shutil.rmtree(rootfs / d, ignore_errors=True)
    (rootfs / "etc/motd").write_text("built by the nydusify test kit\n")


def build_debian(layout: Path, variant: str = "minbase", tag: str = "latest") -> None:
    """Write the Debian image into a new OCI layout directory `layout` (scratch beside it)."""
    if variant not in VARIANTS:
        raise ImageBuildError(f"unknown debian variant {variant!r} (have {', '.join(VARIANTS)})")
    require_tools("umoci", "mmdebstrap")
    sources = apt_sources()
    if not sources:
        raise ImageBuildError("no apt sources configured on this machine (needed by mmdebstrap)")
    image, work, bundle = new_umoci_bundle(layout, tag, CONFIG_ARGS)
    rootfs = bundle / "rootfs"
    history = ["--history.created", EPOCH_ISO, "--history.author", AUTHOR]
    for number, packages in enumerate(VARIANTS[variant].stages):
        stage = work / f"stage{number}"
        _mmdebstrap(stage, packages, sources)
        # the stage's tree becomes the rootfs; umoci diffs it against its recorded state
        shutil.rmtree(rootfs)
        os.rename(stage, rootfs)
        created_by = "mmdebstrap --variant=minbase" + (f" --include={','.join(packages)}" if packages else "")
        umoci("repack", "--image", image, *history, "--history.created_by", created_by, "--refresh-bundle", bundle)
    _cleanup(rootfs)
    umoci("repack", "--image", image, *history, "--history.created_by", "cleanup: docs, man pages",
          "--refresh-bundle", bundle)
    umoci("gc", "--layout", layout)
