"""`nydusify inspect`: what a bootstrap holds (a local file, or a backend object)."""

from __future__ import annotations

import json

import click

from nydusify_core.commands.backend import backend_options, load_bootstrap_from, open_cli_backend
from nydusify_core.errors import UsageError
from nydusify_core.rafs.inspect import describe, render_text


@click.command("inspect")
@click.argument("bootstrap", type=click.Path(dir_okay=False), required=False)
@click.option("--bootstrap-key", help="Read the bootstrap from the backend object meta_prefix + NAME instead of a file.")
@backend_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the shape check writes as nydus_bootstrap_debug.json).")
@click.option("--no-tree", is_flag=True, help="Omit the per-path listing.")
@click.pass_context
def inspect_command(
    ctx: click.Context, bootstrap: str | None, bootstrap_key: str | None, backend_type: str, backend_config: str | None,
    backend_config_file: str | None, as_json: bool, no_tree: bool,
) -> None:
    """Show a bootstrap's superblock, blob table, tree and statistics."""
    if (bootstrap is None) == (bootstrap_key is None):
        raise UsageError("give exactly one of BOOTSTRAP or --bootstrap-key NAME")
    cli_backend = None
    if bootstrap_key is not None:
        cli_backend = open_cli_backend(ctx, backend_type, backend_config, backend_config_file, needed_by="--bootstrap-key")
    try:
        bs, label = load_bootstrap_from(cli_backend, bootstrap, bootstrap_key)
    finally:
        if cli_backend is not None:
            cli_backend.close()
    info = describe(bs, label, tree=not no_tree)
    click.echo(json.dumps(info, indent=2) if as_json else render_text(info))
