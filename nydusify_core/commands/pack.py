"""`nydusify pack` (alias `build`): a local directory into a RAFS bootstrap and data blob."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from nydusify_core.commands.backend import CliBackend, backend_options, open_cli_backend
from nydusify_core.commands.common import load_bootstrap
from nydusify_core.errors import NotFoundError, UsageError
from nydusify_core.rafs import constants as C
from nydusify_core.rafs.builder import BuildOptions, BuildResult, build_directory

log = logging.getLogger(__name__)

# upstream's pack uploads through nydusify's own backend package, whose multipart parts are
# 200 MiB (convert's go through the snapshotter's, with 500 MiB parts: the backends' default)
PACK_PART_SIZE = 200 << 20


@dataclass(frozen=True)
class PackPaths:
    bootstrap: Path
    blob: Path


def output_paths(output_dir: Path, name: str) -> PackPaths:
    """Upstream's names: `<out>/<name>` if it has an extension, else `<out>/<name>.meta`;
    the blob is `<out>/<name without extension>.blob`."""
    if not name or "/" in name or name in (".", ".."):
        raise UsageError(f"invalid --name {name!r}: a plain file name is needed")
    stem, ext = os.path.splitext(name)
    bootstrap = output_dir / (name if ext else f"{name}.meta")
    return PackPaths(bootstrap=bootstrap, blob=output_dir / f"{stem or name}.blob")


def parse_chunk_dict(value: str | None) -> Path | None:
    """`--chunk-dict bootstrap=PATH`, the only form `pack` accepts (as upstream)."""
    if not value:
        return None
    kind, sep, path = value.partition("=")
    if not sep or kind != "bootstrap" or not path:
        raise UsageError(f"invalid --chunk-dict {value!r}: expected bootstrap=PATH")
    return Path(path)


def existing_bootstrap(path: Path | None, what: str) -> Path | None:
    """Refuse a missing parent/dictionary bootstrap up front, naming the option."""
    if path is not None and not path.is_file():
        raise NotFoundError(f"{what} {str(path)!r} does not exist or is not a file")
    return path


def parse_chunk_size(value: str) -> int:
    try:
        size = int(value, 0)
    except ValueError:
        raise UsageError(f"invalid --chunk-size {value!r}: expected a number such as 0x100000") from None
    if size & (size - 1) or not C.MIN_CHUNK_SIZE <= size <= C.MAX_BUILD_CHUNK_SIZE:
        raise UsageError(f"invalid --chunk-size {value}: must be a power of two from 0x1000 to 0x100000")
    return size


def pack_directory(source_dir: Path, output_dir: Path, name: str, options: BuildOptions, *, rename_blob: bool) -> tuple[BuildResult, PackPaths]:
    if not source_dir.is_dir():
        raise UsageError(f"source directory {str(source_dir)!r} does not exist or is not a directory")
    paths = output_paths(output_dir, name)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = build_directory(source_dir, options, paths.bootstrap, paths.blob)
    if result.blob_path is not None and result.blob is not None and rename_blob:
        final = output_dir / result.blob.blob_id
        os.replace(result.blob_path, final)
        result.blob_path = final
        paths = PackPaths(paths.bootstrap, final)
    return result, paths


def result_json(result: BuildResult, paths: PackPaths, seconds: float) -> dict[str, Any]:
    return {
        "bootstrap": str(paths.bootstrap),
        "blob": str(result.blob_path) if result.blob_path else None,
        "blob_id": result.blob_id,
        "blob_size": result.blob_size,
        "blobs": [b.blob_id for b in result.blob_table],
        "fs_version": result.bootstrap.version,
        "files": result.files,
        "nodes": result.nodes,
        "chunks": result.chunk_count,
        "dedup_chunks": result.dedup_chunks,
        "dedup_bytes": result.dedup_bytes,
        "seconds": round(seconds, 3),
    }


def push_packed(cli_backend: CliBackend, name: str, result: BuildResult, paths: PackPaths, parent: Path | None, *, force: bool) -> dict[str, Any]:
    """Upstream's push (§4 step 10): parent blobs, then the new blob, each under
    `blob_prefix + id` and skipped when present (unless forced), then the bootstrap, always,
    under `meta_prefix + name` as given. Returns the object URLs for the log and `--json`."""
    store = cli_backend.store("pack --backend-push")
    if hasattr(store, "part_size"):  # object stores that upload in parts (oss, s3)
        store.part_size = PACK_PART_SIZE  # type: ignore[attr-defined]
    blob_prefix = cli_backend.blob_prefix
    blobs: list[dict[str, Any]] = []

    def push_blob(blob_id: str, path: Path | None) -> None:
        key = blob_prefix + blob_id
        url = store.object_url(key)
        if not force and store.object_exists(key):
            log.info("blob %s already at %s, not uploading", blob_id, url)
            blobs.append({"id": blob_id, "url": url, "uploaded": False})
            return
        if path is None or not path.is_file():
            raise NotFoundError(f"blob {blob_id} is neither at {url} nor at {path}: cannot push it")
        store.put_object(key, path)
        log.info("pushed blob %s to %s", blob_id, url)
        blobs.append({"id": blob_id, "url": url, "uploaded": True})

    if parent is not None:
        new_id = result.blob.blob_id if result.blob is not None else None
        for blob in load_bootstrap(parent).blobs:
            if blob.blob_id != new_id:
                push_blob(blob.blob_id, paths.bootstrap.parent / blob.blob_id)
    if result.blob is not None and result.blob_path is not None:
        push_blob(result.blob.blob_id, result.blob_path)
    meta_key = cli_backend.meta_key(name)
    bootstrap_url = store.put_object(meta_key, paths.bootstrap)
    log.info("pushed bootstrap to %s", bootstrap_url)
    return {"type": cli_backend.type, "bootstrap_url": bootstrap_url, "blobs": blobs}


@dataclass
class Packed:
    """What packing (and pushing) produced."""

    build: BuildResult
    paths: PackPaths
    pushed: dict[str, Any] | None  # object URLs when pushed to a backend
    seconds: float


def build_and_push(source_dir: Path, output_dir: Path, name: str, options: BuildOptions, backend: CliBackend | None,
                   *, force_push: bool) -> Packed:
    """Pack `source_dir`, then push to `backend` if any; the CLI and the package API share this.
    With a parent bootstrap or a backend the blob is named by its id, as upstream does."""
    start = time.monotonic()
    rename = options.parent_bootstrap is not None or backend is not None
    result, paths = pack_directory(source_dir, output_dir, name, options, rename_blob=rename)
    pushed = push_packed(backend, name, result, paths, options.parent_bootstrap, force=force_push) if backend else None
    return Packed(result, paths, pushed, time.monotonic() - start)


@click.command("pack")
@click.option("--source-dir", "--target-dir", "source_dir", required=True, type=click.Path(path_type=Path), envvar="SOURCE_DIR", help="Directory to pack.")
@click.option("--name", "--meta", "--bootstrap", "name", required=True, envvar=["BOOTSTRAP", "IMAGE_NAME"], help="Bootstrap file name (and blob name stem, meta object key).")
@click.option("--output-dir", "-o", default="./.nydus-build-output", show_default=True, type=click.Path(path_type=Path), envvar="OUTPUT_DIR", help="Where the bootstrap and blob are written.")
@click.option("--fs-version", type=click.Choice(["5", "6"]), default="6", show_default=True, envvar="FS_VERSION", help="RAFS version.")
@click.option("--compressor", type=click.Choice(list(C.BUILD_COMPRESSORS)), default="zstd", show_default=True, envvar="COMPRESSOR", help="Chunk compressor.")
@click.option("--digester", type=click.Choice(sorted(C.DIGESTER_IDS)), default="blake3", show_default=True, help="Chunk digest algorithm.")
@click.option("--chunk-size", default="0x100000", show_default=True, envvar="CHUNK_SIZE", help="Chunk size, a power of two from 0x1000 to 0x100000.")
@click.option("--fs-align-chunk", "--aligned-chunk", "aligned", is_flag=True, help="4 KiB-align uncompressed chunk offsets (always on for RAFS v6).")
@click.option("--parent-bootstrap", type=click.Path(path_type=Path, dir_okay=False), envvar="PARENT_BOOTSTRAP", help="Build on top of this bootstrap (layered build).")
@click.option("--chunk-dict", envvar="CHUNK_DICT", help="Reuse chunks of a bootstrap: bootstrap=PATH.")
@click.option("--prefetch-patterns", "prefetch_stdin", is_flag=True, help="Read prefetch paths (absolute, one per line) from stdin.")
@click.option("--repeatable", is_flag=True, help="Zero uid/gid so equal trees give equal bytes.")
@click.option("--backend-push", is_flag=True, envvar="BACKEND_PUSH", help="Push the bootstrap (meta_prefix + name) and blobs (blob_prefix + id) to the backend.")
@backend_options(default_type="oss")
@click.option("--backend-force-push", is_flag=True, envvar="BACKEND_FORCE_PUSH", help="Upload blobs even when the backend has them.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
@click.pass_context
def pack_command(
    ctx: click.Context, source_dir: Path, name: str, output_dir: Path, fs_version: str, compressor: str, digester: str, chunk_size: str,
    aligned: bool, parent_bootstrap: Path | None, chunk_dict: str | None, prefetch_stdin: bool, repeatable: bool,
    backend_push: bool, backend_type: str, backend_config: str | None, backend_config_file: str | None, backend_force_push: bool,
    as_json: bool,
) -> None:
    """Pack a local directory into a Nydus bootstrap and data blob (optionally pushed to OSS/S3)."""
    if not source_dir.is_dir():
        raise UsageError(f"source directory {str(source_dir)!r} does not exist or is not a directory")
    cli_backend = None
    if backend_push:  # upstream checks the backend config before building anything
        cli_backend = open_cli_backend(ctx, backend_type, backend_config, backend_config_file, needed_by="--backend-push")
        cli_backend.store("pack --backend-push")
    try:
        _pack(name, source_dir, output_dir, fs_version, compressor, digester, chunk_size, aligned, parent_bootstrap,
              chunk_dict, prefetch_stdin, repeatable, cli_backend, backend_force_push, as_json)
    finally:
        if cli_backend is not None:
            cli_backend.close()


def _pack(
    name: str, source_dir: Path, output_dir: Path, fs_version: str, compressor: str, digester: str, chunk_size: str,
    aligned: bool, parent_bootstrap: Path | None, chunk_dict: str | None, prefetch_stdin: bool, repeatable: bool,
    cli_backend: CliBackend | None, force_push: bool, as_json: bool,
) -> None:
    prefetch: tuple[str, ...] = ()
    if prefetch_stdin:
        prefetch = tuple(line.strip() for line in click.get_text_stream("stdin") if line.strip())
    options = BuildOptions(
        fs_version=int(fs_version), compressor=compressor, digester=digester, chunk_size=parse_chunk_size(chunk_size),
        aligned_chunk=aligned, repeatable=repeatable, prefetch=prefetch,
        parent_bootstrap=existing_bootstrap(parent_bootstrap, "--parent-bootstrap"),
        chunk_dict=existing_bootstrap(parse_chunk_dict(chunk_dict), "--chunk-dict bootstrap"),
    )
    packed = build_and_push(source_dir, output_dir, name, options, cli_backend, force_push=force_push)
    pushed = packed.pushed
    info = result_json(packed.build, packed.paths, packed.seconds)
    if pushed is not None:
        info["backend"] = pushed
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        log.info("successfully built Nydus image (bootstrap:'%s', blob:'%s')", info["bootstrap"], info["blob"] or "")
        if pushed is not None:
            blob_urls = [b["url"] for b in pushed["blobs"]]
            log.info("successfully pushed Nydus image (bootstrap:'%s', blobs:%s)", pushed["bootstrap_url"], blob_urls)
