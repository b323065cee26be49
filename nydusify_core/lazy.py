"""Names whose modules load on first use.

Every plugin is imported at every start-up, but the SDK behind a source, target or backend
(requests, boto3, oss2: tens of milliseconds each) is needed only by a run that uses it. A
plugin registers these stand-ins instead of the real classes.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_callable", "lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for `package`: `names` maps each lazily exported
    attribute to the submodule that defines it."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__


def lazy_callable(target: str) -> Callable[..., Any]:
    """`"package.module:attribute"` as a callable that imports it on its first call (a
    backend's `create`, a source's `open`)."""
    module, _, attribute = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attribute
    return call
