"""Source `dir`: a local directory seen as a one-layer image (`dir:PATH`).

The layer is a deterministic tar of the tree (sorted names, PAX xattrs, hardlinks kept),
generated twice: once to learn its digest, once when the layer is read. The second pass
is verified against the first, so a tree that changes underneath is an error, not a
silently different image.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import tarfile
import threading
from pathlib import Path
from typing import IO, Iterable

from nydusify_core.errors import NotFoundError
from nydusify_core.hookspecs import hookimpl
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.verify import verified_reader
from nydusify_core.types import EndpointOptions, SourceSpec

PREFIX = "dir:"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def write_tree_tar(root: Path, out: IO[bytes]) -> None:
    """Write `root`'s contents as a PAX tar with paths relative to it, in sorted order."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20) as tar:
        for rel in _sorted_paths(root):
            full = root / rel if rel != "." else root
            info = tar.gettarinfo(str(full), arcname=rel)
            if info is None:  # sockets cannot be archived; upstream's tar stream skips them too
                continue
            info.uname = info.gname = ""
            xattrs = _xattrs(full)
            if xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _sorted_paths(root: Path) -> Iterable[str]:
    yield "."
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        names = sorted(os.listdir(os.path.join(root, rel_dir) if rel_dir else root), key=os.fsencode)
        subdirs = []
        for name in names:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            yield rel
            if stat.S_ISDIR(os.lstat(os.path.join(root, rel)).st_mode):
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def _xattrs(path: Path) -> dict[str, str]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False).decode("utf-8", "surrogateescape")
        except OSError:
            continue
    return out


class _HashSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class LocalDirSource:
    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        self.ref = ref
        path = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
        self.root = Path(path)
        if not self.root.is_dir():
            raise NotFoundError(f"source directory {str(self.root)!r} does not exist or is not a directory")
        self._blobs: dict[str, bytes] = {}
        self._layer: Descriptor | None = None
        self._manifest: Descriptor | None = None

    def _build(self) -> Descriptor:
        if self._manifest is not None:
            return self._manifest
        sink = _HashSink()
        write_tree_tar(self.root, sink)  # type: ignore[arg-type]
        layer = Descriptor(mt.OCI_LAYER, "sha256:" + sink.hash.hexdigest(), sink.size)
        config = {
            "architecture": host_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            "history": [{"created_by": f"nydusify dir source {self.root}"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_desc = Descriptor.for_bytes(mt.OCI_CONFIG, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.to_json()],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        self._manifest = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest_bytes)
        self._blobs = {config_desc.digest: config_bytes, self._manifest.digest: manifest_bytes}
        self._layer = layer
        return self._manifest

    def resolve(self) -> Descriptor:
        return self._build()

    def fetch(self, desc: Descriptor) -> bytes:
        self._build()
        try:
            return self._blobs[desc.digest]
        except KeyError:
            raise NotFoundError(f"{desc.digest} is not part of directory source {self.root}") from None

    def open_blob(self, desc: Descriptor) -> IO[bytes]:
        self._build()
        if self._layer is None or desc.digest != self._layer.digest:
            raise NotFoundError(f"{desc.digest} is not a layer of directory source {self.root}")
        read_fd, write_fd = os.pipe()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with open(write_fd, "wb", buffering=1 << 20) as w:
                    write_tree_tar(self.root, w)
            except BrokenPipeError:
                pass
            except BaseException as exc:  # surfaced by the digest check on the reader side
                errors.append(exc)

        threading.Thread(target=produce, name="dir-tar", daemon=True).start()
        return verified_reader(open(read_fd, "rb"), desc.digest, desc.size, what=f"tar of {self.root}")

    def close(self) -> None:
        pass


def _accepts(ref: str) -> bool:
    return ref.startswith(PREFIX)


@hookimpl
def nydusify_register_sources() -> Iterable[SourceSpec]:
    yield SourceSpec(name="dir", description="a local directory as a one-layer image (dir:PATH)", accepts=_accepts, open=LocalDirSource)

