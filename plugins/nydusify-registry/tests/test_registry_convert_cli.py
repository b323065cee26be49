"""`nydusify convert` on the command line against real registries: credentials from
$DOCKER_CONFIG, `--target-suffix`, `--json`, and failures as one line without secrets."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nydusify_core.conversion.options import target_with_suffix
from nydusify_core.errors import UsageError
from nydusify_core.testing.images import BuiltImage, expected_rootfs, push_image
from nydusify_core.testing.nydus import open_nydus_registry, unpack_nydus_image
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_core.testing.trees import diff_trees, snapshot
from nydusify_core.types import Credentials

IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}


def nydusify(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def docker_config_env(tmp_path: Path, host: str, user: str, password: str) -> dict[str, str]:
    directory = tmp_path / "docker-config"
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    no_proxy = "127.0.0.1,localhost,::1"
    return {**os.environ, "DOCKER_CONFIG": str(directory), "NO_PROXY": no_proxy, "no_proxy": no_proxy}


@pytest.fixture
def pushed(registry_basic_auth: RegistryServer, synthetic_image: BuiltImage) -> str:
    """`HOST/REPO:v1` holding the synthetic image on the basic-auth registry."""
    repo = unique_name("cli")
    push_image(synthetic_image, registry_basic_auth.host, f"{repo}:v1", creds=registry_basic_auth.credentials)
    return f"{registry_basic_auth.host}/{repo}:v1"


def test_convert_with_docker_config_credentials_prints_json(registry_basic_auth: RegistryServer, synthetic_image: BuiltImage, pushed: str, tmp_path: Path) -> None:
    user, password = registry_basic_auth.credentials  # type: ignore[misc]
    env = docker_config_env(tmp_path, registry_basic_auth.host, user, password)
    target = pushed + "-nydus"
    proc = nydusify("convert", "--source", pushed, "--target", target, "--plain-http", "--json", "--work-dir", str(tmp_path / "work"), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == target and result["digest"].startswith("sha256:")
    assert password not in proc.stdout + proc.stderr
    nydus = open_nydus_registry(target, tmp_path / "pull", plain_http=True, extra={"credentials": Credentials(user, password)})
    unpacked = unpack_nydus_image(nydus, tmp_path / "unpacked")
    assert not diff_trees(snapshot(expected_rootfs(synthetic_image)), snapshot(unpacked), ignore=IGNORE, ignore_paths=IGNORE_PATHS)


def test_target_suffix_tags_next_to_the_source(registry_basic_auth: RegistryServer, pushed: str, tmp_path: Path) -> None:
    user, password = registry_basic_auth.credentials  # type: ignore[misc]
    env = docker_config_env(tmp_path, registry_basic_auth.host, user, password)
    proc = nydusify("convert", "--source", pushed, "--target-suffix", "-nydus", "--plain-http", "--json", "--work-dir", str(tmp_path / "w1"), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["target"] == pushed + "-nydus"


@pytest.mark.parametrize(
    ("source", "suffix", "target"),
    [
        ("localhost:5000/app", "-nydus", "localhost:5000/app:latest-nydus"),
        ("localhost:5000/app:v1", "-nydus", "localhost:5000/app:v1-nydus"),
        ("127.0.0.1:5000/group/app", "_nydus", "127.0.0.1:5000/group/app:latest_nydus"),
        ("[::1]:5000/app", "-nydus", "[::1]:5000/app:latest-nydus"),
        ("nginx", "-nydus", "nginx:latest-nydus"),
        ("docker://localhost:5000/app:1.0", "-n", "localhost:5000/app:1.0-n"),
        ("oci:/images/app", "-nydus", "oci:/images/app:latest-nydus"),
    ],
)
def test_target_suffix_rule(source: str, suffix: str, target: str) -> None:
    assert target_with_suffix(source, suffix) == target


@pytest.mark.parametrize(
    ("source", "suffix"),
    [("localhost:5000/app@sha256:" + "a" * 64, "-n"), ("localhost:5000/app", ""), ("localhost:5000/app", ":x"), ("localhost:5000/app", "/x"), ("docker-archive:/x.tar", "-n")],
)
def test_target_suffix_refuses_what_cannot_become_a_tag(source: str, suffix: str) -> None:
    with pytest.raises(UsageError):
        target_with_suffix(source, suffix)


def test_wrong_password_is_one_line_without_the_secret(registry_basic_auth: RegistryServer, pushed: str, tmp_path: Path) -> None:
    user, _ = registry_basic_auth.credentials  # type: ignore[misc]
    wrong = "not-the-password-4f1c2e"
    env = docker_config_env(tmp_path, registry_basic_auth.host, user, wrong)
    proc = nydusify("convert", "--source", pushed, "--target", pushed + "-nydus", "--plain-http", "--work-dir", str(tmp_path / "work"), env=env, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nydusify: error:"), proc.stderr
    assert registry_basic_auth.host in lines[0]
    assert wrong not in proc.stdout + proc.stderr
    assert base64.b64encode(f"{user}:{wrong}".encode()).decode() not in proc.stdout + proc.stderr


def test_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    proc = nydusify("convert", "--source", f"127.0.0.1:{port}/app:v1", "--target", f"127.0.0.1:{port}/app:v1-nydus", "--plain-http", "--work-dir", str(tmp_path / "work"), env=env, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nydusify: error:"), proc.stderr
    assert f"127.0.0.1:{port}" in lines[0]
