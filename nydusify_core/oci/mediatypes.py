"""Media types, annotation keys and other image-level constants (nydus-image-spec.md §1.1)."""

from __future__ import annotations

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
NYDUS_MANIFEST_ARTIFACT = "application/vnd.nydus.image.manifest.v1+json"
NYDUS_CONFIG = "application/vnd.nydus.image.config.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
DOCKER_TYPES = frozenset({DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN_GZIP})

# layer media type -> compression of the tar stream
LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}

# Docker -> OCI renames applied with --oci
DOCKER_TO_OCI = {
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_FOREIGN_GZIP: OCI_LAYER_NONDIST_GZIP,
}

ANNOTATION_NYDUS_BLOB = "containerd.io/snapshot/nydus-blob"
ANNOTATION_NYDUS_BOOTSTRAP = "containerd.io/snapshot/nydus-bootstrap"
ANNOTATION_FS_VERSION = "containerd.io/snapshot/nydus-fs-version"
ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
ANNOTATION_NYDUS_REF = "containerd.io/snapshot/nydus-ref"
ANNOTATION_SOURCE_DIGEST = "containerd.io/snapshot/nydus-source-digest"
ANNOTATION_SOURCE_REFERENCE = "containerd.io/snapshot/nydus-source-reference"
ANNOTATION_BUILDER_VERSION = "containerd.io/snapshot/nydus-builder-version"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

NYDUS_OS_FEATURE = "nydus.remoteimage.v1"
BOOTSTRAP_PATH_IN_LAYER = "image/image.boot"
