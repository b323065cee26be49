"""`nydusify unpack`: a bootstrap and its blobs back into a directory or a tar.

The bootstrap is a local file (`--bootstrap`) or an object `meta_prefix + NAME`
(`--bootstrap-key NAME`); blobs are local files, or, with `--backend-type`, objects read
in place with ranged requests (`blob_prefix + id` when the config sets `blob_prefix`,
else `object_prefix + id`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from nydusify_core.commands.backend import CliBackend, backend_options, load_bootstrap_from, open_cli_backend
from nydusify_core.errors import UsageError
from nydusify_core.fsutil import atomic_output
from nydusify_core.rafs.remote import backend_blob_opener
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir, unpack_to_tar

log = logging.getLogger(__name__)


@click.command("unpack")
@click.option("--bootstrap", type=click.Path(path_type=Path, dir_okay=False), help="The bootstrap file.")
@click.option("--bootstrap-key", help="Read the bootstrap from the backend object meta_prefix + NAME (as `pack --backend-push --name NAME` stored it).")
@click.option("--blob-dir", type=click.Path(path_type=Path, file_okay=False), help="Directory holding blobs named by their ids.")
@click.option("--blob", "blob_file", type=click.Path(path_type=Path, dir_okay=False), help="The blob file of a single-blob image.")
@backend_options()
@click.option("--output", type=click.Path(path_type=Path), help="Directory to create (must not exist).")
@click.option("--tar", "tar_path", type=click.Path(path_type=Path, dir_okay=False), help="Tar file to write instead.")
@click.pass_context
def unpack_command(
    ctx: click.Context, bootstrap: Path | None, bootstrap_key: str | None, blob_dir: Path | None, blob_file: Path | None,
    backend_type: str, backend_config: str | None, backend_config_file: str | None, output: Path | None, tar_path: Path | None,
) -> None:
    """Extract an image's files with full metadata, verifying every chunk digest."""
    if (output is None) == (tar_path is None):
        raise UsageError("give exactly one of --output DIR or --tar FILE")
    if (bootstrap is None) == (bootstrap_key is None):
        raise UsageError("give exactly one of --bootstrap PATH or --bootstrap-key NAME")
    if backend_type and (blob_dir is not None or blob_file is not None):
        raise UsageError("blobs come either from the backend (--backend-type) or from --blob-dir/--blob, not both")
    cli_backend: CliBackend | None = None
    if backend_type or backend_config or backend_config_file or bootstrap_key:
        cli_backend = open_cli_backend(ctx, backend_type, backend_config, backend_config_file, needed_by="reading from a backend")
    try:
        bs, _ = load_bootstrap_from(cli_backend, bootstrap, bootstrap_key)
        if cli_backend is not None:
            opener, close = backend_blob_opener(cli_backend.blobs())
        else:
            if blob_file is not None and len(bs.blobs) > 1:
                raise UsageError(f"the image has {len(bs.blobs)} blobs; use --blob-dir")
            opener, close = blob_dir_opener(blob_dir or (bootstrap.parent if bootstrap else "."), blob_file)
        try:
            if tar_path is not None:
                with atomic_output(tar_path) as out:
                    count = unpack_to_tar(bs, opener, out)
                log.info("wrote %d entries to %s", count, tar_path)
            else:
                count = unpack_to_dir(bs, opener, output)
                log.info("extracted %d entries into %s", count, output)
        finally:
            close()
    finally:
        if cli_backend is not None:
            cli_backend.close()
