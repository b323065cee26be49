"""The plugin manager: built-ins, discovery through entry points, failures, switches."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from nydusify_core import hookimpl
from nydusify_core.errors import PluginConflictError, UnknownComponentError
from nydusify_core.plugins import BUILTIN_PLUGINS, create_plugin_manager
from nydusify_core.types import BackendSpec


class FakeDist:
    """A distribution as `importlib.metadata.distributions()` returns it."""

    def __init__(self, name: str, entry_points: dict[str, str], version: str = "1.2.3") -> None:
        self.metadata = {"Name": name, "name": name}
        self.version = version
        self.entry_points = [importlib.metadata.EntryPoint(ep, target, "nydusify") for ep, target in entry_points.items()]
        self._normalized_name = name


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Importable plugin modules written into a temp dir on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD", "NYDUSIFY_DISABLE_PLUGINS", "NYDUSIFY_PLUGINS", "NYDUSIFY_TRACE_HOOKS"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[name]


def write_module(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(body))


def fake_distributions(monkeypatch: pytest.MonkeyPatch, *dists: FakeDist) -> None:
    monkeypatch.setattr(importlib.metadata, "distributions", lambda **kw: iter(dists))


GOOD_PLUGIN = """
    from dataclasses import dataclass
    from nydusify_core import hookimpl
    from nydusify_core.types import BackendSpec

    @dataclass
    class Config:
        dir: str = ""

    @hookimpl
    def nydusify_register_backends():
        yield BackendSpec(name="{name}", description="test backend", config_type=Config, create=lambda c, ctx: None)
