"""`nydusify check`: validate a Nydus image (against its source) without nydusd."""

from __future__ import annotations

import json

import click

from nydusify_core.checker import CheckOptions, check
from nydusify_core.commands.backend import backend_options
from nydusify_core.commands.common import get_plugins
from nydusify_core.errors import NydusifyError


class CheckFailed(NydusifyError):
    """Some rule failed: exit status 1 with one error line, after the report was printed."""


@click.command("check")
@click.option("--target", required=True, envvar="TARGET", help="The Nydus image: registry reference or oci:PATH[:TAG].")
@click.option("--source", envvar="SOURCE", help="The OCI image it was converted from (enables the filesystem rule).")
@click.option("--source-insecure", is_flag=True, envvar="SOURCE_INSECURE", help="Skip TLS verification for the source (and allow plain HTTP).")
@click.option("--target-insecure", is_flag=True, envvar="TARGET_INSECURE", help="Skip TLS verification for the target (and allow plain HTTP).")
@click.option("--plain-http", is_flag=True, envvar="PLAIN_HTTP", help="Use plain HTTP for registries.")
@click.option("--platform", help="os/arch[/variant] to check in an index (default: the host's).")
@click.option("--multi-platform", is_flag=True, envvar="MULTI_PLATFORM", help="Require an index holding both the OCI and the Nydus manifest.")
@backend_options()
@click.option("--work-dir", default="./output", show_default=True, envvar="WORK_DIR", type=click.Path(file_okay=False), help="Where the manifests, configs and bootstrap are written.")
@click.option("--no-data", is_flag=True, help="Do not read blob data or file contents (metadata rules only).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check_command(ctx: click.Context, **kw) -> None:
    """Check a Nydus image: manifest, bootstrap, filesystem (with --source) and data rules.

    Exit status 0 only when every rule passes."""
    options = CheckOptions(
        target=kw["target"], source=kw["source"] or None, source_insecure=kw["source_insecure"], target_insecure=kw["target_insecure"],
        plain_http=kw["plain_http"], platform=kw["platform"], multi_platform=kw["multi_platform"],
        backend_type=kw["backend_type"] or "", backend_config=kw["backend_config"], backend_config_file=kw["backend_config_file"],
        work_dir=kw["work_dir"], check_data=not kw["no_data"],
    )
    report = check(options, get_plugins(ctx))
    if kw["as_json"]:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.render())
    if not report.ok:
        failed = ", ".join(r.name for r in report.rules if not r.passed)
        raise CheckFailed(f"check failed: {failed}")
