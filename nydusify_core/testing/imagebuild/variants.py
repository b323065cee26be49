"""Images derived from a built layout: other layer compressions, Docker media types,
`docker save` archives and a multi-platform index.

skopeo 1.9 notes: `--dest-compress-format`/`--dest-decompress` are silently ignored when
copying to a registry that already has the gzip blobs, so every variant is a local layout
first; an uncompressed OCI layout must go through `dir:` (an `oci:` destination re-gzips
unless `--dest-oci-accept-uncompressed-layers` is given).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from nydusify_core.oci import mediatypes as mt
from nydusify_core.testing.imagebuild.ocidir import (
    init_layout, link_blob, link_blob_file, put_blob, put_json, read_blob_json, resolve_tag, tagged, write_index,
)
from nydusify_core.testing.imagebuild.tools import ImageBuildError, require_tools, skopeo

RECIPE = "variants/3"  # bump on any change below


def build_zstd(src: Path, tag: str, dest: Path) -> None:
    """The same image with every layer recompressed as zstd (`tar+zstd` media types)."""
    require_tools("skopeo")
    skopeo("copy", "--quiet", "--dest-compress-format", "zstd", f"oci:{src}:{tag}", f"oci:{dest}:{tag}")


def build_uncompressed(src: Path, tag: str, dest: Path) -> None:
    """The same image with plain tar layers (`application/vnd.oci.image.layer.v1.tar`)."""
    require_tools("skopeo")
    scratch = dest.parent / f"{dest.name}.dir"
    skopeo("copy", "--quiet", "--dest-decompress", f"oci:{src}:{tag}", f"dir:{scratch}")
    skopeo("copy", "--quiet", "--dest-oci-accept-uncompressed-layers", f"dir:{scratch}", f"oci:{dest}:{tag}")
    shutil.rmtree(scratch)


def build_docker_layout(src: Path, tag: str, dest: Path) -> None:
    """Docker schema2 media types throughout, in two forms sharing their blobs:
    `dest/oci`, an OCI layout whose tag names the schema2 manifest (as `ctr export` and buildx
    write them), and `dest/dir`, skopeo's `dir:` form of the same image. skopeo makes the
    schema2 manifest; it cannot read the first form (its `oci:` transport only accepts OCI
    manifests), so the second is what to hand to skopeo."""
    require_tools("skopeo")
    dir_form, layout = dest / "dir", dest / "oci"
    dest.mkdir()
    skopeo("copy", "--quiet", "--format", "v2s2", f"oci:{src}:{tag}", f"dir:{dir_form}")
    manifest_bytes = (dir_form / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    if manifest.get("mediaType") != mt.DOCKER_MANIFEST:
        raise ImageBuildError(f"skopeo did not write a schema2 manifest: {manifest.get('mediaType')}")
    init_layout(layout)
    for desc in [manifest["config"], *manifest["layers"]]:
        link_blob_file(dir_form / desc["digest"].split(":", 1)[1], layout, desc["digest"])
    digest, size = put_blob(layout, manifest_bytes)
    write_index(layout, [tagged({"mediaType": mt.DOCKER_MANIFEST, "digest": digest, "size": size}, tag)])


def build_docker_archive(src: Path, tag: str, dest: Path, repo_tag: str) -> None:
    """A `docker save` style tar (manifest.json, <config>.json, uncompressed layer tars)."""
    require_tools("skopeo")
    skopeo("copy", "--quiet", f"oci:{src}:{tag}", f"docker-archive:{dest}:{repo_tag}")


def build_multiarch(src: Path, tag: str, dest: Path) -> None:
    """An OCI index: linux/amd64 = the source image, linux/arm64/v8 = its first layer only
    under a config of its own (architecture, labels, cmd, trimmed history)."""
    amd64_desc = {k: v for k, v in resolve_tag(src, tag).items() if k != "annotations"}
    amd64 = read_blob_json(src, amd64_desc["digest"])
    init_layout(dest)
    for digest in [amd64_desc["digest"], amd64["config"]["digest"], *(l["digest"] for l in amd64["layers"])]:
        link_blob(src, dest, digest)

    config = copy.deepcopy(read_blob_json(src, amd64["config"]["digest"]))
    config.update(architecture="arm64", variant="v8")
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
    config["history"] = config["history"][:1]
    config["config"]["Cmd"] = ["/bin/echo", "arm64"]
    config["config"]["Labels"] = {**config["config"].get("Labels", {}), "nydus.test.arch": "arm64"}
    config_digest, config_size = put_json(dest, config)
    arm64 = {**amd64, "config": {**amd64["config"], "digest": config_digest, "size": config_size},
             "layers": amd64["layers"][:1]}
    arm64_digest, arm64_size = put_json(dest, arm64)

    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**amd64_desc, "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": arm64_digest, "size": arm64_size,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]}
    index_digest, index_size = put_json(dest, index)
    write_index(dest, [tagged({"mediaType": mt.OCI_INDEX, "digest": index_digest, "size": index_size}, tag)])
