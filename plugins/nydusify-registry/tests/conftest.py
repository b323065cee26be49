"""Docker CLI config fixtures shared by the registry plugin's tests."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Callable

import pytest

# a docker credential helper for tests: the credentials of $HELPER_HOST, nothing else
HELPER = """#!/bin/sh
[ "$1" = get ] || exit 3
read server
if [ "$server" = "$HELPER_HOST" ]; then
  printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\\n' "$server" "$HELPER_USER" "$HELPER_SECRET"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


@pytest.fixture
def docker_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $DOCKER_CONFIG directory (tests write config.json into it)."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


@pytest.fixture
def credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_config_dir: Path) -> Callable[[str, str, str, str], None]:
    """`install(name, host, user, secret)`: a `docker-credential-NAME` program on $PATH that
    knows `host`, and a docker config whose `credHelpers` sends `host` to it."""

    def install(name: str, host: str, user: str, secret: str) -> None:
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        script = bindir / f"docker-credential-{name}"
        script.write_text(HELPER)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("HELPER_HOST", host)
        monkeypatch.setenv("HELPER_USER", user)
        monkeypatch.setenv("HELPER_SECRET", secret)
        (docker_config_dir / "config.json").write_text(json.dumps({"credHelpers": {host: name}}))

    return install
