"""Example third-party nydusify plugin built on the stage hooks.

* Every stage appends one JSON line to an audit log (`NYDUSIFY_EXAMPLE_AUDIT_LOG`, default
  `./nydusify-audit.jsonl`), so an operator can see what a conversion did and where it stopped.
* Every converted manifest gets the annotation `org.example.nydusify.audited-by`.
* `NYDUSIFY_EXAMPLE_MAX_BLOBS` (optional) vetoes images with more data blobs than that: the
  hook raises before the manifest push, so no tag is written.

Installed with `pip install examples/nydusify-example-hook`; found through the `nydusify`
entry-point group. Hookspecs: docs/plugins/hooks.md.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from nydusify_core import hookimpl

ANNOTATION = "org.example.nydusify.audited-by"
_lock = threading.Lock()  # layers are built in parallel: keep lines whole


def _audit(stage: str, ctx: Any, **fields: Any) -> None:
    path = os.environ.get("NYDUSIFY_EXAMPLE_AUDIT_LOG", "nydusify-audit.jsonl")
    record = {"stage": stage, "source": ctx.source_ref, "target": ctx.target_ref, **fields}
    with _lock, open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record, sort_keys=True) + "\n")


@hookimpl
def nydusify_before_convert(ctx: Any) -> None:
    _audit("before_convert", ctx, backend=ctx.backend_type)


@hookimpl
def nydusify_after_build_layer(ctx: Any, layer: Any, built: Any) -> None:
    _audit("after_build_layer", ctx, layer=layer.digest, blob=built.blob_id, size=built.blob_size)


@hookimpl
def nydusify_after_upload_blob(ctx: Any, blob: Any, backend_type: str) -> None:
    _audit("after_upload_blob", ctx, blob=blob.id, size=blob.size, backend=backend_type)


@hookimpl
def nydusify_manifest_annotations(ctx: Any) -> dict[str, str]:
    return {ANNOTATION: "nydusify-example-hook"}


@hookimpl
def nydusify_before_push_manifest(ctx: Any, info: Any) -> None:
    limit = os.environ.get("NYDUSIFY_EXAMPLE_MAX_BLOBS")
    _audit("before_push_manifest", ctx, blobs=[{"id": b.id, "size": b.size} for b in info.blobs])
    if limit and len(info.blobs) > int(limit):
        raise ValueError(f"{len(info.blobs)} blobs, the audit policy allows {limit}")


@hookimpl
def nydusify_after_push_manifest(ctx: Any, info: Any, descriptor: Any) -> None:
    _audit("after_push_manifest", ctx, digest=descriptor.digest)


@hookimpl
def nydusify_after_convert(ctx: Any, result: Any, error: BaseException | None) -> None:
    _audit("after_convert", ctx, ok=error is None, error=str(error) if error else None)
