"""Errors of registry operations: one line naming the step, the reference and the
registry's error code; never a credential (messages pass through the log redactor)."""

from __future__ import annotations

from nydusify_core.errors import AuthError, BackendError, NotFoundError
from nydusify_core.log import redact


class RegistryError(BackendError):
    """A registry operation failed. The message names the step, the reference and the
    registry's error code; `status` and `code` keep them for programs."""

    def __init__(self, message: str, *, step: str = "", ref: str = "", status: int | None = None, code: str = "") -> None:
        super().__init__(redact(message))
        self.step, self.ref, self.status, self.code = step, ref, status, code


class RegistryNotFoundError(RegistryError, NotFoundError):
    """The repository, blob or manifest does not exist."""


class RegistryAuthError(RegistryError, AuthError):
    """Credentials missing or refused, or a permission (pull/push) is missing."""
