"""docs/cli.md is the `--help` of every command, kept equal by this test.

When it fails, regenerate the page: `.venv/bin/python -m nydusify_core.testing.clidoc`."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from nydusify_core.cli import cli
from nydusify_core.testing import clidoc

HOW = f"docs/cli.md is stale: regenerate it with `.venv/bin/{clidoc.REGENERATE}` (from the repository root)"


@pytest.fixture(scope="module")
def page() -> str:
    missing = [name for name in clidoc.repo_plugins() if not _installed(name)]
    if missing:
        pytest.skip(f"plugins of this repository not installed ({', '.join(missing)}): their commands would be missing")
    return clidoc.DEFAULT_OUTPUT.read_text()


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_cli_reference_equals_the_generated_help(page: str) -> None:
    assert page == clidoc.render(), HOW


def test_every_help_block_is_what_the_command_prints(page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # wider than the CLI's max_content_width
    blocks = re.findall(r"^## `nydusify ?([^`]*)`\n\n```text\n(.*?)\n```", page, flags=re.S | re.M)
    assert {path for path, _ in blocks} >= {"", "convert", "pack", "plugins"}
    for path, text in blocks:
        cli.main(args=[*path.split(), "--help"], prog_name="nydusify", standalone_mode=False)  # as the terminal shows it
        assert capsys.readouterr().out.rstrip() == text, f"`nydusify {path} --help` differs: {HOW}"


def test_every_command_has_a_section(page: str) -> None:
    listed = set(re.findall(r"^## `nydusify (\S+)`", page, flags=re.M))
    commands = set(cli.list_commands(cli.make_context("nydusify", ["--help"], resilient_parsing=True)))
    assert commands == listed, HOW
