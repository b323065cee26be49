"""Every hook a nydusify plugin can implement, and nothing else.

Plugins implement these with `@nydusify_core.hookimpl` and are discovered through the
`nydusify` entry-point group. Hooks are always called with keyword arguments; an
implementation may accept fewer parameters than its spec, which is how specs grow
without breaking plugins. Only `nydusify_core.plugins.NydusifyPlugins` calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pluggy

if TYPE_CHECKING:
    import click

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

PROJECT_NAME = "nydusify"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------------------
# Registration: components, looked up by name. Called once per plugin manager.
# ---------------------------------------------------------------------------------------


@hookspec
def nydusify_register_sources() -> Iterable["SourceSpec"]:
    """Register source fetchers: things that read an image (index or manifest, configs,
    layer streams) from a reference.

    Called once, the first time the core needs the table of sources. Each `SourceSpec`
    has a unique lowercase `name`, a one-line `description`, `accepts(ref) -> bool` used to
    pick a source when the user gives no `--source-type`, and `open(ref, options) -> Source`
    (see `nydusify_core.protocols.Source`). Two plugins registering one name is an error
    naming both.

    :return: an iterable of `SourceSpec` (may be empty).

    Example::

        @hookimpl
        def nydusify_register_sources():
            yield SourceSpec(name="my-store", description="images from my store",
                             accepts=lambda ref: ref.startswith("mystore:"), open=MySource)
    """


@hookspec
def nydusify_register_targets() -> Iterable["TargetSpec"]:
    """Register targets: where converted manifests, configs and bootstrap layers are written.

    Called once, the first time the core needs the table of targets. Kept apart from storage
    backends (where Nydus data blobs go), as in Go nydusify. `open(ref, options)` returns a
    `nydusify_core.protocols.Target`.

    :return: an iterable of `TargetSpec`.

    Example::

        @hookimpl
        def nydusify_register_targets():
            yield TargetSpec(name="archive", description="an OCI archive file",
                             accepts=lambda ref: ref.endswith(".tar"), open=ArchiveTarget)
    """


@hookspec
def nydusify_register_builders() -> Iterable["BuilderSpec"]:
    """Register layer builders: turn a layer tar stream or a directory into RAFS artifacts
    (a bootstrap and a data blob), and merge per-layer bootstraps.

    Called once, the first time the core needs the table of builders. `create(options)`
    returns a `nydusify_core.protocols.LayerBuilder`.

    :return: an iterable of `BuilderSpec`.

    Example::

        @hookimpl
        def nydusify_register_builders():
            yield BuilderSpec(name="external", description="drives nydus-image",
                              create=ExternalBuilder)
    """


@hookspec
def nydusify_register_backends() -> Iterable["BackendSpec"]:
    """Register storage backends: where Nydus data blobs are stored and read back
    (put, exists, size, ranged get, delete).

    Called once, the first time the core needs the table of backends. `config_type` is a
    dataclass that the JSON of `--backend-config` / `--backend-config-file` is parsed into
    (unknown keys are rejected, missing required fields reported); `create(config, context)`
    returns a `nydusify_core.protocols.StorageBackend`. Every backend should pass
    `nydusify_core.testing.backend_contract.BackendContract`.

    :return: an iterable of `BackendSpec`.

    Example::

        @hookimpl
        def nydusify_register_backends():
            yield BackendSpec(name="my-store", description="blobs in my store",
                              config_type=MyConfig, create=MyBackend)
    """


@hookspec
def nydusify_register_commands(cli: "click.Group") -> None:
    """Add subcommands to the `nydusify` command line.

    Called lazily, the first time the CLI lists or looks up a subcommand, with the root
    `click.Group`; add commands with `cli.add_command(...)`. The return value is ignored.

    :param cli: the root command group.
    """


# ---------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def nydusify_resolve_credentials(kind: str, location: str) -> "Credentials | None":
    """Find credentials for a registry host or an object-storage endpoint.

    Called whenever a client needs credentials it was not given explicitly. Stops at the
    first non-None result (`firstresult`), so a plugin marked `tryfirst=True` overrides
    the built-in lookups.

    :param kind: ``"registry"``, ``"s3"`` or ``"oss"``.
    :param location: a registry host (``host[:port]``) or an endpoint URL.
    :return: a `Credentials` record, or None when this plugin knows none.
    """


# ---------------------------------------------------------------------------------------
# Conversion stages, in the order they happen. They observe or veto: an exception raised
# here aborts the conversion cleanly (nothing after the failing stage is pushed) and the
# error names the plugin. Data flows only through return values.
# ---------------------------------------------------------------------------------------


@hookspec
def nydusify_before_convert(ctx: "ConvertContext") -> None:
    """Called once before anything is read from the source.

    :param ctx: the conversion's read-only context (references, work dir, options).
    """


@hookspec
def nydusify_before_build_layer(ctx: "ConvertContext", layer: "LayerInfo") -> None:
    """Called before each source layer is converted (layers may build in parallel).

    :param ctx: the conversion context.
    :param layer: index, digest, media type, size and platform of the source layer.
    """


@hookspec
def nydusify_after_build_layer(ctx: "ConvertContext", layer: "LayerInfo", built: "BuiltLayer") -> None:
    """Called after each source layer was converted, before its blob is uploaded.

    :param ctx: the conversion context.
    :param layer: the source layer.
    :param built: the per-layer bootstrap and data blob (paths in the work dir).
    """


@hookspec
def nydusify_before_upload_blob(ctx: "ConvertContext", blob: "BlobRef", backend_type: str) -> None:
    """Called before a Nydus data blob is uploaded to its storage backend.

    :param ctx: the conversion context.
    :param blob: the blob's id (hex digest) and size.
    :param backend_type: the backend's name (``registry``, ``oss``, ``s3``, ``localfs``...).
    """


@hookspec
def nydusify_after_upload_blob(ctx: "ConvertContext", blob: "BlobRef", backend_type: str) -> None:
    """Called after a blob is known to be stored (uploaded, or already present).

    :param ctx: the conversion context.
    :param blob: the blob's id and size.
    :param backend_type: the backend's name.
    """


@hookspec
def nydusify_manifest_annotations(ctx: "ConvertContext") -> "Mapping[str, str] | None":
    """Contribute annotations to every converted manifest.

    Results of all plugins are merged; a key claimed by two plugins is an error.

    :param ctx: the conversion context.
    :return: a mapping of annotation keys to string values, or None for none.
    """


@hookspec
def nydusify_before_push_manifest(ctx: "ConvertContext", info: "PushInfo") -> None:
    """Called after every blob, config and the bootstrap layer are stored, right before
    the manifest is pushed (the counterpart of Go nydusify's `BeforePushManifest`).
    Called once per converted manifest: with several platforms, the index that lists
    them is pushed (and tagged) after the last of these calls.

    :param ctx: the conversion context.
    :param info: bootstrap path, source ref, target ref, blobs [{id, size}].
    """


@hookspec
def nydusify_after_push_manifest(ctx: "ConvertContext", info: "PushInfo", descriptor: "Descriptor") -> None:
    """Called right after a converted manifest was pushed (Go's `AfterPushManifest`).

    :param ctx: the conversion context.
    :param info: the same payload as before the push.
    :param descriptor: descriptor of the pushed manifest.
    """


@hookspec
def nydusify_after_convert(ctx: "ConvertContext", result: "Any", error: "BaseException | None") -> None:
    """Always called at the end of a conversion, from a `finally`: with the result on
    success, or with the exception that ended it.

    :param ctx: the conversion context.
    :param result: the conversion result, or None on failure.
    :param error: the exception, or None on success.
    """
