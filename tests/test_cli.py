"""The command line: version, plugin listing, and how errors reach the user."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from nydusify_core import __version__, hookimpl
from nydusify_core.cli import cli
from nydusify_core.errors import AuthError
from nydusify_core.log import register_secret


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *args], capture_output=True, text=True, env=env, timeout=60)


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"nydusify {__version__}"


def test_plugins_all_json_lists_builtins_with_components() -> None:
    result = run("plugins", "--all", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    provides = {p for row in rows.values() for p in row["provides"]}
    assert {"source:oci-layout", "source:dir", "target:oci-layout", "backend:localfs"} <= provides
    assert all(rows[n]["status"] == "builtin" for n in rows if n.startswith("nydusify_core.builtin."))


def test_plugins_table_is_human_readable() -> None:
    result = run("plugins", "--all")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split()[:3] == ["NAME", "VERSION", "STATUS"]


def test_plugins_filter_by_hook() -> None:
    result = run("plugins", "--all", "--json", "--hook", "nydusify_register_backends")
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names and all("nydusify_register_backends" in row["hooks"] for row in json.loads(result.stdout))


def test_unknown_flag_is_a_one_line_usage_error() -> None:
    result = run("--no-such-flag")
    assert result.returncode == 2
    assert result.stderr == "nydusify: error: No such option '--no-such-flag'. (try 'nydusify --help')\n"


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr and result.stderr.count("\n") == 1


@click.command("fail-auth")
def fail_auth() -> None:
    register_secret("hunter2-secret")
    raise AuthError("registry 127.0.0.1:5000 refused user alice with password hunter2-secret")


@click.command("crash")
def crash() -> None:
    raise ZeroDivisionError("division by zero")


class ErrorCommands:
    @hookimpl
    def nydusify_register_commands(self, cli):
        cli.add_command(fail_auth)
        cli.add_command(crash)


@pytest.fixture
def error_plugin(plugin_manager, register_plugin):
    register_plugin(ErrorCommands())
    return plugin_manager




def test_nydusify_error_is_one_line_without_traceback_and_secret(monkeypatch, error_plugin, capsys) -> None:
    from nydusify_core import cli as cli_module
    from nydusify_core.commands import common

    monkeypatch.setattr(common, "create_plugin_manager", lambda **kw: error_plugin)
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(["fail-auth"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.count("\n") == 1 and err.startswith("nydusify: error: registry 127.0.0.1:5000 refused")
    assert "hunter2-secret" not in err and "***" in err
    assert "Traceback" not in err


def test_unexpected_exception_is_one_line_unless_debug(monkeypatch, error_plugin, capsys) -> None:
    from nydusify_core import cli as cli_module
    from nydusify_core.commands import common

    monkeypatch.setattr(common, "create_plugin_manager", lambda **kw: error_plugin)
    with pytest.raises(SystemExit):
        cli_module.main(["crash"])
    err = capsys.readouterr().err
    assert err.strip() == "nydusify: internal error: ZeroDivisionError: division by zero (run with --debug for details)"
    with pytest.raises(SystemExit):
        cli_module.main(["--debug", "crash"])
    assert "Traceback" in capsys.readouterr().err


def test_disable_plugin_option_blocks_a_plugin() -> None:
    result = run("--disable-plugin", "nydusify_core.builtin.localfs", "plugins", "--all", "--json")
    rows = json.loads(result.stdout)
    assert not any("backend:localfs" in row["provides"] for row in rows)
    assert any(row["name"] == "nydusify_core.builtin.localfs" and row["status"] == "blocked" for row in rows)


def test_help_lists_plugin_commands(error_plugin) -> None:
    result = CliRunner().invoke(cli, ["--help"], obj={"plugins": error_plugin})
    assert "fail-auth" in result.output
