"""One error hierarchy for the whole product.

Everything a user can cause derives from `NydusifyError`; `cli.py` is the one place that
turns these into a one-line message and a non-zero exit. Messages never carry credentials.
"""

from __future__ import annotations

from typing import Iterable, Sequence


class NydusifyError(Exception):
    """Base of every error nydusify reports to its user."""

    exit_code = 1


class UsageError(NydusifyError):
    """Options that contradict each other or values out of range."""

    exit_code = 2


class FormatError(NydusifyError):
    """Bytes that do not follow the format they claim (bootstrap, blob, tar, manifest)."""


class IntegrityError(NydusifyError):
    """Data whose digest or size differs from what was promised."""

    def __init__(self, message: str, *, expected: str | None = None, got: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class BackendError(NydusifyError):
    """A storage backend, source or target failed (network, auth, missing object)."""


class NotFoundError(BackendError):
    """The object, blob, manifest or reference does not exist."""


class AuthError(BackendError):
    """Credentials missing or refused."""


class PluginError(NydusifyError):
    """A plugin broke its contract."""


class PluginConflictError(PluginError):
    """Two plugins claim the same component name."""

    def __init__(self, kind: str, name: str, providers: Sequence[str]) -> None:
        self.kind, self.name, self.providers = kind, name, tuple(providers)
        super().__init__(f"{kind} {name!r} is provided by more than one plugin: {', '.join(self.providers)}")


class UnknownComponentError(PluginError):
    """A user asked for a component no loaded plugin provides."""

    exit_code = 2

    def __init__(self, kind: str, name: str, available: Iterable[str], failed: Iterable[str] = ()) -> None:
        self.kind, self.name = kind, name
        self.available, self.failed = tuple(sorted(available)), tuple(failed)
        message = f"unknown {kind} {name!r}; available: {', '.join(self.available) or 'none'}"
        if self.failed:
            message += f"; plugins that failed to load: {', '.join(self.failed)}"
        else:
            message += " (is the plugin that provides it installed?)"
        super().__init__(message)


class HookError(NydusifyError):
    """A stage hook vetoed or failed; names the plugin."""

    def __init__(self, hook: str, plugin: str, cause: BaseException | str) -> None:
        self.hook, self.plugin = hook, plugin
        super().__init__(f"hook {hook} of plugin {plugin!r} failed: {cause}")
