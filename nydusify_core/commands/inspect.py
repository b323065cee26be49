"""`nydusify inspect`: what a bootstrap holds."""

from __future__ import annotations

import json

import click

from nydusify_core.commands.common import load_bootstrap
from nydusify_core.rafs.inspect import describe, render_text


@click.command("inspect")
@click.argument("bootstrap", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the shape check writes as nydus_bootstrap_debug.json).")
@click.option("--no-tree", is_flag=True, help="Omit the per-path listing.")
def inspect_command(bootstrap: str, as_json: bool, no_tree: bool) -> None:
    """Show a bootstrap's superblock, blob table, tree and statistics."""
    info = describe(load_bootstrap(bootstrap), bootstrap, tree=not no_tree)
    click.echo(json.dumps(info, indent=2) if as_json else render_text(info))
