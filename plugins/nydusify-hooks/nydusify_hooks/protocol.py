"""The `nydusify-hook/1` wire format: requests built from hook payloads, replies validated.

One request is one JSON object written to the program's stdin (then stdin is closed); one
reply is one JSON object on its stdout. Documented in docs/plugins/external-hooks.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from nydusify_core import __version__

PROTOCOL = "nydusify-hook/1"

# hook names on the wire (the hookspec names without the `nydusify_` prefix), in pipeline order
HOOKS = (
    "before_convert",
    "before_build_layer",
    "after_build_layer",
    "before_upload_blob",
    "after_upload_blob",
    "manifest_annotations",
    "before_push_manifest",
    "after_push_manifest",
    "after_convert",
)

# options never sent to the program: they may hold secrets
_SECRET_OPTIONS = frozenset({"backend_config"})
MAX_REPLY = 1 << 20  # a reply is a small status object; more is a misbehaving program


class ProtocolError(ValueError):
    """A reply that does not follow `nydusify-hook/1`."""


def to_wire(value: Any) -> Any:
    """Payload records as plain JSON: dataclasses by field, paths as strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_wire(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v) for v in value]
    return str(value)


def context_to_wire(ctx: Any) -> dict[str, Any]:
    """The `ConvertContext`, minus options that may carry credentials."""
    wire = to_wire(ctx)
    wire["options"] = {k: v for k, v in (wire.get("options") or {}).items() if k not in _SECRET_OPTIONS}
    return wire


def handshake_request() -> dict[str, Any]:
    return {"protocol": PROTOCOL, "hook": "handshake", "nydusify_version": __version__, "hooks": list(HOOKS)}


def call_request(hook: str, ctx: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "hook": hook, "context": context_to_wire(ctx), "payload": to_wire(payload)}


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_reply(data: bytes) -> dict[str, Any]:
    """Parse and validate a reply: a JSON object with a boolean `ok`."""
    text = data.strip()
    if not text:
        raise ProtocolError("no reply on stdout")
    try:
        reply = json.loads(text)
    except ValueError:
        raise ProtocolError("reply is not one JSON object") from None
    if not isinstance(reply, dict):
        raise ProtocolError("reply is not a JSON object")
    if not isinstance(reply.get("ok"), bool):
        raise ProtocolError('reply has no boolean "ok"')
    return reply


def check_handshake(reply: Mapping[str, Any]) -> tuple[str, ...]:
    """The hooks the program subscribes to (all of them when it lists none)."""
    if reply.get("protocol") != PROTOCOL:
        raise ProtocolError(f"program speaks {reply.get('protocol')!r}, expected {PROTOCOL!r}")
    hooks = reply.get("hooks", list(HOOKS))
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise ProtocolError('"hooks" must be a list of hook names')
    unknown = sorted(set(hooks) - set(HOOKS))
    if unknown:
        raise ProtocolError(f"unknown hooks {', '.join(unknown)}; known: {', '.join(HOOKS)}")
    return tuple(hooks)


def one_line(text: Any, limit: int = 300) -> str:
    """A program's error text, safe for a one-line error message."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
