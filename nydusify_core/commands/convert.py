"""`nydusify convert`: an OCI or Docker image into a Nydus image."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from nydusify_core.commands.common import get_plugins
from nydusify_core.config import read_json_option
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.conversion.options import target_with_suffix
from nydusify_core.errors import UsageError
from nydusify_core.rafs import constants as C

log = logging.getLogger(__name__)


def _chunk_size(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"invalid --fs-chunk-size {value!r}: expected a number such as 0x100000") from None


def _prefetch(prefetch_dir: str | None, from_stdin: bool) -> tuple[str, ...]:
    if prefetch_dir and from_stdin:
        raise UsageError("--prefetch-dir conflicts with --prefetch-patterns")
    if prefetch_dir:
        return (prefetch_dir,)
    if from_stdin:
        lines = tuple(line.strip() for line in sys.stdin if line.strip())
        return lines or ("/",)
    return ("/",)


@click.command("convert")
@click.option("--source", required=True, envvar="SOURCE", help="Source image: registry reference, oci:PATH[:TAG], docker-archive:FILE.")
@click.option("--target", envvar="TARGET", help="Target image reference (registry or oci:PATH[:TAG]).")
@click.option("--target-suffix", envvar="TARGET_SUFFIX", help="Target = tagged source reference + this suffix.")
@click.option("--source-type", default="", help="Source plugin to use instead of detecting it from the reference.")
@click.option("--target-type", default="", help="Target plugin to use instead of detecting it from the reference.")
@click.option("--source-insecure", is_flag=True, envvar="SOURCE_INSECURE", help="Skip TLS verification for the source (and allow plain HTTP).")
@click.option("--target-insecure", is_flag=True, envvar="TARGET_INSECURE", help="Skip TLS verification for the target (and allow plain HTTP).")
@click.option("--plain-http", is_flag=True, envvar="PLAIN_HTTP", help="Use plain HTTP for registries.")
@click.option("--backend-type", default="", envvar="BACKEND_TYPE", help="Where data blobs go: registry (default, the target), localfs, oss, s3, ...")
@click.option("--backend-config", envvar="BACKEND_CONFIG", help="Backend configuration as a JSON string.")
@click.option("--backend-config-file", envvar="BACKEND_CONFIG_FILE", type=click.Path(dir_okay=False), help="Backend configuration JSON file.")
@click.option("--backend-force-push", is_flag=True, envvar="BACKEND_FORCE_PUSH", help="Upload blobs even when the backend has them.")
@click.option("--fs-version", type=click.Choice(["5", "6"]), default="6", show_default=True, envvar="FS_VERSION", help="RAFS version.")
@click.option("--compressor", type=click.Choice(list(C.BUILD_COMPRESSORS)), default="zstd", show_default=True, envvar="COMPRESSOR", help="Chunk compressor.")
@click.option("--fs-chunk-size", "--chunk-size", "chunk_size", default="0x100000", show_default=True, envvar="FS_CHUNK_SIZE", help="Chunk size, a power of two from 0x1000 to 0x100000.")
@click.option("--fs-align-chunk", "--backend-aligned-chunk", "aligned", is_flag=True, envvar="FS_ALIGN_CHUNK", help="4 KiB-align uncompressed chunk offsets (RAFS v5; v6 always aligns).")
@click.option("--prefetch-dir", envvar="PREFETCH_DIR", help="One absolute path to prefetch.")
@click.option("--prefetch-patterns", "prefetch_stdin", is_flag=True, envvar="PREFETCH_PATTERNS", help="Read absolute prefetch paths from stdin.")
@click.option("--oci", is_flag=True, envvar="OCI", help="Write OCI media types (default: keep the source's Docker or OCI types).")
@click.option("--docker-v2-format", is_flag=True, hidden=True, help="Deprecated: keep Docker media types (wins over --oci).")
@click.option("--platform", "platforms", multiple=True, help="Platforms to convert (os/arch[/variant], comma list or repeated; default: the host's).")
@click.option("--all-platforms", is_flag=True, help="Convert every platform of an index.")
@click.option("--merge-platform", "--multi-platform", "merge_platform", is_flag=True, envvar="MERGE_PLATFORM", help="Push an index holding both the OCI and the Nydus manifests.")
@click.option("--work-dir", default="./tmp", show_default=True, envvar="WORK_DIR", type=click.Path(file_okay=False, path_type=Path), help="Scratch directory.")
@click.option("--workers", default=0, type=click.IntRange(min=0), help="Layers converted in parallel (0: one per CPU).")
@click.option("--builder", default="rafs", show_default=True, help="Layer builder plugin.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON result (target digest, blobs, timings).")
@click.pass_context
def convert_command(ctx: click.Context, **kw) -> None:
    """Convert an OCI or Docker image into a Nydus image."""
    if kw["target"] and kw["target_suffix"]:
        raise UsageError("--target conflicts with --target-suffix")
    target = kw["target"] or (target_with_suffix(kw["source"], kw["target_suffix"]) if kw["target_suffix"] else "")
    backend_config = read_json_option(kw["backend_config"], kw["backend_config_file"], what="backend")
    if backend_config and not kw["backend_type"]:
        raise UsageError("--backend-config needs --backend-type")
    options = ConvertOptions(
        source=kw["source"], target=target, source_type=kw["source_type"], target_type=kw["target_type"],
        source_insecure=kw["source_insecure"], target_insecure=kw["target_insecure"], plain_http=kw["plain_http"],
        backend_type=kw["backend_type"], backend_config=backend_config, backend_force_push=kw["backend_force_push"],
        builder=kw["builder"], fs_version=int(kw["fs_version"]), compressor=kw["compressor"],
        chunk_size=_chunk_size(kw["chunk_size"]), aligned_chunk=kw["aligned"],
        prefetch_patterns=_prefetch(kw["prefetch_dir"], kw["prefetch_stdin"]),
        oci=kw["oci"] and not kw["docker_v2_format"],
        platforms=tuple(p for value in kw["platforms"] for p in value.split(",") if p.strip()),
        all_platforms=kw["all_platforms"], merge_platform=kw["merge_platform"], work_dir=kw["work_dir"], workers=kw["workers"],
    )
    result = convert(options, get_plugins(ctx))
    if kw["as_json"]:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        log.info("converted %s to %s (%s)", options.source, options.target, result.descriptor.digest if result.descriptor else "?")
