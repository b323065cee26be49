"""Registry credentials from the Docker CLI configuration, read the way docker/cli reads it.

`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `credHelpers[host]` first,
then `credsStore`, then `auths` (base64 `auth` or `username`/`password`, `identitytoken`).
Helpers are `docker-credential-<name>` programs speaking JSON on stdin/stdout.
Every secret found is registered with the log redactor before it is returned.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nydusify_core.errors import AuthError, UsageError
from nydusify_core.log import register_secret
from nydusify_core.types import Credentials

from nydusify_registry.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, DOCKER_HUB_CREDENTIALS_KEY, LEGACY_DEFAULT_DOMAIN

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "config.json"
HELPER_PREFIX = "docker-credential-"
HELPER_TIMEOUT = 30.0
IDENTITY_TOKEN_USERNAME = "<token>"  # a helper's username meaning "the secret is an identity token"
_NOT_FOUND_MARKER = "credentials not found"


def config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def credentials_key(host: str) -> str:
    """Key under which Docker stores credentials for `host` (Docker Hub's is a URL)."""
    if host in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, DOCKER_HUB_API_HOST):
        return DOCKER_HUB_CREDENTIALS_KEY
    return host


def _hostname_of_key(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000` (docker/cli `ConvertToHostname`)."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
            break
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class DockerConfig:
    """The credential parts of a Docker CLI config file."""

    path: Path | None = None
    auths: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    creds_store: str = ""
    cred_helpers: Mapping[str, str] = field(default_factory=dict)

    def credentials_for(self, host: str, *, timeout: float = HELPER_TIMEOUT) -> Credentials | None:
        """Credentials for a registry host (`host[:port]`), or None when none are configured."""
        key = credentials_key(host)
        helper = self.cred_helpers.get(key) or self.cred_helpers.get(host)
        if helper:
            return run_credential_helper(helper, key, timeout=timeout)
        if self.creds_store:
            return run_credential_helper(self.creds_store, key, timeout=timeout)
        entry = self._auth_entry(key)
        return None if entry is None else self._decode_entry(key, entry)

    def _auth_entry(self, key: str) -> Mapping[str, Any] | None:
        if key in self.auths:
            return self.auths[key]
        for name, entry in self.auths.items():
            if _hostname_of_key(name) == _hostname_of_key(key):
                return entry
        return None

    def _decode_entry(self, key: str, entry: Mapping[str, Any]) -> Credentials | None:
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if encoded:
            try:
                decoded = base64.b64decode(str(encoded), validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError(f"docker config {self._where()}: the 'auth' of {key!r} is not base64 of user:password") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise AuthError(f"docker config {self._where()}: the 'auth' of {key!r} has no ':' between user and password")
        token = str(entry.get("identitytoken") or "")
        register_secret(password)
        register_secret(token)
        register_secret(str(entry.get("registrytoken") or ""))
        if not (username or password or token):
            return None
        return Credentials(username=username, password=password, token=token)

    def _where(self) -> str:
        return str(self.path) if self.path else "(in memory)"


def load_docker_config(path: str | Path | None = None) -> DockerConfig:
    """Read `path`, or `config.json` in `config_dir()`; a missing file means no credentials."""
    file = Path(path) if path is not None else config_dir() / CONFIG_FILE_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DockerConfig(path=file)
    except OSError as exc:
        raise UsageError(f"cannot read docker config {file}: {exc.strerror}") from None
    if not text.strip():
        return DockerConfig(path=file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"docker config {file} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise UsageError(f"docker config {file} is not a JSON object")
    auths = data.get("auths")
    auths = {} if auths is None else auths
    helpers = data.get("credHelpers")
    helpers = {} if helpers is None else helpers
    if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()):
        raise UsageError(f"docker config {file}: 'auths' must map registry names to objects")
    if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
        raise UsageError(f"docker config {file}: 'credHelpers' must map registry names to helper names")
    store = data.get("credsStore")
    store = "" if store is None else store
    if not isinstance(store, str):
        raise UsageError(f"docker config {file}: 'credsStore' must be a string")
    for entry in auths.values():  # register early: secrets must not leak even if unused
        register_secret(str(entry.get("password") or ""))
        register_secret(str(entry.get("identitytoken") or ""))
        encoded = entry.get("auth")
        if encoded:
            register_secret(str(encoded))
            try:
                register_secret(base64.b64decode(str(encoded)).decode("utf-8", "replace").partition(":")[2])
            except (binascii.Error, ValueError):
                pass
    return DockerConfig(path=file, auths=auths, creds_store=store, cred_helpers=helpers)


def run_credential_helper(helper: str, server: str, *, timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """`docker-credential-<helper> get` for `server`; None when the helper has nothing.

    The helper's output is never put in an error message: it may hold the secret.
    """
    if not helper or "/" in helper or helper.startswith("."):
        raise UsageError(f"invalid credential helper name {helper!r}")
    program = HELPER_PREFIX + helper
    executable = shutil.which(program)
    if executable is None:
        raise AuthError(f"credential helper {program} (for {server}) is not on PATH")
    try:
        proc = subprocess.run(
            [executable, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer for {server} within {timeout:g} s") from None
    except OSError as exc:
        raise AuthError(f"credential helper {program} could not run: {exc.strerror}") from None
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        if _NOT_FOUND_MARKER in out.lower() or _NOT_FOUND_MARKER in proc.stderr.decode("utf-8", "replace").lower():
            return None
        raise AuthError(f"credential helper {program} failed for {server} (exit status {proc.returncode})")
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        raise AuthError(f"credential helper {program} printed something that is not JSON for {server}") from None
    if not isinstance(data, dict):
        raise AuthError(f"credential helper {program} printed JSON that is not an object for {server}")
    username = str(data.get("Username") or "")
    secret = str(data.get("Secret") or "")
    register_secret(secret)
    if not (username or secret):
        return None
    if username == IDENTITY_TOKEN_USERNAME:
        return Credentials(token=secret)
    return Credentials(username=username, password=secret)


def docker_credentials(host: str) -> Credentials | None:
    """Credentials for `host` from the current user's Docker config (the hook's default)."""
    return load_docker_config().credentials_for(host)
