"""One test per hookspec: each is called by the facade, with its payload, in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nydusify_core import hookimpl
from nydusify_core.cli import cli
from nydusify_core.errors import HookError, PluginConflictError
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.types import (
    BackendSpec,
    BlobRef,
    BuilderSpec,
    BuiltLayer,
    ConvertContext,
    Credentials,
    LayerInfo,
    PushInfo,
    SourceSpec,
    TargetSpec,
)


@pytest.fixture
def ctx(tmp_path: Path) -> ConvertContext:
    return ConvertContext(source_ref="oci:/src:latest", target_ref="oci:/dst:latest", work_dir=tmp_path)


@pytest.fixture
def info(tmp_path: Path) -> PushInfo:
    return PushInfo(str(tmp_path / "image.boot"), "src:latest", "dst:latest", (BlobRef("a" * 64, 10), BlobRef("b" * 64, 20)))


class Recorder:
    """Implements a stage hook and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []


def test_hook_nydusify_register_sources(plugin_manager, register_plugin) -> None:
    class Plugin:
        @hookimpl
        def nydusify_register_sources(self):
            return [SourceSpec(name="test-src", description="d", accepts=lambda r: r.startswith("tst:"), open=lambda r, o: (r, o))]

    register_plugin(Plugin())
    assert plugin_manager.source("test-src").name == "test-src"
    assert plugin_manager.detect_source("tst:x").name == "test-src"


def test_hook_nydusify_register_targets(plugin_manager, register_plugin) -> None:
    class Plugin:
        @hookimpl
        def nydusify_register_targets(self):
            yield TargetSpec(name="test-dst", description="d", accepts=lambda r: r.startswith("tdst:"), open=lambda r, o: None)

    register_plugin(Plugin())
    assert plugin_manager.detect_target("tdst:y").name == "test-dst"


def test_hook_nydusify_register_builders(plugin_manager, register_plugin) -> None:
    class Plugin:
        @hookimpl
        def nydusify_register_builders(self):
            yield BuilderSpec(name="test-builder", description="d", create=lambda options: ("builder", options))

    register_plugin(Plugin())
    assert plugin_manager.builder("test-builder").create("opts") == ("builder", "opts")


def test_hook_nydusify_register_backends(plugin_manager, register_plugin) -> None:
    @dataclass
    class Config:
        bucket: str

    class Plugin:
        @hookimpl
        def nydusify_register_backends(self):
            yield BackendSpec(name="test-backend", description="d", config_type=Config, create=lambda c, ctx: c)

    register_plugin(Plugin())
    assert plugin_manager.backend("test-backend").config_type is Config


def test_hook_nydusify_register_commands(plugin_manager, register_plugin) -> None:
    @click.command("hello")
    def hello() -> None:
        click.echo("hello from a plugin")

    class Plugin:
        @hookimpl
        def nydusify_register_commands(self, cli):
            cli.add_command(hello)

    register_plugin(Plugin())
    result = CliRunner().invoke(cli, ["hello"], obj={"plugins": plugin_manager})
    assert result.exit_code == 0, result.output
    assert "hello from a plugin" in result.output
    assert "hello" not in cli.commands  # the module-level group is not mutated


def test_hook_nydusify_resolve_credentials(plugin_manager, register_plugin) -> None:
    class Fallback:
        @hookimpl
        def nydusify_resolve_credentials(self, kind, location):
            return Credentials("fallback", "x")

    class First:
        @hookimpl(tryfirst=True)
        def nydusify_resolve_credentials(self, kind, location):
            return Credentials("first", "y") if location == "reg.example:5000" else None

    register_plugin(Fallback())
    register_plugin(First())
    assert plugin_manager.resolve_credentials("registry", "reg.example:5000").username == "first"
    assert plugin_manager.resolve_credentials("registry", "other").username == "fallback"
    assert "y" not in repr(Credentials("u", "y-secret"))


def _stage_plugin(recorder: Recorder, hook_name: str):
    def impl(self, **kwargs):
        recorder.calls.append((hook_name, kwargs))

    return impl


def test_hook_nydusify_before_convert(plugin_manager, register_plugin, ctx) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def nydusify_before_convert(self, ctx):
            seen.append(ctx)

    register_plugin(Plugin())
    plugin_manager.before_convert(ctx)
    assert seen == [ctx]


def test_hook_nydusify_before_build_layer(plugin_manager, register_plugin, ctx) -> None:
    seen = []
    layer = LayerInfo(0, "sha256:" + "1" * 64, "application/vnd.oci.image.layer.v1.tar+gzip", 123, "linux/amd64")

    class Plugin:
        @hookimpl
        def nydusify_before_build_layer(self, ctx, layer):
            seen.append(layer)

    register_plugin(Plugin())
    plugin_manager.before_build_layer(ctx, layer)
    assert seen == [layer]


