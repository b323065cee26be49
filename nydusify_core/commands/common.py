"""Helpers shared by subcommands."""

from __future__ import annotations

import mmap
from pathlib import Path

import click

from nydusify_core.errors import FormatError, NotFoundError, UsageError
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.plugins import NydusifyPlugins, create_plugin_manager
from nydusify_core.rafs.model import Bootstrap


def get_plugins(ctx: click.Context) -> NydusifyPlugins:
    """The plugin manager of this invocation, created on first use and kept on the root context."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "plugins" not in root.obj:
        blocked = root.params.get("disable_plugin") or ()
        root.obj["plugins"] = create_plugin_manager(blocked=blocked)
    return root.obj["plugins"]


def load_bootstrap(path: str | Path) -> Bootstrap:
    """Parse a bootstrap file (mapped, not copied, into memory)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                raise UsageError(f"bootstrap {path} is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                try:
                    return read_bootstrap(data)
                except FormatError as exc:
                    raise FormatError(f"bootstrap {path}: {exc}") from None
    except FileNotFoundError:
        raise NotFoundError(f"bootstrap {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"bootstrap {path} is a directory") from None
