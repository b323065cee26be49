"""The kernel as judge of registry -> registry conversions: the Nydus image is pulled back
from the registry, its blobs expanded to the cache layout, mounted as EROFS (root, loop
devices) and compared path by path with the source rootfs (umoci's unpack of the image).

Where mounting is not permitted the tests skip with the reason; the same images are
compared through `unpack` in test_registry_convert.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.testing.erofs import expanded_blobs, kernel_mount
from nydusify_core.testing.images import BuiltImage, expected_rootfs, push_image
from nydusify_core.testing.nydus import open_nydus_registry
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_core.testing.trees import diff_trees, snapshot

pytestmark = pytest.mark.root

# what a Nydus image does not keep by design (as in tests/test_convert.py)
IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}


def convert_and_mount_compare(server: RegistryServer, image: BuiltImage, tmp_path: Path, *,
                              platform: str | None = None, fmt: str | None = None, **kw) -> None:
    """Push `image`, convert it registry -> registry, pull the result back and compare the
    kernel's view of it with the source rootfs."""
    repo = unique_name("kern")
    push_image(image, server.host, f"{repo}:src", format=fmt)
    target = f"{server.host}/{repo}:nydus"
    convert(ConvertOptions(source=f"{server.host}/{repo}:src", target=target,
                           work_dir=tmp_path / "convert", plain_http=True, **kw))
    nydus = open_nydus_registry(target, tmp_path / "pull", platform=platform, plain_http=True)
    assert len(nydus.bootstrap.blobs) >= 1
    devices = expanded_blobs(nydus.bootstrap, nydus.blob_dir, tmp_path / "cache")
    expected = snapshot(expected_rootfs(image, platform=platform))
    with kernel_mount(nydus.bootstrap_path, devices, tmp_path / "mnt") as mnt:
        # chunk-sized reads without readahead: with several blob devices, buffered reads
        # through the mount can return another device's bytes (see erofs.read_chunkwise)
        mounted = snapshot(mnt, read_size=nydus.bootstrap.chunk_size)
    diffs = diff_trees(expected, mounted, ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def test_synthetic_image_mounts_with_the_source_files(registry_plain: RegistryServer, synthetic_image: BuiltImage, tmp_path: Path) -> None:
    convert_and_mount_compare(registry_plain, synthetic_image, tmp_path)


def test_docker_source_image_mounts_with_the_source_files(registry_plain: RegistryServer, synthetic_image: BuiltImage, tmp_path: Path) -> None:
    convert_and_mount_compare(registry_plain, synthetic_image, tmp_path, fmt="v2s2")


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8"])
def test_each_platform_of_a_multiarch_image_mounts_with_its_source_files(registry_plain: RegistryServer, multiarch_image: BuiltImage, platform: str, tmp_path: Path) -> None:
    convert_and_mount_compare(registry_plain, multiarch_image, tmp_path, platform=platform, all_platforms=True)


@pytest.mark.slow
def test_debian_like_image_mounts_with_the_source_files(registry_plain: RegistryServer, debian_image: BuiltImage, tmp_path: Path) -> None:
    convert_and_mount_compare(registry_plain, debian_image, tmp_path)
