"""Storage backends on the command line: `--backend-type` / `--backend-config[-file]`.

Backends come from the plugin manager (never imported from a plugin), so `oss`/`s3` work
exactly when their distributions are installed. Configs are parsed into the backend's
own config type, which rejects unknown/missing fields and registers secrets for redaction.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from nydusify_core.commands.common import get_plugins, load_bootstrap
from nydusify_core.config import read_json_option
from nydusify_core.errors import UsageError
from nydusify_core.plugins import parse_backend_config
from nydusify_core.protocols import ObjectStore, require_object_store
from nydusify_core.rafs.model import Bootstrap
from nydusify_core.types import BackendContext

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliBackend:
    """An opened backend and the config it was made from (for `meta_prefix`/`blob_prefix`)."""

    type: str
    config: Any
    backend: Any

    @property
    def meta_prefix(self) -> str:
        return str(getattr(self.config, "meta_prefix", "") or "")

    @property
    def blob_prefix(self) -> str:
        return str(getattr(self.config, "blob_prefix", "") or "")

    def store(self, what: str) -> ObjectStore:
        return require_object_store(self.backend, what)

    def meta_key(self, name: str) -> str:
        """Where `pack` puts a bootstrap: `meta_prefix + name as given`."""
        return self.meta_prefix + name

    def blobs(self) -> Any:
        """The backend as pack's blob client: blob ids under `blob_prefix` when the config
        sets one (pack layout), else under `object_prefix` (convert layout)."""
        if self.blob_prefix:
            return self.store("a blob_prefix").with_object_prefix(self.blob_prefix)
        return self.backend

    def close(self) -> None:
        self.backend.close()


def backend_options(default_type: str = "") -> Callable[[F], F]:
    """The three backend options, named and enveloped as upstream's."""

    def decorate(fn: F) -> F:
        fn = click.option("--backend-config-file", envvar="BACKEND_CONFIG_FILE", type=click.Path(dir_okay=False), help="Backend configuration JSON file.")(fn)
        fn = click.option("--backend-config", envvar="BACKEND_CONFIG", help="Backend configuration as a JSON string.")(fn)
        help_type = f" (default {default_type})" if default_type else ""
        fn = click.option("--backend-type", default=default_type, envvar="BACKEND_TYPE", help=f"Storage backend: oss, s3, localfs, ...{help_type}")(fn)
        return fn

    return decorate


def open_cli_backend(ctx: click.Context, backend_type: str, config_text: str | None, config_file: str | None, *, needed_by: str) -> CliBackend:
    """Parse the config (required) and create the backend through the plugin manager."""
    if not backend_type:
        raise UsageError(f"{needed_by} needs --backend-type")
    raw = read_json_option(config_text, config_file, what="backend")
    if not raw:
        raise UsageError(f"{needed_by} needs --backend-config or --backend-config-file (the {backend_type} backend's JSON config)")
    plugins = get_plugins(ctx)
    spec = plugins.backend(backend_type)
    config = parse_backend_config(spec, raw)
    backend = spec.create(config, BackendContext(plugins=plugins))
    return CliBackend(type=backend_type, config=config, backend=backend)


def fetch_bootstrap(cli_backend: CliBackend, name: str, work: Path) -> tuple[Bootstrap, str]:
    """Download the bootstrap `meta_prefix + name` into `work` and parse it; returns (it, its URL)."""
    store = cli_backend.store("--bootstrap-key")
    key = cli_backend.meta_key(name)
    url = store.object_url(key)
    path = work / "bootstrap"
    with store.open_object(key) as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return load_bootstrap(path), url


def load_bootstrap_from(cli_backend: CliBackend | None, local: str | Path | None, key: str | None) -> tuple[Bootstrap, str]:
    """The bootstrap of `--bootstrap PATH` or `--bootstrap-key NAME` (exactly one)."""
    if (local is None) == (key is None):
        raise UsageError("give exactly one of --bootstrap PATH or --bootstrap-key NAME")
    if key is None:
        return load_bootstrap(local), str(local)  # type: ignore[arg-type]
    if cli_backend is None:
        raise UsageError("--bootstrap-key needs --backend-type and --backend-config[-file]")
    with tempfile.TemporaryDirectory(prefix="nydusify-bootstrap-") as work:
        return fetch_bootstrap(cli_backend, key, Path(work))
