"""nydusify: convert OCI/Docker images into Nydus (RAFS) images.

Package API (see `nydusify_core.api`)::

    from nydusify_core import ConvertOptions, convert, PackOptions, pack, CheckOptions, check

Plugins implement hooks with `nydusify_core.hookimpl`; see `nydusify_core.hookspecs`.
The API names are imported on first use, so `import nydusify_core` stays cheap (plugins
importing `hookimpl` do not pull in the conversion pipeline).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nydusify_core.hookspecs import hookimpl

__version__ = "0.1.0"

_API = ("convert", "ConvertOptions", "ConvertResult", "pack", "PackOptions", "PackResult", "check", "CheckOptions", "CheckReport")

__all__ = ["hookimpl", "__version__", *_API]

if TYPE_CHECKING:
    from nydusify_core.api import (CheckOptions, CheckReport, ConvertOptions, ConvertResult, PackOptions, PackResult, check,  # noqa: F401
                                   convert, pack)  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'nydusify_core' has no attribute {name!r}")
    value = getattr(importlib.import_module("nydusify_core.api"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
