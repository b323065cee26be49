"""nydusify: convert OCI/Docker images into Nydus (RAFS) images.

Package API (see `nydusify_core.api`)::

    from nydusify_core import ConvertOptions, convert, PackOptions, pack, CheckOptions, check

Plugins implement hooks with `nydusify_core.hookimpl`; see `nydusify_core.hookspecs`.
The API names are imported on first use, so `import nydusify_core` stays cheap (plugins
importing `hookimpl` do not pull in the conversion pipeline).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType as _ModuleType  # not `types`: nydusify_core.types would shadow it
from typing import TYPE_CHECKING, Any

from nydusify_core.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ConvertOptions": "nydusify_core.api",
    "ConvertResult": "nydusify_core.api",
    "pack": "nydusify_core.api",
    "PackOptions": "nydusify_core.api",
    "PackResult": "nydusify_core.api",
    "CheckOptions": "nydusify_core.check",
    "CheckReport": "nydusify_core.check",
}

# subpackages that share their name with the function they export: callable modules
_CALLABLE = ("check", "convert")

__all__ = ["hookimpl", "__version__", *_CALLABLE, *_LAZY]

if TYPE_CHECKING:
    from nydusify_core.api import ConvertOptions, ConvertResult, PackOptions, PackResult, check, convert, pack  # noqa: F811
    from nydusify_core.check import CheckOptions, CheckReport


class _CallableModule(_ModuleType):
    """The `nydusify_core.check` / `nydusify_core.convert` subpackage, callable as its
    `check()` / `convert()` function.

    Each function shares its name with the subpackage defining it, and Python's import
    system sets `nydusify_core.<name>` to the subpackage whenever it is first imported.
    Making the subpackage callable keeps both `nydusify_core.check(options)` and
    `nydusify_core.check.runner` working, whichever is imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(_ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE and isinstance(value, _ModuleType) and type(value) is _ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _CALLABLE:
        return importlib.import_module(f"nydusify_core.{name}")  # made callable on import
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nydusify_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_CALLABLE))
