"""`nydusify unpack`: a bootstrap and its blobs back into a directory or a tar."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from nydusify_core.commands.common import load_bootstrap
from nydusify_core.errors import UsageError
from nydusify_core.fsutil import atomic_output
from nydusify_core.rafs.unpack import blob_dir_opener, unpack_to_dir, unpack_to_tar

log = logging.getLogger(__name__)


@click.command("unpack")
@click.option("--bootstrap", required=True, type=click.Path(path_type=Path, dir_okay=False), help="The bootstrap.")
@click.option("--blob-dir", type=click.Path(path_type=Path, file_okay=False), help="Directory holding blobs named by their ids.")
@click.option("--blob", "blob_file", type=click.Path(path_type=Path, dir_okay=False), help="The blob file of a single-blob image.")
@click.option("--output", type=click.Path(path_type=Path), help="Directory to create (must not exist).")
@click.option("--tar", "tar_path", type=click.Path(path_type=Path, dir_okay=False), help="Tar file to write instead.")
def unpack_command(bootstrap: Path, blob_dir: Path | None, blob_file: Path | None, output: Path | None, tar_path: Path | None) -> None:
    """Extract an image's files with full metadata, verifying every chunk digest."""
    if (output is None) == (tar_path is None):
        raise UsageError("give exactly one of --output DIR or --tar FILE")
    if blob_dir is None and blob_file is None:
        blob_dir = bootstrap.parent
    bs = load_bootstrap(bootstrap)
    if blob_file is not None and len(bs.blobs) > 1:
        raise UsageError(f"the image has {len(bs.blobs)} blobs; use --blob-dir")
    opener, close = blob_dir_opener(blob_dir or ".", blob_file)
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
