"""Manifest/index/config parsing, platform selection, config rewrite, Nydus assembly."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from nydusify_core.errors import FormatError, NotFoundError
from nydusify_core.oci import image
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor, Platform


def digest(tag: str) -> str:
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


def desc(media_type: str, tag: str, size: int = 10, **kw) -> Descriptor:
    return Descriptor(media_type=media_type, digest=digest(tag), size=size, **kw)


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


SOURCE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Image": "sha256:dummy", "Healthcheck": {"Test": ["NONE"]}},
    "container_config": {"Image": "sha256:dummy", "Hostname": "x"},
    "docker_version": "24.0.0",
    "rootfs": {"type": "layers", "diff_ids": [digest("d1"), digest("d2")]},
    "history": [{"created_by": "ADD rootfs"}, {"created_by": "RUN x"}],
}


def source_manifest(media_type: str = mt.DOCKER_MANIFEST, with_type: bool = True) -> bytes:
    layer_type = mt.DOCKER_LAYER_GZIP if media_type == mt.DOCKER_MANIFEST else mt.OCI_LAYER_GZIP
    config_type = mt.DOCKER_CONFIG if media_type == mt.DOCKER_MANIFEST else mt.OCI_CONFIG
    obj = {"schemaVersion": 2}
    if with_type:
        obj["mediaType"] = media_type
    obj["config"] = desc(config_type, "cfg").to_json()
    obj["layers"] = [desc(layer_type, "l1").to_json(), desc(layer_type, "l2").to_json()]
    obj["annotations"] = {"org.example": "kept", "nydus.trace.source-digest": "old"}
    return dumps(obj)


# --- parsing ----------------------------------------------------------------------------

def test_docker_and_oci_manifests_parse() -> None:
    docker = image.parse_manifest(source_manifest(), mt.DOCKER_MANIFEST)
    assert docker.is_docker and len(docker.layers) == 2
    oci = image.parse_manifest(source_manifest(mt.OCI_MANIFEST, with_type=False))
    assert oci.media_type == mt.OCI_MANIFEST and not oci.has_media_type


def test_schema1_is_rejected_with_advice() -> None:
    with pytest.raises(FormatError, match="schema1.*not supported"):
        image.parse_manifest(dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}))
    with pytest.raises(FormatError, match="schema1"):
        image.parse_image(b"{}", mt.DOCKER_MANIFEST_V1_SIGNED)


def test_declared_type_must_match_the_served_type() -> None:
    with pytest.raises(FormatError, match="served as"):
        image.parse_manifest(source_manifest(mt.DOCKER_MANIFEST), mt.OCI_MANIFEST)


def test_ambiguous_manifest_with_manifests_key_is_rejected() -> None:
    obj = json.loads(source_manifest(mt.OCI_MANIFEST))
    obj["manifests"] = []
    with pytest.raises(FormatError, match="index"):
        image.parse_manifest(dumps(obj))


def test_duplicate_json_keys_are_rejected() -> None:
    with pytest.raises(FormatError, match="duplicate JSON key"):
        image.parse_manifest(b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}')


def test_index_and_dispatch() -> None:
    index = dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        {**desc(mt.DOCKER_MANIFEST, "m1").to_json(), "platform": {"os": "linux", "architecture": "amd64"}},
    ]})
    parsed = image.parse_image(index)
    assert isinstance(parsed, image.Index) and parsed.is_docker
    assert isinstance(image.parse_image(source_manifest()), image.Manifest)


def test_config_parse_and_layer_count_check() -> None:
    config = image.parse_config(dumps(SOURCE_CONFIG))
    assert config.platform == Platform(os="linux", architecture="amd64")
    manifest = image.parse_manifest(source_manifest())
    image.check_config_matches(manifest, config)
    short = dict(SOURCE_CONFIG, rootfs={"type": "layers", "diff_ids": [digest("d1")]})
    with pytest.raises(FormatError, match="1 diff_ids for 2"):
        image.check_config_matches(manifest, image.parse_config(dumps(short)))
    with pytest.raises(FormatError, match="rootfs"):
        image.parse_config(dumps({"os": "linux"}))


# --- platform selection ------------------------------------------------------------------

def multi_index(*entries: Descriptor) -> image.Index:
    return image.Index(media_type=mt.OCI_INDEX, manifests=tuple(entries))


AMD = desc(mt.OCI_MANIFEST, "amd", platform=Platform("linux", "amd64"))
ARM = desc(mt.OCI_MANIFEST, "arm", platform=Platform("linux", "arm64", "v8"))
NYDUS_V22 = desc(mt.OCI_MANIFEST, "nyd1", platform=Platform("linux", "amd64", os_features=(mt.NYDUS_OS_FEATURE,)))
NYDUS_HEAD = desc(mt.OCI_MANIFEST, "nyd2", platform=Platform("linux", "amd64"), artifact_type=mt.NYDUS_MANIFEST_ARTIFACT)
ATTEST = desc(mt.OCI_MANIFEST, "att", platform=Platform("unknown", "unknown"),
              annotations={mt.ANNOTATION_DOCKER_REFERENCE_TYPE: "attestation-manifest"})


def test_platform_list_selects_in_index_order() -> None:
    got = image.select_manifests(multi_index(AMD, ARM), ["linux/arm64,linux/amd64"])
    assert got == [AMD, ARM]
    assert image.select_manifests(multi_index(AMD, ARM), ["linux/arm64"]) == [ARM]


def test_all_platforms_overrides_the_list_and_skips_nydus_and_attestations() -> None:
    index = multi_index(AMD, ARM, NYDUS_V22, NYDUS_HEAD, ATTEST)
    assert image.select_manifests(index, ["linux/s390x"], all_platforms=True) == [AMD, ARM]


def test_nothing_selected_is_an_error_listing_platforms() -> None:
    with pytest.raises(NotFoundError, match="linux/amd64, linux/arm64/v8"):
        image.select_manifests(multi_index(AMD, ARM), ["linux/riscv64"])


def test_nydus_entries_are_recognised_both_ways() -> None:
    assert image.is_nydus_index_entry(NYDUS_V22) and image.is_nydus_index_entry(NYDUS_HEAD)
    assert not image.is_nydus_index_entry(AMD)


# --- media-type family -----------------------------------------------------------------

@pytest.mark.parametrize("source,oci,docker", [
    (mt.DOCKER_MANIFEST, False, True), (mt.DOCKER_MANIFEST, True, False),
    (mt.OCI_MANIFEST, False, False), (mt.OCI_MANIFEST, True, False),
])
def test_oci_flag_has_its_documented_meaning(source: str, oci: bool, docker: bool) -> None:
    assert image.output_is_docker(source, oci) is docker


# --- config rewrite --------------------------------------------------------------------

def test_config_rewrite_registry_backend() -> None:
    cfg = image.rewrite_config(image.parse_config(dumps(SOURCE_CONFIG)), blob_diff_ids=[digest("b1"), digest("b2")], bootstrap_diff_id=digest("boot"))
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [digest("b1"), digest("b2"), digest("boot")]}
    assert cfg["history"][-1] == {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}
    assert len(cfg["history"]) == 3
    assert "Image" not in cfg["config"] and "Image" not in cfg["container_config"]
    assert cfg["config"]["Healthcheck"] == {"Test": ["NONE"]} and cfg["docker_version"] == "24.0.0"
    assert list(cfg) == list(SOURCE_CONFIG)
    assert SOURCE_CONFIG["config"]["Image"] == "sha256:dummy"  # input untouched


def test_config_rewrite_external_backend() -> None:
    cfg = image.rewrite_config(SOURCE_CONFIG, blob_diff_ids=[digest("b1")], bootstrap_diff_id=digest("boot"), external_backend=True)
    assert cfg["rootfs"]["diff_ids"] == [digest("boot")]
    assert cfg["history"] == [{"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}]


# --- bootstrap layer -------------------------------------------------------------------

@pytest.fixture
def bootstrap_file(tmp_path: Path) -> Path:
    path = tmp_path / "bootstrap"
    path.write_bytes(bytes(range(256)) * 4100)
    return path


def test_bootstrap_layer_content_and_digests(bootstrap_file: Path) -> None:
    out = io.BytesIO()
    layer = image.write_bootstrap_layer(bootstrap_file, out, fs_version=6)
    blob = out.getvalue()
    assert layer.descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.descriptor.size == len(blob) and layer.descriptor.media_type == mt.OCI_LAYER_GZIP
    assert blob[3] == 0, "no FNAME flag in the gzip header"
    tar_bytes = gzip.decompress(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    assert tar_bytes[:6] == b"image\0"  # directory name without a trailing slash
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.uname) for m in members] == [
            ("image", tarfile.DIRTYPE, 0o755, 0, 0, 0, ""),
            ("image/image.boot", tarfile.REGTYPE, 0o444, 0, 0, 0, ""),
        ]
        assert tar.extractfile(members[1]).read() == bootstrap_file.read_bytes()
    assert layer.descriptor.annotations == {mt.ANNOTATION_NYDUS_BOOTSTRAP: "true", mt.ANNOTATION_FS_VERSION: "6"}


def test_bootstrap_layer_is_readable_by_our_tar_reader(bootstrap_file: Path) -> None:
    from nydusify_core.oci.layertar import iter_layer_entries
    out = io.BytesIO()
    image.write_bootstrap_layer(bootstrap_file, out, extra_files=[("ab" * 32 + ".blob.meta", bootstrap_file)])
    paths = [e.path for e in iter_layer_entries(io.BytesIO(out.getvalue()), layer="boot")]
    assert paths == [b"image", b"image/image.boot", b"image/" + b"ab" * 32 + b".blob.meta"]


def test_bootstrap_layer_external_backend_keeps_uncompressed(bootstrap_file: Path) -> None:
    layer = image.write_bootstrap_layer(bootstrap_file, io.BytesIO(), docker=True, fs_version=5, external_backend=True)
    assert layer.descriptor.media_type == mt.DOCKER_LAYER_GZIP
    assert layer.descriptor.annotations[mt.ANNOTATION_UNCOMPRESSED] == layer.diff_id
    assert layer.descriptor.annotations[mt.ANNOTATION_FS_VERSION] == "5"


# --- manifest assembly -----------------------------------------------------------------

@pytest.fixture
def converted(bootstrap_file: Path):
    manifest = image.parse_manifest(source_manifest(), mt.DOCKER_MANIFEST)
    config = image.parse_config(dumps(SOURCE_CONFIG))
    results = [image.LayerResult(image.nydus_blob_descriptor(digest("b1"), 100)),
               image.LayerResult(image.nydus_blob_descriptor(digest("b2"), 50), has_data=False)]
    boot = image.write_bootstrap_layer(bootstrap_file, io.BytesIO())
    return manifest, config, results, boot


def test_dataless_layers_are_kept_by_default_and_dict_blobs_appended(converted) -> None:
    _, _, results, _ = converted
    dict_blob = image.nydus_blob_descriptor(digest("dict"), 7)
    assert [d.digest for d in image.blob_layers(results, [dict_blob, results[0].blob])] == [digest("b1"), digest("b2"), digest("dict")]
    assert [d.digest for d in image.blob_layers(results, keep_dataless=False)] == [digest("b1")]


def test_docker_source_stays_docker_by_default(converted) -> None:
    manifest, config, results, boot = converted
    built = image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot, image.AssembleOptions(
        source_digest=digest("src"), source_reference="docker.io/library/x:latest", builder_version="v2.2.0"))
    out = json.loads(built.manifest)
    assert list(out) == ["schemaVersion", "mediaType", "config", "layers", "annotations"]
    assert out["mediaType"] == mt.DOCKER_MANIFEST and out["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert [l["mediaType"] for l in out["layers"]] == [mt.NYDUS_BLOB, mt.NYDUS_BLOB, mt.DOCKER_LAYER_GZIP]
    assert out["layers"][0]["annotations"] == {mt.ANNOTATION_NYDUS_BLOB: "true"}
    assert out["layers"][-1]["annotations"] == {mt.ANNOTATION_NYDUS_BOOTSTRAP: "true", mt.ANNOTATION_FS_VERSION: "6"}
    assert out["annotations"] == {
        mt.ANNOTATION_BUILDER_VERSION: "v2.2.0", mt.ANNOTATION_FS_VERSION: "6",
        mt.ANNOTATION_SOURCE_DIGEST: digest("src"), mt.ANNOTATION_SOURCE_REFERENCE: "docker.io/library/x:latest",
        "org.example": "kept",
    }
    cfg = json.loads(built.config)
    assert cfg["rootfs"]["diff_ids"] == [digest("b1"), digest("b2"), boot.diff_id]
    assert built.config_descriptor.digest == "sha256:" + hashlib.sha256(built.config).hexdigest()
    assert built.manifest_descriptor.digest == "sha256:" + hashlib.sha256(built.manifest).hexdigest()
    assert b" " not in built.manifest  # compact


def test_oci_flag_converts_the_family(converted) -> None:
    manifest, config, results, boot = converted
    out = json.loads(image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot, image.AssembleOptions(oci=True)).manifest)
    assert out["mediaType"] == mt.OCI_MANIFEST and out["config"]["mediaType"] == mt.OCI_CONFIG
    assert out["layers"][-1]["mediaType"] == mt.OCI_LAYER_GZIP


def test_oci_manifest_without_media_type_keeps_it_absent(converted) -> None:
    _, config, results, boot = converted
    manifest = image.parse_manifest(source_manifest(mt.OCI_MANIFEST, with_type=False))
    out = json.loads(image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot).manifest)
    assert "mediaType" not in out


def test_external_backend_lists_only_the_bootstrap(converted) -> None:
    manifest, config, results, boot = converted
    built = image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot, image.AssembleOptions(external_backend=True))
    out = json.loads(built.manifest)
    assert len(out["layers"]) == 1 and out["layers"][0]["annotations"][mt.ANNOTATION_UNCOMPRESSED] == boot.diff_id
    assert json.loads(built.config)["rootfs"]["diff_ids"] == [boot.diff_id]


def test_assembled_manifest_is_recognised_as_nydus(converted) -> None:
    manifest, config, results, boot = converted
    built = image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot)
    parsed = image.parse_manifest(built.manifest)
    assert image.is_nydus_manifest(parsed) and image.nydus_fs_version(parsed) == 6
    assert image.nydus_manifest_problems(parsed) == []
    assert not image.is_nydus_manifest(manifest) and not image.has_nydus_layers(manifest)


def test_fs_version_defaults_to_5_and_legacy_annotations_are_tolerated() -> None:
    boot = desc(mt.OCI_LAYER_GZIP, "boot", annotations={
        mt.ANNOTATION_NYDUS_BOOTSTRAP: "true", mt.ANNOTATION_REFERENCE_BLOB_IDS: json.dumps(["ab" * 32])})
    legacy = image.Manifest(media_type=mt.OCI_MANIFEST, config=desc(mt.OCI_CONFIG, "c"), layers=(
        image.nydus_blob_descriptor(digest("b"), 1), boot), annotations={"nydus.trace.builder-version": "v2.1"})
    assert image.is_nydus_manifest(legacy) and image.nydus_fs_version(legacy) == 5
    assert image.legacy_reference_blob_ids(boot) == ["ab" * 32]


def test_checker_rule_reports_non_blob_layers() -> None:
    boot = desc(mt.OCI_LAYER_GZIP, "boot", annotations={mt.ANNOTATION_NYDUS_BOOTSTRAP: "true"})
    bad = image.Manifest(media_type=mt.OCI_MANIFEST, config=desc(mt.OCI_CONFIG, "c"), layers=(desc(mt.OCI_LAYER_GZIP, "x"), boot))
    assert image.nydus_manifest_problems(bad) == [f"layer 0 ({digest('x')}) is not a Nydus blob layer"]


# --- indexes ---------------------------------------------------------------------------

def test_converted_index_keeps_platforms_and_converts_family() -> None:
    source = image.Index(media_type=mt.DOCKER_MANIFEST_LIST, manifests=(AMD, ARM))
    new_amd, new_arm = desc(mt.OCI_MANIFEST, "n1"), desc(mt.OCI_MANIFEST, "n2")
    out = json.loads(image.build_converted_index(source, [(AMD, new_amd), (ARM, new_arm)], oci=True))
    assert out["mediaType"] == mt.OCI_INDEX
    assert [m["platform"] for m in out["manifests"]] == [AMD.platform.to_json(), ARM.platform.to_json()]
    assert all("os.features" not in m["platform"] for m in out["manifests"])
    assert json.loads(image.build_converted_index(source, [(AMD, new_amd)]))["mediaType"] == mt.DOCKER_MANIFEST_LIST


def test_merged_index_for_a_single_manifest_source_fills_platforms() -> None:
    config = image.parse_config(dumps(SOURCE_CONFIG))
    platform = image.platform_from_config(config)
    oci_entry = image.merged_index_entry(desc(mt.DOCKER_MANIFEST, "rewritten"), platform, nydus=False, source_digest=digest("src"))
    nydus_entry = image.merged_index_entry(desc(mt.OCI_MANIFEST, "nydus"), platform, nydus=True)
    out = json.loads(image.build_merged_index([oci_entry], [nydus_entry]))
    assert out["mediaType"] == mt.OCI_INDEX
    first, second = out["manifests"]
    assert first["platform"] == {"architecture": "amd64", "os": "linux"} and "artifactType" not in first
    assert first["annotations"] == {mt.ANNOTATION_SOURCE_DIGEST: digest("src")}
    assert second["artifactType"] == mt.NYDUS_MANIFEST_ARTIFACT and second["platform"]["os"] == "linux"


def test_merged_index_nydus_manifest_uses_the_nydus_config_type(converted) -> None:
    manifest, config, results, boot = converted
    built = image.assemble_nydus_image(manifest, config, image.blob_layers(results), boot, image.AssembleOptions(for_merged_index=True))
    assert json.loads(built.manifest)["config"]["mediaType"] == mt.NYDUS_CONFIG


def test_merged_index_oci_member_gets_a_leading_empty_layer() -> None:
    data, empty = image.empty_layer(docker=True)
    assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == mt.EMPTY_TAR_DIFF_ID
    cfg = image.merged_oci_config(SOURCE_CONFIG)
    assert cfg["rootfs"]["diff_ids"][0] == mt.EMPTY_TAR_DIFF_ID and len(cfg["rootfs"]["diff_ids"]) == 3
    assert cfg["history"][0] == {"created_by": "Nydus Converter", "comment": "Nydus Empty Layer"}
    manifest = image.parse_manifest(source_manifest())
    cfg_desc = Descriptor.for_bytes(mt.DOCKER_CONFIG, image.canonical_json(cfg))
    out = json.loads(image.merged_oci_manifest(manifest, config=cfg_desc, empty=empty, source_digest=digest("src")))
    assert out["layers"][0]["annotations"] == {mt.ANNOTATION_EMPTY_LAYER: "true"}
    assert len(out["layers"]) == 3 and out["annotations"][mt.ANNOTATION_SOURCE_DIGEST] == digest("src")
