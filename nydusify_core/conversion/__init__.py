"""Image conversion: an OCI/Docker image into a Nydus image, layer by layer.

`ConvertOptions`, `ConvertResult` and `convert` load on first use, so that a layer worker
process (`layerproc`) imports only the builder it runs, not the whole pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ConvertOptions", "ConvertResult", "convert"]

_HOME = {"ConvertOptions": "options", "ConvertResult": "pipeline", "convert": "pipeline"}

if TYPE_CHECKING:
    from nydusify_core.conversion.options import ConvertOptions  # noqa: F401
    from nydusify_core.conversion.pipeline import ConvertResult, convert  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
