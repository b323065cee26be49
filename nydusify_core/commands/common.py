"""Helpers shared by subcommands."""

from __future__ import annotations

import mmap
from pathlib import Path

from nydusify_core.errors import NotFoundError, UsageError
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.model import Bootstrap


def load_bootstrap(path: str | Path) -> Bootstrap:
    """Parse a bootstrap file (mapped, not copied, into memory)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                raise UsageError(f"bootstrap {path} is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return read_bootstrap(data)
    except FileNotFoundError:
        raise NotFoundError(f"bootstrap {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"bootstrap {path} is a directory") from None
