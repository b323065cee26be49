"""Running the hook program: one process per call, stdin request, stdout reply, a timeout.

One process per call keeps no state between calls that could go stale (a crashed or hung
program only fails its own call) and needs no framing beyond "one object each way"; a
conversion makes a handful of calls per layer, so the cost of a fork/exec is small.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nydusify_core.errors import NydusifyError

from nydusify_hooks import protocol

log = logging.getLogger(__name__)

PATH_ENV = "NYDUS_HOOK_PLUGIN_PATH"
DEFAULT_PATH = "./nydus-hook-plugin"
TIMEOUT_ENV = "NYDUS_HOOK_PLUGIN_TIMEOUT"
DEFAULT_TIMEOUT = 60.0


class HookProgramError(NydusifyError):
    """The hook program refused a call, failed, timed out or broke the protocol."""


def configured_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise HookProgramError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise HookProgramError(f"{TIMEOUT_ENV} must be positive, not {raw}")
    return value


def find_program() -> Path | None:
    """`NYDUS_HOOK_PLUGIN_PATH`, or `./nydus-hook-plugin`; None when that file does not exist
    (the hook is off, as upstream). An existing file that cannot be run is an error: a
    policy hook that silently does nothing is worse than a failed conversion."""
    path = Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)
    if not path.exists():
        if PATH_ENV in os.environ and os.environ[PATH_ENV]:
            log.warning("hook program %s does not exist; external hooks are off", path)
        return None
    if not path.is_file() or not os.access(path, os.X_OK):
        raise HookProgramError(f"hook program {path} is not an executable file")
    return path.absolute()


@dataclass
class HookProgram:
    """The external program of one conversion, and the hooks it subscribed to."""

    path: Path
    timeout: float = DEFAULT_TIMEOUT
    hooks: tuple[str, ...] = field(default=())

    @classmethod
    def start(cls, path: Path, timeout: float) -> "HookProgram":
        """Handshake: the program states its protocol version and the hooks it wants."""
        program = cls(path, timeout)
        reply = program._exchange("handshake", protocol.handshake_request())
        try:
            program.hooks = protocol.check_handshake(reply)
        except protocol.ProtocolError as exc:
            raise program._error("handshake", str(exc)) from None
        if not reply["ok"]:
            raise program._error("handshake", f"refused: {protocol.one_line(reply.get('error', 'no reason given'))}")
        log.debug("hook program %s subscribed to %s", path, ", ".join(program.hooks) or "nothing")
        return program

    def wants(self, hook: str) -> bool:
        return hook in self.hooks

    def call(self, hook: str, ctx: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send one hook call; an error reply raises `HookProgramError`."""
        reply = self._exchange(hook, protocol.call_request(hook, ctx, payload))
        if not reply["ok"]:
            raise self._error(hook, f"replied error: {protocol.one_line(reply.get('error', 'no reason given'))}")
        return reply

    def _error(self, hook: str, what: str) -> HookProgramError:
        return HookProgramError(f"hook program {self.path} ({hook}): {what}")

    def _exchange(self, hook: str, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            proc = subprocess.Popen(
                [str(self.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                start_new_session=True,  # a timeout kills the program and anything it started
            )
        except OSError as exc:
            raise self._error(hook, f"cannot run: {exc.strerror or exc}") from None
        try:
            out, _ = proc.communicate(protocol.encode(request), timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise self._error(hook, f"no reply within {self.timeout:g}s ({TIMEOUT_ENV}); killed") from None
        except BrokenPipeError:  # exited before reading its request; judged by its status below
            out = proc.stdout.read() if proc.stdout else b""
            proc.wait()
        if proc.returncode != 0:
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with status {proc.returncode}"
            raise self._error(hook, how)
        if len(out) > protocol.MAX_REPLY:
            raise self._error(hook, f"reply larger than {protocol.MAX_REPLY} bytes")
        try:
            return protocol.decode_reply(out)
        except protocol.ProtocolError as exc:
            raise self._error(hook, str(exc)) from None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
