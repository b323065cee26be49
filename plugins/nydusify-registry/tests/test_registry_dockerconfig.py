"""Credentials from the Docker CLI config: `auths`, `credsStore`, `credHelpers`."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from nydusify_core.errors import AuthError, UsageError
from nydusify_core.log import RedactingFilter
from nydusify_core.types import Credentials
from nydusify_registry import nydusify_resolve_credentials
from nydusify_registry.dockerconfig import (
    DockerConfig,
    credentials_key,
    docker_credentials,
    load_docker_config,
    run_credential_helper,
)

HELPER = """#!/bin/sh
# a docker credential helper for tests: answers from $HELPER_DB (JSON host -> [user, secret])
[ "$1" = get ] || exit 3
read server
echo "$server" >> "$HELPER_LOG"
python3 - "$server" <<'PY'
import json, os, sys
db = json.load(open(os.environ["HELPER_DB"]))
entry = db.get(sys.argv[1])
if entry is None:
    print("credentials not found in native keychain")
    sys.exit(1)
if entry == "crash":
    sys.stderr.write("helper exploded; secret=" + os.environ.get("HELPER_SECRET", "") + "\\n")
    sys.exit(2)
print(json.dumps({"ServerURL": sys.argv[1], "Username": entry[0], "Secret": entry[1]}))
PY
"""


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`docker-credential-test` on PATH; fill the returned dict (host -> (user, secret)) and
    the helper answers from it. `helper['_log']` lists the servers it was asked for."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    db_path, log_path = tmp_path / "helper-db.json", tmp_path / "helper.log"
    monkeypatch.setenv("HELPER_DB", str(db_path))
    monkeypatch.setenv("HELPER_LOG", str(log_path))
    db: dict = {}

    class Db(dict):
        def __setitem__(self, key, value):  # type: ignore[no-untyped-def]
            super().__setitem__(key, value)
            db_path.write_text(json.dumps({k: v for k, v in self.items() if not k.startswith("_")}))

        def asked(self) -> list[str]:
            return log_path.read_text().split() if log_path.exists() else []

    out = Db(db)
    db_path.write_text("{}")
    return out


def write_config(directory: Path, data: dict) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_missing_config_means_no_credentials(docker_config_dir: Path) -> None:
    assert docker_credentials("localhost:5000") is None


def test_base64_auth_is_decoded(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"localhost:5000": {"auth": _auth("alice", "pa:ss")}}})
    assert docker_credentials("localhost:5000") == Credentials("alice", "pa:ss")


def test_username_and_password_fields_work_without_auth(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"reg.example": {"username": "bob", "password": "pw1"}}})
    assert docker_credentials("reg.example") == Credentials("bob", "pw1")


def test_identity_token_is_kept_as_token(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"reg.example": {"auth": _auth("carol", ""), "identitytoken": "idtok-123"}}})
    creds = docker_credentials("reg.example")
    assert creds is not None and creds.username == "carol" and creds.token == "idtok-123"


def test_docker_hub_is_looked_up_under_the_index_url(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"https://index.docker.io/v1/": {"auth": _auth("hubuser", "hubpw")}}})
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert docker_credentials(host) == Credentials("hubuser", "hubpw")
    assert credentials_key("registry-1.docker.io") == "https://index.docker.io/v1/"


def test_url_keys_match_by_hostname(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"https://reg.example:5000/v2/": {"auth": _auth("d", "e-pw")}}})
    assert docker_credentials("reg.example:5000") == Credentials("d", "e-pw")
    assert docker_credentials("reg.example") is None


def test_other_hosts_get_nothing(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"reg.example": {"auth": _auth("a", "b-pw")}}})
    assert docker_credentials("other.example") is None


def test_explicit_config_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"h": {"auth": _auth("u", "p-pw")}}})
    assert load_docker_config(path).credentials_for("h") == Credentials("u", "p-pw")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"auths": []}', "'auths'"),
        ('{"credHelpers": {"h": 1}}', "'credHelpers'"),
        ('{"credsStore": 5}', "'credsStore'"),
    ],
)
def test_malformed_config_is_a_clear_usage_error(docker_config_dir: Path, content: str, message: str) -> None:
    (docker_config_dir / "config.json").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_docker_config()


def test_auth_without_colon_is_reported_without_the_secret(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"h": {"auth": base64.b64encode(b"nocolonsecret").decode()}}})
    with pytest.raises(AuthError) as info:
        docker_credentials("h")
    assert "nocolonsecret" not in str(info.value)


def test_cred_helper_for_a_host(docker_config_dir: Path, helper: dict) -> None:
    helper["localhost:5000"] = ["helperuser", "helper-secret"]
    write_config(docker_config_dir, {"credHelpers": {"localhost:5000": "test"}, "auths": {"localhost:5000": {"auth": _auth("x", "y-pw")}}})
    assert docker_credentials("localhost:5000") == Credentials("helperuser", "helper-secret")
    assert helper.asked() == ["localhost:5000"]


def test_creds_store_is_used_for_every_host(docker_config_dir: Path, helper: dict) -> None:
    helper["https://index.docker.io/v1/"] = ["hub", "hub-secret"]
    write_config(docker_config_dir, {"credsStore": "test"})
    assert docker_credentials("registry-1.docker.io") == Credentials("hub", "hub-secret")
    assert docker_credentials("unknown.example") is None  # "credentials not found"
    assert helper.asked() == ["https://index.docker.io/v1/", "unknown.example"]


def test_helper_identity_token(docker_config_dir: Path, helper: dict) -> None:
    helper["reg.example"] = ["<token>", "refresh-me"]
    write_config(docker_config_dir, {"credsStore": "test"})
    assert docker_credentials("reg.example") == Credentials(token="refresh-me")


def test_failing_helper_error_names_it_but_never_echoes_its_output(docker_config_dir: Path, helper: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPER_SECRET", "s3cr3t-in-stderr")
    helper["reg.example"] = "crash"
    write_config(docker_config_dir, {"credsStore": "test"})
    with pytest.raises(AuthError) as info:
        docker_credentials("reg.example")
    assert "docker-credential-test" in str(info.value) and "exit status 2" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_missing_helper_program(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"credsStore": "nonexistent-helper-xyz"})
    with pytest.raises(AuthError, match="docker-credential-nonexistent-helper-xyz .*not on PATH"):
        docker_credentials("reg.example")


def test_helper_that_hangs_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-slow"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(AuthError, match="did not answer"):
        run_credential_helper("slow", "reg.example", timeout=0.5)


def test_helper_names_cannot_escape(docker_config_dir: Path) -> None:
    with pytest.raises(UsageError):
        run_credential_helper("../evil", "h")


def test_secrets_read_from_the_config_are_redacted_in_logs(docker_config_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_config(docker_config_dir, {"auths": {"h": {"auth": _auth("u", "redact-me-pw"), "identitytoken": "redact-me-tok"}}})
    load_docker_config()
    logger = logging.getLogger("nydusify.test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("leaking %s and %s", "redact-me-pw", "redact-me-tok")
    assert "redact-me" not in caplog.text


def test_hook_resolves_registry_credentials_only(docker_config_dir: Path) -> None:
    write_config(docker_config_dir, {"auths": {"reg.example:5000": {"auth": _auth("u", "p-pw")}}})
    assert nydusify_resolve_credentials(kind="registry", location="reg.example:5000") == Credentials("u", "p-pw")
    assert nydusify_resolve_credentials(kind="registry", location="https://reg.example:5000/v2/") == Credentials("u", "p-pw")
    assert nydusify_resolve_credentials(kind="s3", location="reg.example:5000") is None


def test_hook_is_reached_through_the_plugin_manager(docker_config_dir: Path, plugin_manager) -> None:  # type: ignore[no-untyped-def]
    write_config(docker_config_dir, {"auths": {"reg.example": {"auth": _auth("pm", "pm-pw")}}})
    assert plugin_manager.resolve_credentials("registry", "reg.example") == Credentials("pm", "pm-pw")


def test_in_memory_config() -> None:
    config = DockerConfig(auths={"h": {"username": "a", "password": "b-pw"}})
    assert config.credentials_for("h") == Credentials("a", "b-pw")
