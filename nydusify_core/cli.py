"""The `nydusify` command line. The one place where errors become messages and exit codes."""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import sys
import traceback
from typing import Any

import click

from nydusify_core import __version__
from nydusify_core.errors import NydusifyError
from nydusify_core.log import LEVELS, redact, setup_logging
from nydusify_core.commands.common import get_plugins

log = logging.getLogger(__name__)


# built-in subcommands: name -> (module under nydusify_core.commands, attribute); imported on
# first lookup, so `convert` does not load `check`'s machinery and the like at start-up
BUILTIN_COMMANDS = {
    "build": ("pack", "pack_command"),  # upstream's older name for pack
    "check": ("check", "check_command"),
    "convert": ("convert", "convert_command"),
    "inspect": ("inspect", "inspect_command"),
    "pack": ("pack", "pack_command"),
    "unpack": ("unpack", "unpack_command"),
}


class PluginGroup(click.Group):
    """A group whose built-in subcommands load on first lookup, and whose plugin-provided
    ones are collected on first lookup, per invocation (Flask's lazy group), so the
    module-level group is never mutated by plugins."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        obj = ctx.find_root().ensure_object(dict)
        if "plugin_commands" not in obj:
            collector = click.Group("plugins")
            try:
                get_plugins(ctx).register_commands(collector)
            except NydusifyError as exc:
                log.warning("plugin commands unavailable: %s", exc)
            obj["plugin_commands"] = {
                n: c for n, c in collector.commands.items() if n not in self.commands and n not in BUILTIN_COMMANDS
            }
        return obj["plugin_commands"]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *BUILTIN_COMMANDS, *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in BUILTIN_COMMANDS:
            module, attribute = BUILTIN_COMMANDS[name]
            command = getattr(importlib.import_module(f"nydusify_core.commands.{module}"), attribute)
        return command or self._plugin_commands(ctx).get(name)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-v", "--version", prog_name="nydusify", message="%(prog)s %(version)s")
@click.option("--log-level", "-l", type=click.Choice(LEVELS), default="info", show_default=True, envvar="LOG_LEVEL", help="Log verbosity.")
@click.option("--debug", "-D", is_flag=True, envvar="DEBUG_LOG_LEVEL", help="Debug logging, and show tracebacks on errors.")
@click.option("--disable-plugin", multiple=True, metavar="NAME", help="Do not load this plugin (repeatable).")
@click.pass_context
def cli(ctx: click.Context, log_level: str, debug: bool, disable_plugin: tuple[str, ...]) -> None:
    """Convert OCI and Docker images into Nydus images, and build, inspect and check RAFS."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging("debug" if debug else log_level)


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", metavar="NAME", help="Only plugins implementing this hook.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins_command(ctx: click.Context, show_all: bool, hook: str | None, as_json: bool) -> None:
    """List installed plugins: name, version, status, hooks and components."""
    rows = get_plugins(ctx).installed(include_builtin=show_all)
    if hook:
        rows = [r for r in rows if hook in r.hooks]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no plugins installed (use --all to include built-ins)")
        return
    headers = ("NAME", "VERSION", "STATUS", "PROVIDES", "HOOKS")
    table = [(r.name, r.version, r.status, ",".join(r.provides) or "-", ",".join(h.removeprefix("nydusify_") for h in r.hooks) or r.error or "-") for r in rows]
    widths = [max(len(str(x[i])) for x in [headers, *table]) for i in range(4)]
    for row in [headers, *table]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths)) + "  " + str(row[4]))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(" ".join(text.split()))


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: one-line errors and non-zero exits; tracebacks only with --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or "-D" in args or bool(os.environ.get("DEBUG_LOG_LEVEL"))
    try:
        return cli.main(args=args, prog_name="nydusify", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("nydusify: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "nydusify"
        click.echo(f"nydusify: error: {_one_line(Exception(exc.format_message()))} (try '{path} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"nydusify: error: {_one_line(Exception(exc.format_message()))}", err=True)
        sys.exit(exc.exit_code)
    except NydusifyError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"nydusify: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("nydusify: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device"
        click.echo(f"nydusify: error: {redact(reason)}{redact(str(where))}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if debug:
            traceback.print_exc()
        click.echo(f"nydusify: internal error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for details)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
