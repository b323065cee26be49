"""Generate docs/cli.md from the `--help` of every `nydusify` command and subcommand.

    python -m nydusify_core.testing.clidoc            # rewrite docs/cli.md
    python -m nydusify_core.testing.clidoc --check    # exit 1 if docs/cli.md is stale

Help is rendered at a fixed width with the built-ins and the plugins of this repository
(`plugins/*`) only, so the page does not depend on the terminal or on whatever else is
installed. tests/test_docs_cli.py fails when the page differs from the current help.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Iterator

import click

WIDTH = 98  # what click prints in any terminal of 100+ columns (the CLI's max_content_width, less 2)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "docs" / "cli.md"
REGENERATE = "python -m nydusify_core.testing.clidoc"


def repo_plugins() -> list[str]:
    """Entry-point names of the plugin distributions in this repository (= directory names)."""
    root = REPO / "plugins"
    return sorted(p.name for p in root.iterdir() if (p / "pyproject.toml").is_file()) if root.is_dir() else []


def _commands(cmd: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _commands(sub, _context(sub, name, ctx))


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    settings = {**cmd.context_settings, "terminal_width": WIDTH}
    return click.Context(cmd, info_name=name, parent=parent, **settings)


def render() -> str:
    """The whole reference page, as Markdown."""
    from nydusify_core.cli import cli
    from nydusify_core.plugins import create_plugin_manager

    root = _context(cli, "nydusify", None)
    plugins = repo_plugins()
    root.obj = {"plugins": create_plugin_manager(autoload=True, only=plugins, blocked=())}
    lines = [
        "# Command-line reference",
        "",
        f"Generated from `--help` by `{REGENERATE}`; do not edit by hand",
        "(tests/test_docs_cli.py fails when this page and the help differ).",
        f"Plugins included: {', '.join(plugins) or 'none'}. Guide: [user-guide.md](user-guide.md).",
        "",
    ]
    for cmd, ctx in _commands(cli, root):
        lines += [f"## `{ctx.command_path}`", ""]
        if ctx.parent is not None and cmd.name and ctx.info_name != cmd.name:  # an alias (build = pack)
            lines += [f"Alias of `{ctx.parent.command_path} {cmd.name}`.", ""]
            continue
        lines += ["```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the CLI reference (docs/cli.md) from --help.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 with a diff if stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(args.output), "--help"))
        print(f"\n{args.output} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
        return 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
