"""Stage hooks on the registry and object-storage targets: the per-blob upload hooks and the
manifest-push hooks fire with their payloads (`PushInfo`: bootstrap path, source and target
refs, blobs [{id, size}]), and a raising hook aborts with nothing pushed after its stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nydusify_core import hookimpl
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import HookError
from nydusify_core.testing.images import BuiltImage, push_image
from nydusify_core.testing.servers import RegistryServer, unique_name

PREFIX = "nydus/blobs/"


class Recorder:
    """Records upload and push hooks; raises at `fail_at` (a stage name) if given."""

    def __init__(self, fail_at: str = "", fail_after: int = 0) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail_at, self.fail_after = fail_at, fail_after

    def _record(self, stage: str, payload: object) -> None:
        self.calls.append((stage, payload))
        if stage == self.fail_at and sum(1 for s, _ in self.calls if s == stage) > self.fail_after:
            raise RuntimeError(f"veto at {stage}")

    @hookimpl
    def nydusify_before_upload_blob(self, blob, backend_type):
        self._record("before_upload_blob", (blob, backend_type))

    @hookimpl
    def nydusify_after_upload_blob(self, blob, backend_type):
        self._record("after_upload_blob", (blob, backend_type))

    @hookimpl
    def nydusify_before_push_manifest(self, info):
        self._record("before_push_manifest", info)

    @hookimpl
    def nydusify_after_push_manifest(self, info, descriptor):
        self._record("after_push_manifest", (info, descriptor))

    def stages(self) -> list[str]:
        return [s for s, _ in self.calls]

    def payload(self, stage: str) -> object:
        return next(p for s, p in self.calls if s == stage)


def check_push_payloads(recorder: Recorder, source: str, target: str, blobs: list, backend_type: str) -> None:
    stages = recorder.stages()
    n = len(blobs)
    assert stages.count("before_upload_blob") == stages.count("after_upload_blob") == n
    assert stages[-2:] == ["before_push_manifest", "after_push_manifest"]
    uploads = [p for s, p in recorder.calls if s == "after_upload_blob"]
    assert {b for b, _ in uploads} == set(blobs) and {t for _, t in uploads} == {backend_type}
    info = recorder.payload("before_push_manifest")
    assert (info.source_ref, info.target_ref) == (source, target)
    assert set(info.blobs) == set(blobs) and all(b.size > 0 for b in info.blobs)
    assert Path(info.bootstrap_path).name.startswith("bootstrap-")
    assert recorder.payload("after_push_manifest")[0] == info


# --- registry target ---------------------------------------------------------------------


@pytest.fixture
def registry_source(registry_plain: RegistryServer, synthetic_image: BuiltImage) -> tuple[str, str]:
    repo = unique_name("hooks")
    push_image(synthetic_image, registry_plain.host, f"{repo}:v1")
    return f"{registry_plain.host}/{repo}:v1", f"{registry_plain.host}/{repo}:v1-nydus"


def registry_has_tag(registry: RegistryServer, ref: str) -> bool:
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    response = registry.session().head(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"}, timeout=10)
    return response.status_code == 200


def registry_has_blob(registry: RegistryServer, ref: str, blob_id: str) -> bool:
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    return registry.session().head(f"{registry.url}/v2/{repo}/blobs/sha256:{blob_id}", timeout=10).status_code == 200


def test_registry_target_upload_and_push_hooks_get_their_payloads(registry_plain, registry_source, tmp_path, plugin_manager, register_plugin) -> None:
    source, target = registry_source
    recorder = Recorder()
    register_plugin(recorder)
    result = convert(ConvertOptions(source=source, target=target, plain_http=True, work_dir=tmp_path / "w", workers=1), plugin_manager)
    check_push_payloads(recorder, source, target, result.blobs, "registry")
    assert recorder.payload("after_push_manifest")[1].digest == result.descriptor.digest
    assert registry_has_tag(registry_plain, target)


def test_registry_target_veto_before_the_manifest_push_leaves_no_tag(registry_plain, registry_source, tmp_path, plugin_manager, register_plugin) -> None:
    source, target = registry_source
    register_plugin(Recorder(fail_at="before_push_manifest"), name="push-policy")
    with pytest.raises(HookError, match="push-policy") as err:
        convert(ConvertOptions(source=source, target=target, plain_http=True, work_dir=tmp_path / "w", workers=1), plugin_manager)
    assert err.value.hook == "nydusify_before_push_manifest" and "veto at before_push_manifest" in str(err.value)
    assert not registry_has_tag(registry_plain, target)


def test_registry_target_veto_after_a_blob_upload_pushes_no_later_blob(registry_plain, registry_source, tmp_path, plugin_manager, register_plugin) -> None:
    source, target = registry_source
    recorder = Recorder(fail_at="after_upload_blob")
    register_plugin(recorder, name="upload-policy")
    with pytest.raises(HookError, match="upload-policy"):
        convert(ConvertOptions(source=source, target=target, plain_http=True, work_dir=tmp_path / "w", workers=1), plugin_manager)
    assert recorder.stages() == ["before_upload_blob", "after_upload_blob"]
    (first, _), = [p for s, p in recorder.calls if s == "after_upload_blob"]
    assert registry_has_blob(registry_plain, target, first.id)  # the stage that ran is kept, as upstream
    assert not registry_has_tag(registry_plain, target)


# --- object-storage targets (blobs to OSS / S3, manifest to an OCI layout) ----------------


@pytest.fixture(params=["oss", "s3"])
def object_store(request, tmp_path: Path):
    """(backend type, config, list of stored keys)."""
    if request.param == "oss":
        server, bucket = request.getfixturevalue("oss_server"), request.getfixturevalue("oss_bucket")
        config = {"endpoint": server.endpoint, "bucket_name": bucket, "object_prefix": PREFIX,
                  "access_key_id": server.access_key_id, "access_key_secret": server.access_key_secret}
        return "oss", config, lambda: server.object_keys(bucket)
    server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    config = {"endpoint": server.host, "scheme": "http", "region": server.region, "bucket_name": bucket, "object_prefix": PREFIX,
              "access_key_id": server.access_key_id, "access_key_secret": server.secret_access_key}
    return "s3", config, lambda: sorted(o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def layout_manifests(layout: Path) -> list:
    index = layout / "index.json"
    return json.loads(index.read_text())["manifests"] if index.exists() else []


def test_object_storage_upload_and_push_hooks_get_their_payloads(synthetic_image, object_store, tmp_path, plugin_manager, register_plugin) -> None:
    backend_type, config, keys = object_store
    recorder = Recorder()
    register_plugin(recorder)
    target = f"oci:{tmp_path / 'out'}:latest"
    result = convert(ConvertOptions(source=synthetic_image.ref, target=target, backend_type=backend_type, backend_config=config,
                                    work_dir=tmp_path / "w", workers=1), plugin_manager)
    check_push_payloads(recorder, synthetic_image.ref, target, result.blobs, backend_type)
    assert sorted(PREFIX + b.id for b in result.blobs) == keys()


def test_object_storage_veto_before_an_upload_stores_nothing_after_it(synthetic_image, object_store, tmp_path, plugin_manager, register_plugin) -> None:
    backend_type, config, keys = object_store
    recorder = Recorder(fail_at="before_upload_blob", fail_after=1)  # the second blob is refused
    register_plugin(recorder, name="quota-plugin")
    out = tmp_path / "out"
    with pytest.raises(HookError, match="quota-plugin") as err:
        convert(ConvertOptions(source=synthetic_image.ref, target=f"oci:{out}:latest", backend_type=backend_type, backend_config=config,
                               work_dir=tmp_path / "w", workers=1), plugin_manager)
    assert err.value.hook == "nydusify_before_upload_blob"
    first, _ = recorder.payload("after_upload_blob")
    assert keys() == [PREFIX + first.id]
    assert layout_manifests(out) == []
