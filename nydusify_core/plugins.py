"""The plugin manager facade: the only module that calls `pm.hook`.

Built-ins register as ordinary plugins from `BUILTIN_PLUGINS`; third-party plugins come
from the `nydusify` entry-point group, each loaded on its own so one broken plugin is
reported instead of breaking the CLI.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import types
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, TypeVar

import pluggy

from nydusify_core import __version__, hookspecs
from nydusify_core.errors import HookError, PluginConflictError, PluginError, UnknownComponentError
from nydusify_core.types import (
    BackendSpec,
    BlobRef,
    BuilderSpec,
    BuiltLayer,
    ComponentSpec,
    ConvertContext,
    Credentials,
    LayerInfo,
    PluginInfo,
    PushInfo,
    SourceSpec,
    TargetSpec,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nydusify"
BUILTIN_PLUGINS = (
    "nydusify_core.builtin.oci_layout",
    "nydusify_core.builtin.local_dir",
    "nydusify_core.builtin.localfs",
    "nydusify_core.builtin.docker_archive",
    "nydusify_core.builtin.rafs_builder",
)

ENV_DISABLE_AUTOLOAD = "NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE = "NYDUSIFY_DISABLE_PLUGINS"
ENV_ONLY = "NYDUSIFY_PLUGINS"
ENV_TRACE = "NYDUSIFY_TRACE_HOOKS"

S = TypeVar("S", bound=ComponentSpec)


@dataclass(frozen=True)
class LoadFailure:
    name: str
    distribution: str
    version: str
    error: str


def _split_env(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


class NydusifyPlugins:
    """Typed access to everything plugins provide. Create with `create_plugin_manager`."""

    def __init__(self, pm: pluggy.PluginManager, failures: Iterable[LoadFailure] = (), blocked: Iterable[str] = (),
                 distributions: Mapping[str, Any] | None = None):
        self.pm = pm
        self.failures = tuple(failures)
        self.blocked = tuple(blocked)
        self.distributions = dict(distributions or {})  # entry-point plugin name -> its distribution

    # --- component tables -----------------------------------------------------------

    def _table(self, hook_name: str, spec_type: type[S]) -> Mapping[str, S]:
        hook = getattr(self.pm.hook, hook_name)
        found: dict[str, tuple[S, str]] = {}
        for impl in hook.get_hookimpls():
            provider = self._plugin_label(impl.plugin_name)
            # called one by one to know the provider of each record; traced like pm.hook calls
            self.pm.trace.root.get("hook")(f"{hook_name} [{provider}]")
            try:
                records = impl.function() or ()
                records = list(records)
            except Exception as exc:  # a plugin's bug must name the plugin
                raise PluginError(f"plugin {provider!r} failed in {hook_name}: {exc}") from exc
            for record in records:
                if not isinstance(record, spec_type):
                    raise PluginError(
                        f"plugin {provider!r} returned {type(record).__name__} from {hook_name}, expected {spec_type.__name__}"
                    )
                if record.name in found:
                    raise PluginConflictError(record.kind, record.name, [found[record.name][1], provider])
                found[record.name] = (record, provider)
        return types.MappingProxyType({name: found[name][0] for name in sorted(found)})

    @cached_property
    def _sources(self) -> Mapping[str, SourceSpec]:
        return self._table("nydusify_register_sources", SourceSpec)

    @cached_property
    def _targets(self) -> Mapping[str, TargetSpec]:
        return self._table("nydusify_register_targets", TargetSpec)

    @cached_property
    def _builders(self) -> Mapping[str, BuilderSpec]:
        return self._table("nydusify_register_builders", BuilderSpec)

    @cached_property
    def _backends(self) -> Mapping[str, BackendSpec]:
        return self._table("nydusify_register_backends", BackendSpec)

    def sources(self) -> Mapping[str, SourceSpec]:
        return self._sources

    def targets(self) -> Mapping[str, TargetSpec]:
        return self._targets

    def builders(self) -> Mapping[str, BuilderSpec]:
        return self._builders

    def backends(self) -> Mapping[str, BackendSpec]:
        return self._backends

    def _get(self, kind: str, table: Mapping[str, S], name: str) -> S:
        try:
            return table[name]
        except KeyError:
            failed = [f"{f.name} ({f.error})" for f in self.failures]
            raise UnknownComponentError(kind, name, table.keys(), failed) from None

    def source(self, name: str) -> SourceSpec:
        return self._get("source", self.sources(), name)

    def target(self, name: str) -> TargetSpec:
        return self._get("target", self.targets(), name)

    def builder(self, name: str) -> BuilderSpec:
        return self._get("builder", self.builders(), name)

    def backend(self, name: str) -> BackendSpec:
        return self._get("backend", self.backends(), name)

    def _detect(self, kind: str, table: Mapping[str, S], ref: str) -> S:
        matches = [spec for spec in table.values() if spec.accepts(ref)]  # type: ignore[attr-defined]
        specific = [spec for spec in matches if not getattr(spec, "catch_all", False)]
        candidates = specific or matches
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise UnknownComponentError(kind, f"for reference {ref!r}", table.keys(), [f.name for f in self.failures])
        names = ", ".join(m.name for m in candidates)
        raise PluginError(f"reference {ref!r} is accepted by several {kind}s ({names}); choose one with --{kind}-type")

    def detect_source(self, ref: str) -> SourceSpec:
        return self._detect("source", self.sources(), ref)

    def detect_target(self, ref: str) -> TargetSpec:
        return self._detect("target", self.targets(), ref)

    # --- lookup and commands -------------------------------------------------------

    def resolve_credentials(self, kind: str, location: str) -> Credentials | None:
        return self.pm.hook.nydusify_resolve_credentials(kind=kind, location=location)

    def register_commands(self, cli: Any) -> None:
        self.pm.hook.nydusify_register_commands(cli=cli)

    # --- stage hooks ----------------------------------------------------------------

    def _call_stage(self, hook_name: str, **kwargs: Any) -> list[Any]:
        hook = getattr(self.pm.hook, hook_name)
        try:
            return hook(**kwargs)
        except HookError:
            raise
        except Exception as exc:
            raise HookError(hook_name, self._culprit(hook, exc), exc) from exc

    def _culprit(self, hook: Any, exc: BaseException) -> str:
        """Name the plugin whose implementation raised, by matching traceback frames."""
        codes = {impl.function.__code__: impl.plugin_name for impl in hook.get_hookimpls() if hasattr(impl.function, "__code__")}
        culprit = "unknown"
        tb = exc.__traceback__
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code)
            if name is not None:
                culprit = name
            tb = tb.tb_next
        return self._plugin_label(culprit)

    def before_convert(self, ctx: ConvertContext) -> None:
        self._call_stage("nydusify_before_convert", ctx=ctx)

    def after_convert(self, ctx: ConvertContext, result: Any, error: BaseException | None) -> None:
        self._call_stage("nydusify_after_convert", ctx=ctx, result=result, error=error)

    def before_build_layer(self, ctx: ConvertContext, layer: LayerInfo) -> None:
        self._call_stage("nydusify_before_build_layer", ctx=ctx, layer=layer)

    def after_build_layer(self, ctx: ConvertContext, layer: LayerInfo, built: BuiltLayer) -> None:
        self._call_stage("nydusify_after_build_layer", ctx=ctx, layer=layer, built=built)

    def before_upload_blob(self, ctx: ConvertContext, blob: BlobRef, backend_type: str) -> None:
        self._call_stage("nydusify_before_upload_blob", ctx=ctx, blob=blob, backend_type=backend_type)

    def after_upload_blob(self, ctx: ConvertContext, blob: BlobRef, backend_type: str) -> None:
        self._call_stage("nydusify_after_upload_blob", ctx=ctx, blob=blob, backend_type=backend_type)

    def manifest_annotations(self, ctx: ConvertContext) -> dict[str, str]:
        hook = self.pm.hook.nydusify_manifest_annotations
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for impl in reversed(hook.get_hookimpls()):  # registration order, for stable messages
            try:
                result = impl.function(**{a: ctx for a in impl.argnames})
            except Exception as exc:
                raise HookError("nydusify_manifest_annotations", self._plugin_label(impl.plugin_name), exc) from exc
            for key, value in (result or {}).items():
                if key in merged:
                    raise PluginConflictError("annotation", key, [owner[key], self._plugin_label(impl.plugin_name)])
                merged[str(key)] = str(value)
                owner[key] = self._plugin_label(impl.plugin_name)
        return merged

    def before_push_manifest(self, ctx: ConvertContext, info: PushInfo) -> None:
        self._call_stage("nydusify_before_push_manifest", ctx=ctx, info=info)

    def after_push_manifest(self, ctx: ConvertContext, info: PushInfo, descriptor: Any) -> None:
        self._call_stage("nydusify_after_push_manifest", ctx=ctx, info=info, descriptor=descriptor)

    # --- listing --------------------------------------------------------------------

    def _plugin_label(self, plugin_name: str) -> str:
        return plugin_name

    def installed(self, include_builtin: bool = False) -> list[PluginInfo]:
        provides = self._provides()
        rows: list[PluginInfo] = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            builtin = name in BUILTIN_PLUGINS
            if builtin and not include_builtin:
                continue
            dist = self.distributions.get(name)
            version = dist.version if dist is not None else (__version__ if builtin else "")
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or ())
            rows.append(
                PluginInfo(
                    name=name,
                    version=version,
                    status="builtin" if builtin else "loaded",
                    hooks=tuple(hooks),
                    provides=tuple(provides.get(name, ())),
                    distribution=_dist_name(dist) if dist is not None else "nydusify-core",
                )
            )
        for failure in self.failures:
            rows.append(PluginInfo(name=failure.name, version=failure.version, status="failed", distribution=failure.distribution, error=failure.error))
        for name in self.blocked:
            if include_builtin or name not in BUILTIN_PLUGINS:
                rows.append(PluginInfo(name=name, version="", status="blocked"))
        return sorted(rows, key=lambda r: (r.status != "builtin", r.name))

    def _provides(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        kinds = (
            ("nydusify_register_sources", "source"),
            ("nydusify_register_targets", "target"),
            ("nydusify_register_builders", "builder"),
            ("nydusify_register_backends", "backend"),
        )
        for hook_name, kind in kinds:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                try:
                    records = list(impl.function() or ())
                except Exception as exc:
                    out.setdefault(impl.plugin_name, []).append(f"{kind}:<error: {exc}>")
                    continue
                for record in records:
                    out.setdefault(impl.plugin_name, []).append(f"{kind}:{getattr(record, 'name', '?')}")
        return out


def _entry_points() -> list[tuple[importlib.metadata.EntryPoint, Any]]:
    """Entry points of our group with their distributions, as pluggy sees them."""
    found = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.name not in seen:
                seen.add(ep.name)
                found.append((ep, dist))
    return found


def _dist_name(dist: Any) -> str:
    return dist.metadata["Name"] or "?"


def _drop_invalid(pm: pluggy.PluginManager, failures: list[LoadFailure], dists: dict[str, Any]) -> None:
    """`check_pending`, but a third-party plugin with an unknown hook is unloaded and
    reported as failed instead of breaking the CLI; a built-in with one is a bug."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or "?"
            if name in BUILTIN_PLUGINS:
                raise PluginError(f"built-in plugin {name} is invalid: {exc}") from exc
            pm.unregister(exc.plugin)
            dist = dists.pop(name, None)
            failures.append(LoadFailure(name, _dist_name(dist) if dist else "?", dist.version if dist else "", str(exc)))
            log.warning("plugin %s is invalid and was not loaded: %s", name, exc)


