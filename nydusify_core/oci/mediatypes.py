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

# --- added for image assembly, layer tar reading and docker-archive ----------------------
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_TYPES = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
LAYER_COMPRESSION.update({DOCKER_LAYER: "none", OCI_LAYER_NONDIST: "none", OCI_LAYER_NONDIST_ZSTD: "zstd"})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG, NYDUS_CONFIG})
BOOTSTRAP_LAYER_TYPES = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP})
DOCKER_TO_OCI.setdefault(DOCKER_LAYER, OCI_LAYER)

ANNOTATION_EMPTY_LAYER = "containerd.io/snapshot/nydus-empty-layer"
ANNOTATION_REFERENCE_BLOB_IDS = "containerd.io/snapshot/nydus-reference-blob-ids"  # legacy v2.1
ANNOTATION_BLOB_IDS = "containerd.io/snapshot/nydus-blob-ids"  # deprecated
LEGACY_TRACE_ANNOTATIONS = (
    "nydus.trace.source-reference",
    "nydus.trace.source-digest",
    "nydus.trace.nydusify-version",
    "nydus.trace.builder-version",
)
ANNOTATION_CONTAINERD_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"  # buildx attestation manifests

NYDUS_HISTORY_CREATED_BY = "Nydus Converter"
NYDUS_HISTORY_BOOTSTRAP_COMMENT = "Nydus Bootstrap Layer"
NYDUS_HISTORY_EMPTY_COMMENT = "Nydus Empty Layer"
BOOTSTRAP_DIR_IN_LAYER = "image"
# sha256 of a tar made of just the two zero end-of-archive blocks (1024 zero bytes)
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
