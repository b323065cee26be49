"""Built-in layer builder `rafs`: our own RAFS writer, in process.

Per layer it does what nydusify v2.2 asks `nydus-image` to do (nydus-image-spec.md §2.3):
`create --type tar-rafs --blob-inline-meta [--features blob-toc] --whiteout-spec none
--prefetch-policy fs` with the patterns (default `/`), streaming the tar into a packaged
blob. The merge is `nydus-image merge --prefetch-policy fs` with each layer's blob named by
its layer digest (§2.5): the merged blob table lists only layers that hold file data (plus
chunk-dictionary blobs they use), lowest layer first.

Two choices differ from nydus-image by default, so that a converted image shows exactly the
files of the source rootfs (what `tar -x` / containerd give); `RafsLayerBuilder(keep_mtime_nsec=
False, inherit_implied_dirs=False)` restores upstream's behaviour:

* PAX sub-second mtimes are kept (nydus-image keeps whole seconds).
* Directories a layer holds only as parents of its entries (no entry of their own, e.g. the
  root of most Docker layers, or `data/` of a layer holding only `data/.wh.x`) keep the
  attributes they have in lower layers. nydus-image gives them 0755, uid/gid 0, mtime 0
  and its merge lets those defaults replace the lower directory's attributes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import IO, Iterable, Sequence

from nydusify_core.errors import FormatError
from nydusify_core.fsutil import atomic_write_bytes
from nydusify_core.hookspecs import hookimpl
from nydusify_core.oci.layertar import iter_tar_entries
from nydusify_core.rafs.bootstrap import read_bootstrap
from nydusify_core.rafs.builder import BuildOptions, normalize_prefetch
from nydusify_core.rafs.merge import merge_bootstraps
from nydusify_core.rafs.model import Bootstrap, tree_building
from nydusify_core.rafs.tarbuild import build_tar_layer, inherit_implied_dirs, write_tar_bootstrap
from nydusify_core.types import BLOB_DIGEST_COMPUTED, BuilderSpec, BuiltLayer

__all__ = ["DEFAULT_PREFETCH", "RafsLayerBuilder", "layer_options"]

DEFAULT_PREFETCH = ("/",)  # nydusify's pattern list when neither a dir nor patterns are given
WORK_PREFIX = "nydus-converter-"  # per-layer sub-directory, as nydus-snapshotter names it
BLOB_NAME = "blob.rafs"
BOOTSTRAP_NAME = "image.boot"
IMPLIED_DIRS = "implied_dirs"  # BuiltLayer.extra key: directories a layer holds without entries
LAYER_TREE = "layer_tree"  # BuiltLayer.extra key: the layer's bootstrap as built, for the merge, used once


def layer_options(options: BuildOptions) -> BuildOptions:
    """The per-layer options nydusify always passes: inline meta, blob TOC (v6), whiteouts kept."""
    return dataclasses.replace(
        options, blob_inline_meta=True, blob_toc=options.fs_version == 6, whiteout_spec="none",
        prefetch=tuple(options.prefetch) or DEFAULT_PREFETCH,
    )


def _read(path: Path, what: str) -> Bootstrap:
    try:
        return read_bootstrap(Path(path).read_bytes())
    except FormatError as exc:
        raise FormatError(f"{what} {path}: {exc}") from None


class RafsLayerBuilder:
    """`LayerBuilder` over `nydusify_core.rafs.tarbuild` and `nydusify_core.rafs.merge`.

    Holds no mutable state, so layers may be built in parallel threads.
    """

    name = "rafs"

    def __init__(self, options: BuildOptions | None = None, *, keep_mtime_nsec: bool = True,
                 inherit_implied_dirs: bool = True) -> None:
        self.options = options
        self.keep_mtime_nsec = keep_mtime_nsec
        self.inherit_implied_dirs = inherit_implied_dirs

    def build_layer(self, tar_stream: IO[bytes], work_dir: Path, options: BuildOptions, *, label: str = "") -> BuiltLayer:
        """Build one uncompressed layer tar into `<work_dir>/nydus-converter-*/{blob.rafs,image.boot}`."""
        opts = layer_options(options)
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=work))
        blob, boot = out / BLOB_NAME, out / BOOTSTRAP_NAME
        result = build_tar_layer(
            iter_tar_entries(tar_stream, layer=label), opts, blob, boot, label=label, keep_mtime_nsec=self.keep_mtime_nsec,
        )
        assert result.blob_digest is not None  # inline meta: the blob always exists
        return BuiltLayer(
            bootstrap_path=boot, blob_path=blob, blob_id=result.blob_digest, blob_size=result.blob_size,
            has_data=result.has_data,
            extra={
                "chunks": result.chunk_count, "dedup_chunks": result.dedup_chunks, "files": result.files,
                "nodes": result.nodes, IMPLIED_DIRS: result.implied_dirs,
                BLOB_DIGEST_COMPUTED: True,  # build_tar_layer hashed the blob as it wrote it
                # the builder's own tree, for the merge: it differs from the tree read back from
                # image.boot only in what the merge derives again (inode numbers, nlink,
                # directory sizes), so nothing is parsed back (tests/test_builtin_rafs_builder.py)
                LAYER_TREE: result.bootstrap,
            },
        )

    def merge(self, layers: Sequence[BuiltLayer], output: Path, options: BuildOptions) -> list[str]:
        """Overlay the layers' bootstraps into `output` (written atomically); the merged blob ids."""
        with tree_building():  # the layer trees and the merged one all stay alive until the end
            return self._merge(layers, output, options)

    def _merge(self, layers: Sequence[BuiltLayer], output: Path, options: BuildOptions) -> list[str]:
        # a layer tree is handed over once: the merge changes it, and a layer shared by
        # two platforms' images must start from the file again for the second one
        boots = [layer.extra.pop(LAYER_TREE, None) or _read(layer.bootstrap_path, f"bootstrap of layer {i + 1}")
                 for i, layer in enumerate(layers)]
        if self.inherit_implied_dirs:
            inherit_implied_dirs(boots, [layer.extra.get(IMPLIED_DIRS, ()) for layer in layers])
        dict_ids: set[str] = set()
        if options.chunk_dict is not None:
            dict_ids = {b.blob_id for b in _read(Path(options.chunk_dict), "chunk dictionary").blobs}
        merged = merge_bootstraps(
            boots,
            blob_digests=[layer.blob_id for layer in layers],
            blob_sizes=[layer.blob_size for layer in layers],
            chunk_dict_blob_ids=dict_ids,
            prefetch=normalize_prefetch(tuple(options.prefetch) or DEFAULT_PREFETCH),
            consume=True,  # the trees were handed over (or just read): nobody else holds them
        )
        atomic_write_bytes(output, write_tar_bootstrap(merged))
        return [b.blob_id for b in merged.blobs]


@hookimpl
def nydusify_register_builders() -> Iterable[BuilderSpec]:
    yield BuilderSpec(
        name="rafs",
        description="built-in RAFS v5/v6 writer (tar-rafs layers with inline bootstrap and TOC, overlay merge)",
        create=RafsLayerBuilder,
    )