def test_hook_nydusify_after_build_layer(plugin_manager, register_plugin, ctx, tmp_path) -> None:
    seen = []
    layer = LayerInfo(1, "sha256:" + "2" * 64, "application/vnd.oci.image.layer.v1.tar", 5)
    built = BuiltLayer(tmp_path / "boot", tmp_path / "blob", "c" * 64, 42)

    class Plugin:
        @hookimpl
        def nydusify_after_build_layer(self, layer, built):  # fewer params than the spec
            seen.append((layer, built))

    register_plugin(Plugin())
    plugin_manager.after_build_layer(ctx, layer, built)
    assert seen == [(layer, built)]


def test_hook_nydusify_before_upload_blob(plugin_manager, register_plugin, ctx) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def nydusify_before_upload_blob(self, ctx, blob, backend_type):
            seen.append((blob, backend_type))

    register_plugin(Plugin())
    plugin_manager.before_upload_blob(ctx, BlobRef("d" * 64, 9), "localfs")
    assert seen == [(BlobRef("d" * 64, 9), "localfs")]


def test_hook_nydusify_after_upload_blob(plugin_manager, register_plugin, ctx) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def nydusify_after_upload_blob(self, blob, backend_type):
            seen.append((blob.id, backend_type))

    register_plugin(Plugin())
    plugin_manager.after_upload_blob(ctx, BlobRef("e" * 64, 9), "registry")
    assert seen == [("e" * 64, "registry")]


def test_hook_nydusify_manifest_annotations(plugin_manager, register_plugin, ctx) -> None:
    class A:
        @hookimpl
        def nydusify_manifest_annotations(self, ctx):
            return {"org.example/a": "1"}

    class B:
        @hookimpl
        def nydusify_manifest_annotations(self, ctx):
            return {"org.example/b": 2}

    class Nothing:
        @hookimpl
        def nydusify_manifest_annotations(self, ctx):
            return None

    register_plugin(A())
    register_plugin(B())
    register_plugin(Nothing())
    assert plugin_manager.manifest_annotations(ctx) == {"org.example/a": "1", "org.example/b": "2"}

    class Clash:
        @hookimpl
        def nydusify_manifest_annotations(self, ctx):
            return {"org.example/a": "other"}

    name = register_plugin(Clash(), name="clashing-plugin")
    with pytest.raises(PluginConflictError, match=name):
        plugin_manager.manifest_annotations(ctx)


def test_hook_nydusify_before_push_manifest(plugin_manager, register_plugin, ctx, info) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def nydusify_before_push_manifest(self, ctx, info):
            seen.append(info.to_json())

    register_plugin(Plugin())
    plugin_manager.before_push_manifest(ctx, info)
    assert seen[0]["blobs"] == [{"id": "a" * 64, "size": 10}, {"id": "b" * 64, "size": 20}]
    assert set(seen[0]) == {"bootstrap_path", "source_ref", "target_ref", "blobs"}


def test_hook_nydusify_after_push_manifest(plugin_manager, register_plugin, ctx, info) -> None:
    seen = []
    desc = Descriptor.for_bytes("application/vnd.oci.image.manifest.v1+json", b"{}")

    class Plugin:
        @hookimpl
        def nydusify_after_push_manifest(self, ctx, info, descriptor):
            seen.append(descriptor)

    register_plugin(Plugin())
    plugin_manager.after_push_manifest(ctx, info, desc)
    assert seen == [desc]


def test_hook_nydusify_after_convert(plugin_manager, register_plugin, ctx) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def nydusify_after_convert(self, ctx, result, error):
            seen.append((result, error))

    register_plugin(Plugin())
    failure = RuntimeError("layer 3 failed")
    plugin_manager.after_convert(ctx, None, failure)
    plugin_manager.after_convert(ctx, {"ok": True}, None)
    assert seen == [(None, failure), ({"ok": True}, None)]


def test_a_raising_stage_hook_becomes_an_error_naming_its_plugin(plugin_manager, register_plugin, ctx, info) -> None:
    class Veto:
        @hookimpl
        def nydusify_before_push_manifest(self, ctx, info):
            raise ValueError("policy forbids this target")

    class Bystander:
        @hookimpl
        def nydusify_before_push_manifest(self, ctx, info):
            pass

    register_plugin(Bystander(), name="bystander")
    register_plugin(Veto(), name="policy-plugin")
    with pytest.raises(HookError) as err:
        plugin_manager.before_push_manifest(ctx, info)
    assert err.value.plugin == "policy-plugin"
    assert "policy forbids this target" in str(err.value)


def test_stage_hooks_run_in_lifo_registration_order(plugin_manager, register_plugin, ctx) -> None:
    order = []

    class First:
        @hookimpl
        def nydusify_before_convert(self, ctx):
            order.append("first-registered")

    class Second:
        @hookimpl
        def nydusify_before_convert(self, ctx):
            order.append("second-registered")

    register_plugin(First())
    register_plugin(Second())
    plugin_manager.before_convert(ctx)
    assert order == ["second-registered", "first-registered"]
