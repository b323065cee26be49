"""Fixtures for testing plugins: fresh managers and throwaway plugins that always unregister."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import pytest

from nydusify_core.plugins import NydusifyPlugins, create_plugin_manager

__all__ = ["plugin_manager", "bare_plugin_manager", "register_plugin"]

_counter = itertools.count()


@pytest.fixture
def plugin_manager(monkeypatch: pytest.MonkeyPatch) -> NydusifyPlugins:
    """A manager with the built-ins and every installed plugin, isolated from the user's env."""
    for var in ("NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD", "NYDUSIFY_DISABLE_PLUGINS", "NYDUSIFY_PLUGINS", "NYDUSIFY_TRACE_HOOKS"):
        monkeypatch.delenv(var, raising=False)
    return create_plugin_manager()


@pytest.fixture
def bare_plugin_manager() -> NydusifyPlugins:
    """Specs only: no built-ins, no entry points."""
    return create_plugin_manager(autoload=False, builtins=())


@pytest.fixture
def register_plugin(plugin_manager: NydusifyPlugins) -> Iterator[Callable[..., str]]:
    """`register_plugin(obj, name=None)` registers `obj` on `plugin_manager` for one test."""
    names: list[str] = []

    def register(plugin: Any, name: str | None = None, manager: NydusifyPlugins | None = None) -> str:
        pm = (manager or plugin_manager).pm
        name = name or f"test-plugin-{next(_counter)}"
        pm.register(plugin, name=name)
        names.append(name)
        # tables are cached per manager; a new plugin must be seen
        for attr in ("_sources", "_targets", "_builders", "_backends"):
            (manager or plugin_manager).__dict__.pop(attr, None)
        return name

    yield register
    for name in names:
        plugin = plugin_manager.pm.get_plugin(name)
        if plugin is not None:
            plugin_manager.pm.unregister(plugin, name=name)