def create_plugin_manager(
    *,
    autoload: bool | None = None,
    only: Iterable[str] | None = None,
    blocked: Iterable[str] = (),
    builtins: Iterable[str] = BUILTIN_PLUGINS,
) -> NydusifyPlugins:
    """Build a plugin manager: specs, built-ins, blocks, entry points, then `check_pending`.

    Environment: NYDUSIFY_DISABLE_PLUGIN_AUTOLOAD (skip entry points), NYDUSIFY_DISABLE_PLUGINS
    (comma list to block), NYDUSIFY_PLUGINS (comma allow-list; empty means none),
    NYDUSIFY_TRACE_HOOKS (print every hook call to stderr).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)

    blocked_names = list(blocked) + (_split_env(ENV_DISABLE) or [])
    for name in blocked_names:
        pm.set_blocked(name)

    for module_name in builtins:
        if pm.is_blocked(module_name):
            continue
        pm.register(importlib.import_module(module_name), name=module_name)

    if autoload is None:
        autoload = not os.environ.get(ENV_DISABLE_AUTOLOAD)
    allow = list(only) if only is not None else _split_env(ENV_ONLY)
    failures: list[LoadFailure] = []
    dists: dict[str, Any] = {}
    if autoload:
        # loaded here, not with pluggy's load_setuptools_entrypoints: that re-reads every
        # installed distribution's metadata on each call (~15 ms a plugin at start-up)
        for ep, dist in _entry_points():
            if allow is not None and ep.name not in allow:
                continue
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                dist_name = _dist_name(dist)
                failures.append(LoadFailure(ep.name, dist_name, dist.version or "", f"{type(exc).__name__}: {exc}"))
                log.warning("plugin %s (%s) failed to load: %s", ep.name, dist_name, exc)
            else:
                dists[ep.name] = dist
    _drop_invalid(pm, failures, dists)

    if os.environ.get(ENV_TRACE):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return NydusifyPlugins(pm, failures, blocked_names, dists)


def parse_backend_config(spec: BackendSpec, raw: Mapping[str, Any]) -> Any:
    """Parse a backend's JSON config into its `config_type`, rejecting unknown keys."""
    from nydusify_core.config import load_dataclass

    return load_dataclass(spec.config_type, raw, what=f"{spec.name} backend config")


Factory = Callable[..., Any]
