"""The conversion pipeline (nydus-image-spec.md §2), streaming and layer-parallel.

resolve source -> select manifests -> per layer (in parallel): stream, decompress, build
a Nydus blob layer + bootstrap -> per manifest: store blobs, merge bootstraps, write the
bootstrap layer, push config, manifest -> push the index (if any) under the target tag.

Order guarantees a tag never points at missing content: every blob, then the config and
bootstrap layer, then the manifest, then the index; only the last push carries the tag.
Stage hooks run at each step; one raising aborts the run before anything later is pushed.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nydusify_core.config import load_dataclass
from nydusify_core.conversion.layerproc import LayerProcessPool, build_layer_stream, picklable
from nydusify_core.conversion.options import ConvertOptions
from nydusify_core.conversion.progress import Progress
from nydusify_core.conversion.workdir import scratch_dir
from nydusify_core.errors import IntegrityError, UsageError
from nydusify_core.oci import image as img
from nydusify_core.oci.descriptor import Descriptor, Platform
from nydusify_core.plugins import NydusifyPlugins, create_plugin_manager
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.types import BLOB_DIGEST_COMPUTED, BackendContext, BlobRef, BuiltLayer, ConvertContext, EndpointOptions, LayerInfo, PushInfo

log = logging.getLogger(__name__)
_COPY = 1 << 20
PROCESS_MIN_BYTES = 64 << 20  # compressed source bytes from which layers build in worker processes


@dataclass
class ConvertResult:
    """What a conversion pushed, for `--json` and package callers."""

    source: str
    target: str
    descriptor: Descriptor | None = None
    manifests: list[dict[str, Any]] = field(default_factory=list)
    blobs: list[BlobRef] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    source_bytes: int = 0
    target_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "digest": self.descriptor.digest if self.descriptor else None,
            "media_type": self.descriptor.media_type if self.descriptor else None,
            "manifests": self.manifests,
            "blobs": [{"id": b.id, "size": b.size} for b in self.blobs],
            "source_bytes": self.source_bytes,
            "target_bytes": self.target_bytes,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


class _Counting(io.RawIOBase):
    """Counts bytes read from a source blob, for progress and statistics."""

    def __init__(self, stream: IO[bytes], progress: Progress) -> None:
        self._stream, self._progress = stream, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if hasattr(self._stream, "readinto"):  # no intermediate bytes object
            n = self._stream.readinto(buffer) or 0
        else:
            data = self._stream.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self._progress.add_bytes(n)
        return n


@dataclass
class _Image:
    """One source manifest being converted."""

    entry: Descriptor  # as listed in the source (index entry or root)
    manifest: img.Manifest
    config: img.ImageConfig
    config_bytes: bytes
    platform: str


class _Conversion:
    def __init__(self, options: ConvertOptions, plugins: NydusifyPlugins, ctx: ConvertContext, source: Any, target: Any, work: Path) -> None:
        self.options, self.plugins, self.ctx = options, plugins, ctx
        self.source, self.target, self.work = source, target, work
        self.build_options = BuildOptions(
            fs_version=options.fs_version, compressor=options.compressor, chunk_size=options.chunk_size,
            aligned_chunk=options.aligned_chunk, prefetch=options.prefetch_patterns,
            blob_inline_meta=True, blob_toc=options.fs_version == 6, whiteout_spec="none",
        )
        self.builder = plugins.builder(options.builder).create(self.build_options)
        self.backend = self._open_backend()
        self.result = ConvertResult(source=options.source, target=options.target)
        self._uploaded: dict[str, int] = {}
        self.layer_pool: LayerProcessPool | None = None
        self._lock = threading.Lock()

    def _open_backend(self) -> Any:
        if not self.options.external_backend:
            return None
        spec = self.plugins.backend(self.options.backend_type)
        config = load_dataclass(spec.config_type, self.options.backend_config, what=f"{spec.name} backend config")
        context = BackendContext(
            target_ref=self.options.target, insecure=self.options.target_insecure, work_dir=self.work, plugins=self.plugins,
        )
        return spec.create(config, context)

    # --- reading the source -------------------------------------------------------------

    def _images(self) -> tuple[Descriptor, img.Manifest | img.Index, list[_Image]]:
        root = self.source.resolve()
        parsed = img.parse_image(self.source.fetch(root), root.media_type)
        if isinstance(parsed, img.Index):
            entries = img.select_manifests(parsed, self.options.platforms, all_platforms=self.options.all_platforms)
        else:
            entries = [root]
        images = []
        for entry in entries:
            manifest = parsed if entry is root else img.parse_manifest(self.source.fetch(entry), entry.media_type)
            assert isinstance(manifest, img.Manifest)
            if img.has_nydus_layers(manifest):
                raise UsageError(f"{self.options.source} ({entry.digest}) is already a Nydus image")
            config_bytes = self.source.fetch(manifest.config)
            config = img.parse_config(config_bytes)
            img.check_config_matches(manifest, config)
            platform = str(entry.platform) if entry.platform else str(Platform(config.os, config.architecture, config.variant))
            images.append(_Image(entry, manifest, config, config_bytes, platform))
        return root, parsed, images

    # --- building layers ---------------------------------------------------------------

    def _build_layer(self, image: _Image, index: int, progress: Progress) -> BuiltLayer:
        desc = image.manifest.layers[index]
        label = f"layer {index + 1} ({desc.digest})"
        info = LayerInfo(index, desc.digest, desc.media_type, desc.size, image.platform)
        self.plugins.before_build_layer(self.ctx, info)
        layer_dir = self.work / "layers" / desc.hex
        layer_dir.mkdir(parents=True, exist_ok=True)
        raw = self.source.open_blob(desc)
        try:
            counted = io.BufferedReader(_Counting(raw, progress), _COPY)
            if self.layer_pool is not None:
                built, diff_id = self.layer_pool.build(
                    counted, media_type=desc.media_type, label=label, layer_dir=layer_dir, options=self.build_options,
                )
            else:
                built, diff_id = build_layer_stream(
                    self.builder, counted, media_type=desc.media_type, label=label, layer_dir=layer_dir, options=self.build_options,
                )
        finally:
            raw.close()
        expected = image.config.diff_ids[index]
        if diff_id != expected:
            raise IntegrityError(f"{label}: uncompressed digest {diff_id} differs from the config's diff_id {expected}", expected=expected, got=diff_id)
        self.plugins.after_build_layer(self.ctx, info, built)
        progress.layer_done(label, built.blob_id, built.blob_size)
        return built

    def _use_processes(self, layers: int, size: int, workers: int) -> bool:
        wanted = self.options.layer_processes
        if wanted is None:  # auto: where the start-up of the workers pays for itself
            wanted = workers > 1 and layers > 1 and size >= PROCESS_MIN_BYTES
        if wanted and not picklable(self.builder):
            log.debug("layer builder %r cannot go to a worker process: building in threads", self.options.builder)
            return False
        return bool(wanted)

    def _build_all(self, images: list[_Image]) -> dict[str, Future[BuiltLayer]]:
        """One build per distinct source layer digest, across all platforms."""
        jobs: dict[str, Future[BuiltLayer]] = {}
        first: dict[str, tuple[_Image, int]] = {}  # digest -> where it first appears
        for image in images:
            for i, desc in enumerate(image.manifest.layers):
                first.setdefault(desc.digest, (image, i))
        sizes = {digest: image.manifest.layers[i].size for digest, (image, i) in first.items()}
        self.progress = Progress(len(first))
        workers = self.options.workers or min(os.cpu_count() or 1, max(len(first), 1))
        if self._use_processes(len(first), sum(sizes.values()), workers):
            try:
                self.layer_pool = LayerProcessPool(workers, self.builder)
            except OSError as exc:  # e.g. a sandbox that forbids new processes
                log.warning("cannot start layer worker processes (%s): building in threads", exc.strerror or exc)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer")
        self._layers_left = len(first)
        # largest first: the biggest layer bounds the wall time, so it must not start last
        for digest in sorted(first, key=lambda d: -sizes[d]):
            image, i = first[digest]
            jobs[digest] = self.pool.submit(self._build_layer_job, image, i, self.progress)
        return jobs

    def _build_layer_job(self, image: _Image, index: int, progress: Progress) -> BuiltLayer:
        try:
            return self._build_layer(image, index, progress)
        finally:
            with self._lock:
                self._layers_left -= 1
                last = self._layers_left == 0
            if last and self.layer_pool is not None:
                self.layer_pool.retire()  # the workers' exit overlaps the merge

    # --- storing ------------------------------------------------------------------------

    def _store_blob(self, built: BuiltLayer) -> Descriptor:
        desc = img.nydus_blob_descriptor(built.digest, built.blob_size)
        if built.blob_id in self._uploaded:
            return desc
        ref = BlobRef(built.blob_id, built.blob_size)
        backend_type = self.options.backend_type or "registry"
        self.plugins.before_upload_blob(self.ctx, ref, backend_type)
        if self.backend is not None:
            self.backend.put(built.blob_id, built.blob_path, force=self.options.backend_force_push)
        else:
            adopt = getattr(self.target, "adopt_path", None)
            if adopt is not None and built.extra.get(BLOB_DIGEST_COMPUTED) is True:
                adopt(desc, built.blob_path)  # our own digest: link, don't re-hash
            else:
                self.target.push_path(desc, built.blob_path)
        self.plugins.after_upload_blob(self.ctx, ref, backend_type)
        self._uploaded[built.blob_id] = built.blob_size
        self.result.blobs.append(ref)
        return desc

    def _push_bytes(self, desc: Descriptor, data: bytes) -> None:
        self.target.push_blob(desc, io.BytesIO(data))

    def _convert_image(self, n: int, image: _Image, jobs: dict[str, Future[BuiltLayer]], *, for_merged_index: bool, tag: str | None) -> Descriptor:
        built: list[BuiltLayer] = []
        results: list[img.LayerResult] = []
        for d in image.manifest.layers:  # store each blob while the later layers still build
            b = jobs[d.digest].result()
            built.append(b)
            stored = self._store_blob(b) if (self.options.keep_dataless or b.has_data) else img.nydus_blob_descriptor(b.digest, b.blob_size)
            results.append(img.LayerResult(stored, b.has_data))
        blobs = img.blob_layers(results, keep_dataless=self.options.keep_dataless)
        if self.options.external_backend:
            blobs = [img.nydus_blob_descriptor(b.digest, b.blob_size) for b in built if b.has_data]

        bootstrap_path = self.work / f"bootstrap-{n}"
        self.builder.merge([b for b in built], bootstrap_path, self.build_options)
        layer_path = self.work / f"bootstrap-{n}.tar.gz"
        docker = img.output_is_docker(image.manifest.media_type, self.options.oci)
        with open(layer_path, "wb") as f:
            boot_layer = img.write_bootstrap_layer(
                bootstrap_path, f, docker=docker, fs_version=self.options.fs_version, external_backend=self.options.external_backend,
            )
        self.target.push_path(boot_layer.descriptor, layer_path)

        built_image = img.assemble_nydus_image(
            image.manifest, image.config, blobs, boot_layer,
            img.AssembleOptions(
                oci=self.options.oci, external_backend=self.options.external_backend, fs_version=self.options.fs_version,
                source_digest=image.entry.digest, source_reference=self.options.source, for_merged_index=for_merged_index,
            ),
        )
        extra = self.plugins.manifest_annotations(self.ctx)
        if extra:
            built_image = self._with_annotations(built_image, extra)
        self._push_bytes(built_image.config_descriptor, built_image.config)
        info = PushInfo(
            bootstrap_path=str(bootstrap_path), source_ref=self.options.source, target_ref=self.options.target,
            blobs=tuple(BlobRef(b.blob_id, b.blob_size) for b in built if b.has_data or self.options.keep_dataless),
        )
        self.plugins.before_push_manifest(self.ctx, info)
        self.target.push_manifest(built_image.manifest_descriptor, built_image.manifest, tag=tag)
        self.plugins.after_push_manifest(self.ctx, info, built_image.manifest_descriptor)
        self.result.manifests.append({
            "platform": image.platform,
            "source_digest": image.entry.digest,
            "digest": built_image.manifest_descriptor.digest,
            "layers": len(img.parse_manifest(built_image.manifest).layers),
        })
        self.result.target_bytes += sum(b.blob_size for b in built) + boot_layer.descriptor.size
        return built_image.manifest_descriptor

    @staticmethod
    def _with_annotations(built: img.BuiltImage, extra: dict[str, str]) -> img.BuiltImage:
        manifest = img.load_json_object(built.manifest, "manifest")
        annotations = dict(manifest.get("annotations") or {})
        clash = sorted(set(annotations) & set(extra))
        if clash:
            raise UsageError(f"a plugin's manifest annotation would replace {', '.join(clash)}")
        manifest["annotations"] = dict(sorted({**annotations, **extra}.items()))
        data = img.canonical_json(manifest)
        return img.BuiltImage(data, Descriptor.for_bytes(built.manifest_descriptor.media_type, data), built.config, built.config_descriptor)

    def _copy_source_blob(self, desc: Descriptor) -> None:
        if self.target.has_blob(desc):
            return
        with self.source.open_blob(desc) as stream:
            self.target.push_blob(desc, stream)

    def _merged_oci_entry(self, image: _Image) -> Descriptor:
        """The OCI member of a merged index (HEAD): source layers copied, plus a leading
        empty layer, so runtimes never share snapshots between the two images."""
        docker = image.manifest.is_docker
        for layer in image.manifest.layers:
            self._copy_source_blob(layer)
        empty_bytes, empty_desc = img.empty_layer(docker=docker)
        self._push_bytes(empty_desc, empty_bytes)
        config_bytes = img.canonical_json(img.merged_oci_config(image.config))
        config_desc = Descriptor.for_bytes(image.manifest.config.media_type, config_bytes)
        self._push_bytes(config_desc, config_bytes)
        data = img.merged_oci_manifest(image.manifest, config=config_desc, empty=empty_desc, source_digest=image.entry.digest)
        desc = Descriptor.for_bytes(image.manifest.media_type, data)
        self.target.push_manifest(desc, data)
        platform = image.entry.platform or img.platform_from_config(image.config)
        return img.merged_index_entry(desc, platform, nydus=False, source_digest=image.entry.digest)

    def run(self) -> ConvertResult:
        t0 = time.monotonic()
        root, parsed, images = self._images()
        self.result.source_bytes = sum(d.size for im in images for d in im.manifest.layers)
        jobs = self._build_all(images)
        try:
            single = not isinstance(parsed, img.Index) or (len(images) == 1 and not self.options.merge_platform)
            tag = self.target.tag
            converted: list[tuple[Descriptor, Descriptor]] = []
            for n, image in enumerate(images):
                desc = self._convert_image(
                    n, image, jobs, for_merged_index=self.options.merge_platform,
                    tag=tag if single and not self.options.merge_platform else None,
                )
                converted.append((image.entry, desc))
            self.result.timings["convert"] = time.monotonic() - t0
            if self.options.merge_platform:
                oci_entries = [self._merged_oci_entry(im) for im in images]
                nydus_entries = [
                    img.merged_index_entry(new, old.platform or img.platform_from_config(im.config), nydus=True)
                    for (old, new), im in zip(converted, images)
                ]
                data = img.build_merged_index(oci_entries, nydus_entries)
                self.result.descriptor = Descriptor.for_bytes(img.mt.OCI_INDEX, data)
                self.target.push_manifest(self.result.descriptor, data, tag=tag)
            elif single:
                self.result.descriptor = converted[-1][1]
            else:
                assert isinstance(parsed, img.Index)
                data = img.build_converted_index(parsed, converted, oci=self.options.oci)
                media_type = img.to_oci_type(parsed.media_type) if self.options.oci else parsed.media_type
                self.result.descriptor = Descriptor.for_bytes(media_type, data)
                self.target.push_manifest(self.result.descriptor, data, tag=tag)
        finally:
            for job in jobs.values():
                job.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self.layer_pool is not None:
                self.layer_pool.close()
            self.progress.close()
        self.result.timings["total"] = time.monotonic() - t0
        return self.result


def convert(options: ConvertOptions, plugins: NydusifyPlugins | None = None) -> ConvertResult:
    """Convert `options.source` into a Nydus image at `options.target`."""
    plugins = plugins or create_plugin_manager()
    source_spec = plugins.source(options.source_type) if options.source_type else plugins.detect_source(options.source)
    target_spec = plugins.target(options.target_type) if options.target_type else plugins.detect_target(options.target)
    ctx = ConvertContext(
        source_ref=options.source, target_ref=options.target, work_dir=options.work_dir,
        options={k: v for k, v in vars(options).items() if k != "backend_config"},
        platform=",".join(options.platforms), source_type=source_spec.name, target_type=target_spec.name,
        backend_type=options.backend_type or "registry",
    )
    plugins.before_convert(ctx)
    result: ConvertResult | None = None
    error: BaseException | None = None
    try:
        with scratch_dir(options.work_dir) as work:
            common = {"plugins": plugins}
            source = source_spec.open(options.source, EndpointOptions(
                insecure=options.source_insecure, plain_http=options.plain_http, platforms=options.platforms,
                all_platforms=options.all_platforms, work_dir=work, extra=common,
            ))
            try:
                target = target_spec.open(options.target, EndpointOptions(
                    insecure=options.target_insecure, plain_http=options.plain_http, work_dir=work,
                    extra={**common, "force_push": options.backend_force_push, "mount_from": [options.source] if source_spec.name == target_spec.name else []},
                ))
                try:
                    result = _Conversion(options, plugins, ctx, source, target, work).run()
                finally:
                    target.close()
            finally:
                source.close()
        return result
    except BaseException as exc:
        error = exc
        try:
            plugins.after_convert(ctx, None, exc)
        except Exception as hook_exc:  # the conversion's own error is the one to report
            log.warning("%s", hook_exc)
        raise
    finally:
        if error is None:
            plugins.after_convert(ctx, result, None)


__all__ = ["ConvertResult", "convert"]
