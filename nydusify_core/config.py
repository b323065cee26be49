"""Strict JSON-to-dataclass parsing for user-supplied configuration (backend configs)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from nydusify_core.errors import UsageError

T = TypeVar("T")


def read_json_option(text: str | None, path: str | Path | None, *, what: str) -> dict[str, Any]:
    """The JSON of `--X-config` (a string) or `--X-config-file` (a path); not both."""
    if text and path:
        raise UsageError(f"give either --{what}-config or --{what}-config-file, not both")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {what} config file {str(path)!r}: {exc.strerror}") from None
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} config is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} config must be a JSON object")
    return data


def load_dataclass(cls: type[T], raw: Mapping[str, Any], *, what: str) -> T:
    """Build `cls` from `raw`: unknown keys, missing required fields and wrong types are errors."""
    if cls is dict:
        return dict(raw)  # type: ignore[return-value]
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UsageError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    missing = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UsageError(f"{what}: missing required field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints.get(name, Any), f"{what}: field {name!r}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UsageError:
                continue
        raise UsageError(f"{where} has an invalid value {_safe(value)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"{where} must be an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{where} must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{where} must be a string")
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if isinstance(value, dict):
            return value
        raise UsageError(f"{where} must be an object")
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, list):
            return value if origin is not tuple else tuple(value)
        raise UsageError(f"{where} must be a list")
    return value


def _safe(value: Any) -> str:
    """Values may be secrets: only say what type they were."""
    return f"of type {type(value).__name__}"
