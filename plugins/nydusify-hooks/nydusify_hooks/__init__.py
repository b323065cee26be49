"""nydusify-hooks: every conversion stage hook, forwarded to an external program.

The program is `NYDUS_HOOK_PLUGIN_PATH` (default `./nydus-hook-plugin`, used only when it
exists, as Go nydusify). It is asked once per conversion which hooks it wants (handshake),
then run once per call with the JSON request on stdin; an error reply, a crash or a timeout
aborts the conversion like a raising hook. Protocol: docs/plugins/external-hooks.md.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from nydusify_core import hookimpl

from nydusify_hooks.program import HookProgram, HookProgramError, configured_timeout, find_program
from nydusify_hooks.protocol import HOOKS, PROTOCOL

__all__ = ["HOOKS", "PROTOCOL", "HookProgram", "HookProgramError"]

_lock = threading.Lock()
# one entry per running conversion (keyed by its context object); None = no program
_programs: dict[int, HookProgram | None] = {}


def _program(ctx: Any) -> HookProgram | None:
    with _lock:
        if id(ctx) in _programs:
            return _programs[id(ctx)]
    path = find_program()
    program = HookProgram.start(path, configured_timeout()) if path is not None else None
    with _lock:
        _programs[id(ctx)] = program
    return program


def _forward(hook: str, ctx: Any, **payload: Any) -> dict[str, Any] | None:
    program = _program(ctx)
    if program is None or not program.wants(hook):
        return None
    return program.call(hook, ctx, payload)


@hookimpl
def nydusify_before_convert(ctx: Any) -> None:
    with _lock:  # a fresh handshake per conversion: the program may have changed
        _programs.pop(id(ctx), None)
    _forward("before_convert", ctx)


@hookimpl
def nydusify_before_build_layer(ctx: Any, layer: Any) -> None:
    _forward("before_build_layer", ctx, layer=layer)


@hookimpl
def nydusify_after_build_layer(ctx: Any, layer: Any, built: Any) -> None:
    _forward("after_build_layer", ctx, layer=layer, built=built)


@hookimpl
def nydusify_before_upload_blob(ctx: Any, blob: Any, backend_type: str) -> None:
    _forward("before_upload_blob", ctx, blob=blob, backend_type=backend_type)


@hookimpl
def nydusify_after_upload_blob(ctx: Any, blob: Any, backend_type: str) -> None:
    _forward("after_upload_blob", ctx, blob=blob, backend_type=backend_type)


@hookimpl
def nydusify_manifest_annotations(ctx: Any) -> Mapping[str, str] | None:
    reply = _forward("manifest_annotations", ctx)
    if reply is None:
        return None
    annotations = reply.get("annotations") or {}
    program = _program(ctx)
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise HookProgramError(f"hook program {program.path if program else '?'} (manifest_annotations): "
                               '"annotations" must map strings to strings')
    return annotations or None


@hookimpl
def nydusify_before_push_manifest(ctx: Any, info: Any) -> None:
    _forward("before_push_manifest", ctx, info=info)


@hookimpl
def nydusify_after_push_manifest(ctx: Any, info: Any, descriptor: Any) -> None:
    _forward("after_push_manifest", ctx, info=info, descriptor=descriptor)


@hookimpl
def nydusify_after_convert(ctx: Any, result: Any, error: BaseException | None) -> None:
    try:
        with _lock:
            known = id(ctx) in _programs
        if not known and error is not None:
            return  # the conversion failed before the program was asked anything
        failure = None if error is None else {"type": type(error).__name__, "message": str(error)}
        _forward("after_convert", ctx, result=result, error=failure)
    finally:
        with _lock:
            _programs.pop(id(ctx), None)
