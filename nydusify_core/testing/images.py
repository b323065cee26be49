"""Local OCI test images: built once, cached on disk, handed to tests as `BuiltImage` records.

Images (all tagged `latest`; builders live in `nydusify_core.testing.imagebuild`):

- `synthetic`: 4 gzip layers + an `empty_layer` history entry covering every file kind and
  layer edge case (devices, fifo, xattrs, hardlinks, long/non-UTF-8 names, sparse, dedup,
  setuid/sticky, whiteouts, opaque dir, type changes). Deterministic digests.
- `synthetic-zstd`, `synthetic-uncompressed`: the same with `tar+zstd` / plain `tar` layers.
- `synthetic-docker`: Docker schema2 media types; `path` is an OCI layout whose tag names a
  schema2 manifest, `skopeo_ref` the same image as skopeo's `dir:` form.
- `synthetic-docker-archive`: a `docker save` tar (`path` is the file).
- `multiarch`: an OCI index, linux/amd64 (= synthetic) and linux/arm64/v8 (1 layer).
- `debian` (slow, needs the machine's apt mirror): variant `minbase` (2 layers, ~160 MB)
  or `full` (4 layers, >= 250 MB uncompressed, for benchmarks).

The cache lives in `$NYDUSIFY_TEST_IMAGES` (default `/var/tmp/nydusify-test-images`), one
entry per recipe version, built atomically. Cached images and rootfs trees are shared by
every session: treat them as read-only (copy a layout before corrupting it in a test).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.imagebuild import debian, synthetic, variants
from nydusify_core.testing.imagebuild.cache import CACHE_ENV, cache_root, cached_build
from nydusify_core.testing.imagebuild.ocidir import platform_string, read_blob_json, resolve_tag
from nydusify_core.testing.imagebuild.rootfs import archive_rootfs, layout_rootfs
from nydusify_core.testing.imagebuild.tools import ImageBuildError, require_tools, run

__all__ = [
    "IMAGE_CACHE_ENV",
    "IMAGE_NAMES",
    "TAG",
    "BuiltImage",
    "ImageBuildError",
    "ImageLayer",
    "ImageManifest",
    "describe_layout",
    "expected_rootfs",
    "flipped_layer_copy",
    "get_image",
    "image_cache_dir",
    "push_image",
    "synthetic_image",
    "synthetic_zstd_image",
    "synthetic_uncompressed_image",
    "synthetic_docker_image",
    "synthetic_docker_archive",
    "multiarch_image",
    "debian_image",
    "debian_full_image",
]

IMAGE_CACHE_ENV = CACHE_ENV
TAG = "latest"
ARCHIVE_REPO_TAG = "synthetic:latest"
IMAGE_NAMES = (
    "synthetic", "synthetic-zstd", "synthetic-uncompressed", "synthetic-docker",
    "synthetic-docker-archive", "multiarch", "debian",
)
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class ImageLayer:
    digest: str
    media_type: str
    size: int
    diff_id: str  # digest of the uncompressed tar, from the config


@dataclass(frozen=True)
class ImageManifest:
    """One platform's image. For a docker-archive (which has no manifest) `digest` and
    `media_type` are empty and the layers are the archive's uncompressed tars."""

    digest: str
    media_type: str
    platform: str  # os/arch[/variant]
    config_digest: str
    config_media_type: str
    layers: tuple[ImageLayer, ...]
    config: dict[str, Any] = field(repr=False, compare=False, hash=False)


@dataclass(frozen=True)
class BuiltImage:
    name: str
    path: Path  # OCI layout directory, or the archive file for docker-archive
    tag: str
    ref: str  # `oci:PATH:TAG` or `docker-archive:PATH`
    transport: str  # "oci" or "docker-archive"
    digest: str  # what the tag names (manifest or index); "" for an archive
    media_type: str  # media type of that descriptor; "" for an archive
    manifests: tuple[ImageManifest, ...]  # one per platform, index order
    skopeo_ref: str  # the same image in a form skopeo reads (differs for synthetic-docker)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    @property
    def manifest(self) -> ImageManifest:
        """The first (for an index: the linux/amd64) image."""
        return self.manifests[0]

    @property
    def layers(self) -> tuple[ImageLayer, ...]:
        return self.manifest.layers

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def layer_media_types(self) -> list[str]:
        return [layer.media_type for layer in self.layers]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def platforms(self) -> list[str]:
        return [m.platform for m in self.manifests]

    def for_platform(self, platform: str) -> ImageManifest:
        for m in self.manifests:
            if m.platform == platform:
                return m
        raise KeyError(f"{self.name} has no {platform} image (have {', '.join(self.platforms)})")

    def blob_path(self, digest: str) -> Path:
        if self.transport != "oci":
            raise ValueError(f"{self.name} is a {self.transport}, not a layout")
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def rootfs(self, platform: str | None = None) -> Path:
        """The expected root filesystem (see `expected_rootfs`)."""
        return expected_rootfs(self, platform=platform)


