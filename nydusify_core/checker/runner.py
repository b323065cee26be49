"""`check`: open both images, dump what was read into the work dir, run the four rules.

The slow parts run concurrently: streaming the source layers (filesystem and content
hashing) and streaming the Nydus blobs (chunk verification) are independent, so they go
to thread pools at the same time; zlib, libzstd and the hashes release the GIL.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nydusify_core.checker import bootstrap as boot_rule
from nydusify_core.checker import data as data_rule
from nydusify_core.checker.filesystem import compare_trees, nydus_paths
from nydusify_core.checker.images import ImageRef, Side, load_config, open_side, pick_manifests
from nydusify_core.checker.manifest import blob_layers, check_manifest
from nydusify_core.checker.report import CheckReport, Problems, RuleResult
from nydusify_core.checker.rootfs import replay
from nydusify_core.config import read_json_option
from nydusify_core.errors import NydusifyError, UsageError
from nydusify_core.fsutil import atomic_write_bytes
from nydusify_core.oci import image as img
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Platform
from nydusify_core.oci.verify import verified_reader
from nydusify_core.plugins import NydusifyPlugins, create_plugin_manager, parse_backend_config
from nydusify_core.rafs.inspect import describe
from nydusify_core.rafs.model import BlobInfo, Bootstrap
from nydusify_core.types import BackendContext

log = logging.getLogger(__name__)

OUTPUT_FILES = (
    "nydus_bootstrap", "nydus_bootstrap_debug.json", "nydus_config.json", "nydus_manifest.json",
    "nydus_index.json", "oci_config.json", "oci_manifest.json", "oci_index.json",
)


@dataclass
class CheckOptions:
    """What `nydusify check` is asked to do (flag names as in nydusify v2.2).

    `check_data=False` skips reading blob data and hashing source files: the data rule is
    skipped and the filesystem rule compares metadata only."""

    target: str
    source: str | None = None
    source_insecure: bool = False
    target_insecure: bool = False
    plain_http: bool = False
    platform: str | None = None
    multi_platform: bool = False
    backend_type: str = ""
    backend_config: str | None = None  # JSON text
    backend_config_file: str | None = None
    work_dir: str | Path = "./output"
    check_data: bool = True
    workers: int = 2  # threads per pool (source layers, blobs)

    def validate(self) -> None:
        if not self.target:
            raise UsageError("--target is required")
        if self.workers < 1:
            raise UsageError("workers must be at least 1")
        if (self.backend_config or self.backend_config_file) and not self.backend_type:
            raise UsageError("--backend-config needs --backend-type")


def _pretty(data: bytes | Any) -> bytes:
    obj = json.loads(data) if isinstance(data, (bytes, bytearray)) else data
    return (json.dumps(obj, indent=2) + "\n").encode()


class _Run:
    def __init__(self, options: CheckOptions, plugins: NydusifyPlugins) -> None:
        self.o, self.plugins = options, plugins
        self.work = Path(options.work_dir)
        self.want = Platform.parse(options.platform) if options.platform else img.host_platform()
        self.report = CheckReport(target=options.target, source=options.source, platform=str(self.want), work_dir=str(self.work))
        self.backend: Any = None
        self.target: Side | None = None
        self.source: Side | None = None
        self.target_pick: list[str] = []  # problems met picking manifests from an index
        self.source_pick: list[str] = []

    # --- opening -------------------------------------------------------------------------

    def _open_backend(self) -> None:
        if not self.o.backend_type or self.o.backend_type == "registry" and not (self.o.backend_config or self.o.backend_config_file):
            return
        raw = read_json_option(self.o.backend_config, self.o.backend_config_file, what="backend")
        if not raw:
            raise UsageError(f"--backend-type {self.o.backend_type} needs --backend-config or --backend-config-file")
        spec = self.plugins.backend(self.o.backend_type)
        self.backend = spec.create(parse_backend_config(spec, raw), BackendContext(
            target_ref=self.o.target, insecure=self.o.target_insecure, work_dir=self.work, plugins=self.plugins))

    def _open(self) -> None:
        self.target = open_side(self.plugins, self.o.target, insecure=self.o.target_insecure, plain_http=self.o.plain_http, work_dir=self.work)
        self.target_pick = pick_manifests(self.target, self.want)
        if self.o.source:
            self.source = open_side(self.plugins, self.o.source, insecure=self.o.source_insecure, plain_http=self.o.plain_http, work_dir=self.work)
            self.source_pick = pick_manifests(self.source, self.want)
            if self.source.oci is None and self.source.nydus is not None:
                raise UsageError(f"--source {self.o.source} is a Nydus image; give the OCI image it was converted from")
        for side in (self.target, self.source):
            if side is None:
                continue
            for image in (side.nydus, side.oci):
                if image is not None:
                    load_config(side, image)

    # --- the work dir ---------------------------------------------------------------------

    def _prepare_work(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_FILES:  # stale results of an earlier run would mislead
            (self.work / name).unlink(missing_ok=True)

    def _dump(self) -> None:
        t, s = self.target, self.source
        assert t is not None
        if t.index is not None:
            atomic_write_bytes(self.work / "nydus_index.json", _pretty(t.root_bytes))
        oci_side = s if s is not None else t
        if oci_side.index is not None and (s is not None or t.oci is not None):
            atomic_write_bytes(self.work / "oci_index.json", _pretty(oci_side.root_bytes))
        for prefix, image in (("nydus", t.nydus), ("oci", oci_side.oci)):
            if image is None:
                continue
            atomic_write_bytes(self.work / f"{prefix}_manifest.json", _pretty(image.manifest_bytes))
            if image.config_bytes is not None:
                atomic_write_bytes(self.work / f"{prefix}_config.json", _pretty(image.config_bytes))

    # --- bootstrap --------------------------------------------------------------------------

    def _bootstrap(self, problems: Problems) -> tuple[Bootstrap | None, str | None]:
        image = self.target.nydus if self.target else None
        if image is None or not image.manifest.layers:
            return None, None
        layer = image.manifest.layers[-1]
        if layer.media_type not in mt.BOOTSTRAP_LAYER_TYPES:
            problems.add(f"last layer has media type {layer.media_type}, not a gzip bootstrap layer")
            return None, None
        path = self.work / "nydus_bootstrap"
        try:
            extracted = boot_rule.extract_bootstrap_layer(self.target.endpoint.open_blob(layer), layer, path)
        except NydusifyError as exc:
            problems.add(f"bootstrap layer {layer.digest}: {exc}")
            return None, None
        try:
            bs = boot_rule.load(path)
        except NydusifyError as exc:
            problems.add(f"invalid bootstrap: {exc}")
            return None, extracted.diff_id
        info = describe(bs, str(path), tree=False)
        atomic_write_bytes(self.work / "nydus_bootstrap_debug.json", (json.dumps(info) + "\n").encode())
        return bs, extracted.diff_id

    def _blob_sizes(self, bs: Bootstrap, problems: Problems) -> dict[str, int]:
        """Real blob sizes: manifest layers, or the backend (which must have every blob)."""
        assert self.target is not None and self.target.nydus is not None
        sizes = {bid: d.size for bid, d in blob_layers(self.target.nydus.manifest).items()
                 if not d.annotations.get(mt.ANNOTATION_NYDUS_REF)}
        if self.backend is not None:
            for b in bs.blobs:
                try:
                    sizes[b.blob_id] = self.backend.size(b.blob_id)
                except NydusifyError as exc:
                    problems.add(f"blob {b.blob_id} is not in the {self.o.backend_type} backend: {exc}")
        return sizes

    # --- data -------------------------------------------------------------------------------

    def _blob_opener(self) -> tuple[Any, str]:
        """(opener, reason): opener is None when blobs cannot be reached (reason says why)."""
        assert self.target is not None and self.target.nydus is not None
        layers = blob_layers(self.target.nydus.manifest)
        backend, target = self.backend, self.target

        def opener(index: int, blob: BlobInfo) -> IO[bytes]:
            if backend is not None:
                return verified_reader(backend.open(blob.blob_id), "sha256:" + blob.blob_id, None, what=f"blob {blob.blob_id}")
            desc = layers.get(blob.blob_id)
            if desc is None:
                raise UsageError("not a layer of the manifest, and no --backend-type given")
            return target.endpoint.open_blob(desc)

        if backend is None and not layers:
            return None, "the manifest lists no blob layers (blobs in object storage?): give --backend-type and --backend-config to read them"
        if backend is None and any(d.annotations.get(mt.ANNOTATION_NYDUS_REF) for d in layers.values()):
            return None, "zran (--oci-ref) blobs are not verified"
        return opener, ""

    # --- run --------------------------------------------------------------------------------

    def run(self) -> CheckReport:
        t0 = time.monotonic()
        o = self.o
        self._open_backend()
        self._open()
        self._prepare_work()
        self._dump()
        assert self.target is not None
        self.report.timings["open"] = time.monotonic() - t0

        boot_problems = Problems()
        bs, diff_id = self._bootstrap(boot_problems)
        self.report.timings["bootstrap"] = time.monotonic() - t0

        tables, plan = data_rule.chunk_tables(bs) if bs is not None else ({}, {})
        want_data = o.check_data and bs is not None
        opener, no_blobs = self._blob_opener() if want_data else (None, "")
        blob_job: Future | None = None
        replay_job: Future | None = None
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="check")
        try:
            if opener is not None:
                blob_job = pool.submit(data_rule.verify_blobs, bs, tables, opener, workers=o.workers)
            oci = self.source.oci if self.source is not None else None
            if oci is not None and bs is not None:
                src = self.source
                assert src is not None
                replay_job = pool.submit(replay, oci.manifest.layers, src.endpoint.open_blob, plan if want_data else None, workers=o.workers)

            self.report.rules.append(self._manifest_rule(bs, diff_id))
            self.report.rules.append(self._bootstrap_rule(bs, boot_problems))
            nydus_tree = nydus_paths(bs) if bs is not None else {}
            fs_rule, source_tree = self._filesystem_rule(bs, replay_job, oci, nydus_tree)
            self.report.rules.append(fs_rule)
            self.report.timings["filesystem"] = time.monotonic() - t0

            self.report.rules.append(self._data_rule(bs, blob_job, no_blobs, source_tree, nydus_tree))
            self.report.timings["total"] = time.monotonic() - t0
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return self.report

    def _manifest_rule(self, bs: Bootstrap | None, diff_id: str | None) -> RuleResult:
        assert self.target is not None
        problems = Problems()
        for side, name, picked in ((self.target, "target", self.target_pick), (self.source, "source", self.source_pick)):
            for p in [*(side.problems if side is not None else []), *picked]:
                problems.add(f"{name}: {p}")
        check_manifest(problems, self.target, self.source, self.want, multi_platform=self.o.multi_platform,
                       bootstrap=bs, bootstrap_diff_id=diff_id, external_blobs=self.backend is not None)
        return RuleResult.from_problems("manifest", problems, self._manifest_detail())

    def _bootstrap_rule(self, bs: Bootstrap | None, problems: Problems) -> RuleResult:
        assert self.target is not None
        if self.target.nydus is None:
            return RuleResult.blocked("bootstrap", "no Nydus manifest to take the bootstrap from")
        if bs is None:
            return RuleResult.from_problems("bootstrap", problems)
        chunks = boot_rule.check_bootstrap(bs, problems, self._blob_sizes(bs, problems))
        return RuleResult.from_problems("bootstrap", problems, f"RAFS v{bs.version}, {len(bs.blobs)} blobs, {chunks} chunk references")

    def _filesystem_rule(self, bs: Bootstrap | None, replay_job: Future | None, oci: ImageRef | None,
                         nydus_tree: dict) -> tuple[RuleResult, dict | None]:
        if self.source is None:
            return RuleResult.skip("filesystem", "no --source given"), None
        if bs is None:
            return RuleResult.blocked("filesystem", "no usable bootstrap"), None
        if replay_job is None or oci is None:
            return RuleResult.blocked("filesystem", "no source image for the platform"), None
        problems = Problems()
        try:
            source_tree, diff_ids, nbytes = replay_job.result()
        except NydusifyError as exc:
            problems.add(f"source: {exc}")
            return RuleResult.from_problems("filesystem", problems), None
        if oci.config is not None and list(oci.config.diff_ids) != diff_ids:
            problems.add("the source layers' digests differ from the source config's diff_ids")
        n = compare_trees(source_tree, nydus_tree, problems)
        detail = f"{n} paths compared ({nbytes / (1 << 20):.1f} MiB of source layers)"
        return RuleResult.from_problems("filesystem", problems, detail), source_tree

    def _manifest_detail(self) -> str:
        t = self.target
        assert t is not None
        if t.nydus is None:
            return ""
        m = t.nydus.manifest
        return f"{m.media_type}, {len(m.layers) - 1} blob layers + bootstrap"

    def _data_rule(self, bs: Bootstrap | None, blob_job: Future | None, no_blobs: str,
                   source_tree: dict | None, nydus_tree: dict) -> RuleResult:
        if not self.o.check_data:
            return RuleResult.skip("data", "data checks disabled")
        if bs is None:
            return RuleResult.blocked("data", "no usable bootstrap")
        problems = Problems()
        parts = []
        if blob_job is not None:
            verdicts = blob_job.result()
            data_rule.blob_problems(verdicts, problems)
            parts.append(f"{len(verdicts)} blobs, {sum(v.chunks for v in verdicts)} chunks verified")
        else:
            parts.append(f"blobs not read: {no_blobs}")
        if source_tree is not None:
            n = data_rule.content_problems(source_tree, nydus_tree, problems)
            parts.append(f"{n} files compared with the source")
        if blob_job is None and source_tree is None:
            return RuleResult.skip("data", no_blobs)
        return RuleResult.from_problems("data", problems, "; ".join(parts))

    def close(self) -> None:
        for side in (self.source, self.target):
            if side is not None:
                side.close()
        if self.backend is not None:
            self.backend.close()


def check(options: CheckOptions, plugins: NydusifyPlugins | None = None) -> CheckReport:
    """Check the Nydus image `options.target` (against `options.source` when given).

    Raises `NydusifyError` subclasses only when the check cannot run (bad options,
    unreachable or missing images); everything wrong with the images is in the report."""
    options.validate()
    run = _Run(options, plugins or create_plugin_manager())
    try:
        return run.run()
    finally:
        run.close()


__all__ = ["CheckOptions", "OUTPUT_FILES", "check"]