"""


def test_builtins_are_registered_as_plugins(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distributions(monkeypatch)
    plugins = create_plugin_manager()
    names = {name for name, _ in plugins.pm.list_name_plugin()}
    assert set(BUILTIN_PLUGINS) <= names
    assert {"oci-layout", "dir"} <= set(plugins.sources())
    assert "oci-layout" in plugins.targets()
    assert "localfs" in plugins.backends()


def test_entry_point_plugins_are_discovered(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_good", GOOD_PLUGIN.format(name="good-store"))
    fake_distributions(monkeypatch, FakeDist("nydusify-good", {"nydusify-good": "fakeplug_good"}))
    plugins = create_plugin_manager()
    assert isinstance(plugins.backend("good-store"), BackendSpec)
    row = next(r for r in plugins.installed() if r.name == "nydusify-good")
    assert (row.status, row.version, row.provides) == ("loaded", "1.2.3", ("backend:good-store",))


def test_broken_plugin_is_reported_not_raised(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_broken", "raise RuntimeError('boom at import')\n")
    write_module(plugin_modules, "fakeplug_good2", GOOD_PLUGIN.format(name="fine"))
    fake_distributions(
        monkeypatch,
        FakeDist("nydusify-broken", {"nydusify-broken": "fakeplug_broken"}),
        FakeDist("nydusify-good2", {"nydusify-good2": "fakeplug_good2"}),
    )
    plugins = create_plugin_manager()
    failed = [r for r in plugins.installed() if r.status == "failed"]
    assert [r.name for r in failed] == ["nydusify-broken"]
    assert "boom at import" in failed[0].error
    assert "fine" in plugins.backends()


def test_plugin_with_unknown_hook_is_unloaded_and_reported(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(
        plugin_modules,
        "fakeplug_typo",
        """
        from nydusify_core import hookimpl

        @hookimpl
        def nydusify_befor_convert(ctx):
            pass
        """,
    )
    fake_distributions(monkeypatch, FakeDist("nydusify-typo", {"nydusify-typo": "fakeplug_typo"}))
    plugins = create_plugin_manager()
    assert not plugins.pm.has_plugin("nydusify-typo")
    assert [r.name for r in plugins.installed() if r.status == "failed"] == ["nydusify-typo"]


def test_unknown_component_names_available_and_failed(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_broken2", "import does_not_exist_anywhere\n")
    fake_distributions(monkeypatch, FakeDist("nydusify-s3ish", {"nydusify-s3ish": "fakeplug_broken2"}))
    plugins = create_plugin_manager()
    with pytest.raises(UnknownComponentError) as info:
        plugins.backend("s3ish")
    message = str(info.value)
    assert "localfs" in message and "nydusify-s3ish" in message


def test_two_plugins_claiming_one_name_is_an_error_naming_both(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_a", GOOD_PLUGIN.format(name="same"))
    write_module(plugin_modules, "fakeplug_b", GOOD_PLUGIN.format(name="same"))
    fake_distributions(
        monkeypatch,
        FakeDist("nydusify-a", {"nydusify-a": "fakeplug_a"}),
        FakeDist("nydusify-b", {"nydusify-b": "fakeplug_b"}),
    )
    plugins = create_plugin_manager()
    with pytest.raises(PluginConflictError) as info:
        plugins.backends()
    assert "nydusify-a" in str(info.value) and "nydusify-b" in str(info.value)


def test_blocking_by_argument_and_environment(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_c", GOOD_PLUGIN.format(name="cee"))
    write_module(plugin_modules, "fakeplug_d", GOOD_PLUGIN.format(name="dee"))
    fake_distributions(
        monkeypatch,
        FakeDist("nydusify-c", {"nydusify-c": "fakeplug_c"}),
        FakeDist("nydusify-d", {"nydusify-d": "fakeplug_d"}),
    )
    monkeypatch.setenv("NYDUSIFY_DISABLE_PLUGINS", "nydusify-d")
    plugins = create_plugin_manager(blocked=["nydusify-c"])
    assert "cee" not in plugins.backends() and "dee" not in plugins.backends()
    assert {r.name for r in plugins.installed() if r.status == "blocked"} == {"nydusify-c", "nydusify-d"}


def test_builtins_can_be_blocked(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distributions(monkeypatch)
    plugins = create_plugin_manager(blocked=["nydusify_core.builtin.localfs"])
    assert "localfs" not in plugins.backends()


def test_allow_list_from_environment(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_e", GOOD_PLUGIN.format(name="eee"))
    write_module(plugin_modules, "fakeplug_f", GOOD_PLUGIN.format(name="eff"))
    fake_distributions(
        monkeypatch,
        FakeDist("nydusify-e", {"nydusify-e": "fakeplug_e"}),
        FakeDist("nydusify-f", {"nydusify-f": "fakeplug_f"}),
    )
    monkeypatch.setenv("NYDUSIFY_PLUGINS", "nydusify-f")
    assert "eee" not in create_plugin_manager().backends()
    assert "eff" in create_plugin_manager().backends()
    monkeypatch.setenv("NYDUSIFY_PLUGINS", "")
    assert "eff" not in create_plugin_manager().backends()


def test_autoload_can_be_disabled(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_modules, "fakeplug_g", GOOD_PLUGIN.format(name="gee"))
    fake_distributions(monkeypatch, FakeDist("nydusify-g", {"nydusify-g": "fakeplug_g"}))
    monkeypatch.setenv("NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = create_plugin_manager()
    assert "gee" not in plugins.backends()
    assert "localfs" in plugins.backends()


def test_hook_tracing_writes_calls_to_stderr(plugin_modules: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_distributions(monkeypatch)
    monkeypatch.setenv("NYDUSIFY_TRACE_HOOKS", "1")
    create_plugin_manager().backends()
    assert "nydusify_register_backends" in capsys.readouterr().err


def test_invalid_component_name_is_rejected() -> None:
    from nydusify_core.errors import PluginError

    with pytest.raises(PluginError):
        BackendSpec(name="Bad_Name", description="x")


def test_catch_all_source_yields_to_specific_ones() -> None:
    from nydusify_core.types import SourceSpec

    class Plugin:
        @hookimpl
        def nydusify_register_sources(self):
            yield SourceSpec(name="anything", description="d", accepts=lambda ref: True, catch_all=True)

    plugin_manager = create_plugin_manager(autoload=False)
    plugin_manager.pm.register(Plugin())
    assert plugin_manager.detect_source("oci:/some/layout:tag").name == "oci-layout"
    assert plugin_manager.detect_source("example.com/repo:tag").name == "anything"