# --- describing built images ------------------------------------------------------------

def _manifest_record(layout: Path, digest: str, media_type: str) -> ImageManifest:
    manifest = read_blob_json(layout, digest)
    config = read_blob_json(layout, manifest["config"]["digest"])
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest["layers"]):
        raise ImageBuildError(f"{layout}: {digest} has {len(manifest['layers'])} layers but {len(diff_ids)} diff_ids")
    layers = tuple(ImageLayer(l["digest"], l["mediaType"], l["size"], d) for l, d in zip(manifest["layers"], diff_ids))
    return ImageManifest(digest, media_type, platform_string(config), manifest["config"]["digest"],
                         manifest["config"]["mediaType"], layers, config)


def describe_layout(layout: str | Path, tag: str = TAG, name: str = "", skopeo_ref: str | None = None) -> BuiltImage:
    """A `BuiltImage` record for `layout:tag` (any OCI layout, not only the kit's)."""
    layout = Path(layout)
    desc = resolve_tag(layout, tag)
    if desc["mediaType"] in mt.INDEX_TYPES:
        manifests = tuple(_manifest_record(layout, e["digest"], e["mediaType"])
                          for e in read_blob_json(layout, desc["digest"])["manifests"])
    else:
        manifests = (_manifest_record(layout, desc["digest"], desc["mediaType"]),)
    ref = f"oci:{layout}:{tag}"
    return BuiltImage(name or layout.name, layout, tag, ref, "oci", desc["digest"], desc["mediaType"],
                      manifests, skopeo_ref or ref)


def _describe_archive(archive: Path, name: str) -> BuiltImage:
    with tarfile.open(archive) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(entry["Config"]))  # type: ignore[arg-type]
        sizes = [tar.getmember(p).size for p in entry["Layers"]]
    diff_ids = config["rootfs"]["diff_ids"]
    layers = tuple(ImageLayer(d, mt.DOCKER_LAYER, s, d) for d, s in zip(diff_ids, sizes))
    manifest = ImageManifest("", "", platform_string(config), "sha256:" + entry["Config"].removesuffix(".json"),
                             mt.DOCKER_CONFIG, layers, config)
    ref = f"docker-archive:{archive}"
    return BuiltImage(name, archive, entry["RepoTags"][0], ref, "docker-archive", "", "", (manifest,), ref)


# --- building (cached) --------------------------------------------------------------------

def image_cache_dir() -> Path:
    return cache_root()


def _synthetic_layout() -> Path:
    return cached_build("synthetic", synthetic.RECIPE, lambda out: synthetic.build_synthetic(out, TAG))


def _derived(name: str, builder: Callable[[Path, Path], None], suffix: str = "") -> Path:
    """An image made from the synthetic one; its key includes the synthetic recipe."""
    base = _synthetic_layout()
    return cached_build(name, f"{variants.RECIPE}|{synthetic.RECIPE}", lambda out: builder(base, out), suffix=suffix)


def get_image(name: str, *, variant: str | None = None) -> BuiltImage:
    """Build (once) or reuse the named image. `variant` is for `debian` only."""
    if variant is not None and name != "debian":
        raise ValueError(f"image {name!r} has no variants")
    if name == "synthetic":
        return describe_layout(_synthetic_layout(), TAG, name)
    if name == "synthetic-zstd":
        return describe_layout(_derived(name, lambda b, o: variants.build_zstd(b, TAG, o)), TAG, name)
    if name == "synthetic-uncompressed":
        return describe_layout(_derived(name, lambda b, o: variants.build_uncompressed(b, TAG, o)), TAG, name)
    if name == "multiarch":
        return describe_layout(_derived(name, lambda b, o: variants.build_multiarch(b, TAG, o)), TAG, name)
    if name == "synthetic-docker":
        entry = _derived(name, lambda b, o: variants.build_docker_layout(b, TAG, o))
        return describe_layout(entry / "oci", TAG, name, skopeo_ref=f"dir:{entry / 'dir'}")
    if name == "synthetic-docker-archive":
        archive = _derived(name, lambda b, o: variants.build_docker_archive(b, TAG, o, ARCHIVE_REPO_TAG), ".tar")
        return _describe_archive(archive, name)
    if name == "debian":
        variant = variant or "minbase"
        layout = cached_build(f"debian-{variant}", f"{debian.RECIPE}|{variant}",
                              lambda out: debian.build_debian(out, variant, TAG))
        return describe_layout(layout, TAG, name)
    raise ValueError(f"unknown test image {name!r} (have {', '.join(IMAGE_NAMES)})")


# --- ground truth and pushing -----------------------------------------------------------

