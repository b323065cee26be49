#!/usr/bin/env python3
"""Write the bundled example image: a small two-layer OCI image layout.

Layer 1 holds an app tree (text, a 3 MiB binary, a symlink, a hardlink, an empty dir);
layer 2 changes a file and deletes another with an OCI whiteout. Everything is
deterministic (fixed times and seeded data), so the image digest never changes.

Usage: make_example_image.py OUT_DIR   (writes OUT_DIR as an OCI layout, tag "latest")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

EPOCH = 1577836800  # 2020-01-01


def _data(seed: str, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def _layer(entries: list[tuple[str, str, bytes | str]]) -> tuple[bytes, str]:
    """(kind, path, payload) -> (gzip bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, path, payload in entries:
            info = tarfile.TarInfo(path)
            info.mtime, info.uname, info.gname = EPOCH, "", ""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                assert isinstance(payload, bytes)
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "exe":
                assert isinstance(payload, bytes)
                info.size, info.mode = len(payload), 0o755
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(payload), 0o777
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, str(payload), 0o644
                tar.addfile(info)
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as f:
        f.write(tar_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def _blob(root: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def main(out: Path) -> None:
    (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    readme = b"Hello from a Nydus example image.\n"
    layer1, diff1 = _layer([
        ("dir", "app", b""),
        ("file", "app/README", readme),
        ("exe", "app/bin/tool", _data("tool", 3 << 20)),
        ("file", "app/config.json", b'{"greeting": "hello"}\n'),
        ("file", "app/old.log", b"to be deleted\n"),
        ("symlink", "app/current", "bin/tool"),
        ("hardlink", "app/README.hardlink", "app/README"),
        ("dir", "app/empty", b""),
    ])
    layer2, diff2 = _layer([
        ("file", "app/config.json", b'{"greeting": "hello, nydus"}\n'),
        ("file", "app/.wh.old.log", b""),
    ])
    layers = [_blob(out, layer1, "application/vnd.oci.image.layer.v1.tar+gzip"),
              _blob(out, layer2, "application/vnd.oci.image.layer.v1.tar+gzip")]
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/app/bin/tool"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": [diff1, diff2]},
        "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "example layer 1"},
                    {"created": "2020-01-01T00:00:00Z", "created_by": "example layer 2"}],
    }
    config_desc = _blob(out, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_desc, "layers": layers}
    manifest_desc = _blob(out, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(Path(sys.argv[1]))