def flipped_layer_copy(image: BuiltImage, root: Path, layer: int = 1) -> str:
    """A copy of `image`'s layout at `root` with one byte in the middle of layer `layer`
    inverted (its digest no longer matches); returns the copy's `oci:PATH:TAG`."""
    shutil.copytree(image.path, root)
    path = root / "blobs" / "sha256" / image.layers[layer].digest.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    return f"oci:{root}:{image.tag}"


def expected_rootfs(layout: BuiltImage | str | Path, tag: str | None = None, platform: str | None = None) -> Path:
    """The root filesystem `umoci unpack` makes of the image: the ground truth to compare a
    conversion against. Cached and shared: do not modify it.

    `layout` is a `BuiltImage`, an OCI layout directory or an `oci:PATH[:TAG]` reference;
    `platform` (`os/arch[/variant]`) picks an index entry (default: the first).
    """
    if isinstance(layout, BuiltImage):
        if layout.transport == "docker-archive":
            return archive_rootfs(layout.path)
        return layout_rootfs(layout.path, tag or layout.tag, platform)
    text = os.fspath(layout)
    if text.startswith("oci:"):
        path, sep, ref_tag = text[4:].rpartition(":")
        if sep and "/" not in ref_tag and not Path(text[4:]).is_dir():
            text, tag = path, tag or ref_tag
        else:
            text = text[4:]
    return layout_rootfs(Path(text), tag or TAG, platform)


def _is_loopback(registry_host: str) -> bool:
    host = registry_host
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uncompressed_layers(image: BuiltImage) -> bool:
    return any(mt.LAYER_COMPRESSION.get(l.media_type) == "none" for m in image.manifests for l in m.layers)


def push_image(layout_ref: BuiltImage | str, registry_host: str, repo_tag: str, *,
               creds: str | tuple[str, str] | None = None, tls_verify: bool = False,
               cert_dir: str | Path | None = None, format: str | None = None,
               preserve_digests: bool | None = None) -> str:
    """Copy an image to `docker://registry_host/repo_tag` with skopeo; returns the pushed digest.

    `layout_ref` is a `BuiltImage` or any skopeo source reference (`oci:PATH:TAG`, `dir:`,
    `docker-archive:`). All platforms of an index are pushed. `format` is skopeo's `--format`
    (`oci`, `v2s2`). `preserve_digests` defaults to on for images with uncompressed layers
    (skopeo would gzip them otherwise) when `format` is not given. Only loopback registries
    are accepted: tests never push anywhere else.
    """
    require_tools("skopeo")
    if not _is_loopback(registry_host):
        raise ValueError(f"refusing to push to non-loopback registry {registry_host!r}")
    source = layout_ref.skopeo_ref if isinstance(layout_ref, BuiltImage) else layout_ref
    if preserve_digests is None:
        preserve_digests = format is None and isinstance(layout_ref, BuiltImage) and _uncompressed_layers(layout_ref)
    args = ["copy", "--quiet", "--all", f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if creds is not None:
        args += ["--dest-creds", creds if isinstance(creds, str) else ":".join(creds)]
    if cert_dir is not None:
        args += ["--dest-cert-dir", os.fspath(cert_dir)]
    if format is not None:
        args += ["--format", format]
    if preserve_digests:
        args.append("--preserve-digests")
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost,::1"]))
    with tempfile.TemporaryDirectory(prefix="nydusify-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        run(["skopeo", "--insecure-policy", *args, "--digestfile", digest_file, source,
             f"docker://{registry_host}/{repo_tag}"], env={"NO_PROXY": no_proxy, "no_proxy": no_proxy})
        return digest_file.read_text().strip()


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic_image() -> BuiltImage:
    return get_image("synthetic")


@pytest.fixture(scope="session")
def synthetic_zstd_image() -> BuiltImage:
    return get_image("synthetic-zstd")


@pytest.fixture(scope="session")
def synthetic_uncompressed_image() -> BuiltImage:
    return get_image("synthetic-uncompressed")


@pytest.fixture(scope="session")
def synthetic_docker_image() -> BuiltImage:
    return get_image("synthetic-docker")


@pytest.fixture(scope="session")
def synthetic_docker_archive() -> BuiltImage:
    return get_image("synthetic-docker-archive")


@pytest.fixture(scope="session")
def multiarch_image() -> BuiltImage:
    return get_image("multiarch")


@pytest.fixture(scope="session")
def debian_image() -> BuiltImage:
    """Debian minbase in 2 layers. Slow on a cold cache (mmdebstrap): mark users `slow`."""
    return get_image("debian", variant="minbase")


@pytest.fixture(scope="session")
def debian_full_image() -> BuiltImage:
    """Debian with python3, git, curl, ... in 4 layers, >= 250 MB: for benchmarks (slow)."""
    return get_image("debian", variant="full")

