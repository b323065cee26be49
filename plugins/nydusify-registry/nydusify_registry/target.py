"""Target `registry`: blobs, then manifests by digest, then the tag, in one repository."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import IO

from nydusify_core.errors import IntegrityError
from nydusify_core.oci.descriptor import Descriptor, sha256_digest
from nydusify_core.types import EndpointOptions

from nydusify_registry.connect import connect
from nydusify_registry.reference import Reference, parse_reference

log = logging.getLogger(__name__)

# containerd's label/annotation naming the repository content was pulled from
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
IN_MEMORY_LIMIT = 8 << 20  # blobs up to this size are spooled in memory, larger ones to disk
COPY_BLOCK = 1 << 20


class RegistryTarget:
    """Writes an image to a registry repository.

    `push_blob` skips blobs the repository already has (HEAD) unless forced, then tries a
    cross-repository mount from every known source repository on the same registry
    (`mount_from`, option ``extra["mount_from"]`` or a containerd distribution-source
    annotation on the descriptor), and uploads otherwise. `push_manifest` stores by
    digest and then, with `tag`, under the tag.
    """

    def __init__(self, ref: str, options: EndpointOptions | None = None) -> None:
        options = options or EndpointOptions()
        self.reference: Reference = parse_reference(ref)
        self.ref = str(self.reference)
        self.work_dir = options.work_dir
        self.force_push = bool(options.extra.get("force_push", False))
        self.client = connect(self.reference.registry, insecure=options.insecure, plain_http=options.plain_http, extra=options.extra)
        self._mount_sources: list[str] = []
        for other in options.extra.get("mount_from") or ():
            self.mount_from(other)

    @property
    def repository(self) -> str:
        return self.reference.path

    @property
    def tag(self) -> str | None:
        return self.reference.tag

    def mount_from(self, ref: str | Reference) -> None:
        """Remember a repository blobs may be mounted from (ignored on another registry)."""
        other = ref if isinstance(ref, Reference) else parse_reference(ref)
        if other.domain == self.reference.domain and other.path != self.repository and other.path not in self._mount_sources:
            self._mount_sources.append(other.path)

    def _mount_candidates(self, desc: Descriptor) -> list[str]:
        repos = list(self._mount_sources)
        value = desc.annotations.get(DISTRIBUTION_SOURCE_PREFIX + self.reference.domain, "")
        for repo in value.split(","):
            repo = repo.strip()
            if repo and repo != self.repository and repo not in repos:
                repos.append(repo)
        return repos

    def has_blob(self, desc: Descriptor) -> bool:
        return self.client.has_blob(self.repository, desc.digest)

    def push_blob(self, desc: Descriptor, stream: IO[bytes], *, force: bool = False) -> None:
        if not (force or self.force_push) and self.has_blob(desc):
            log.debug("blob %s already in %s; skipped", desc.digest, self.reference.name)
            return
        for repo in self._mount_candidates(desc):
            if self.client.mount_blob(self.repository, desc.digest, repo):
                log.debug("blob %s mounted from %s", desc.digest, repo)
                return
        body, spooled = self._spool(desc, stream)
        try:
            self.client.push_blob(self.repository, desc.digest, desc.size, body)
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)

    def push_path(self, desc: Descriptor, path: Path, *, force: bool = False) -> None:
        """`push_blob` for a file: re-read from disk on retries, no spooling."""
        if path.stat().st_size != desc.size:
            raise IntegrityError(f"{path} has {path.stat().st_size} bytes, its descriptor says {desc.size}")
        if not (force or self.force_push) and self.has_blob(desc):
            return
        for repo in self._mount_candidates(desc):
            if self.client.mount_blob(self.repository, desc.digest, repo):
                return
        self.client.push_blob(self.repository, desc.digest, desc.size, path)

    def _spool(self, desc: Descriptor, stream: IO[bytes]) -> tuple[bytes | Path, Path | None]:
        """Copy the stream (which can be read only once) so that retries can re-send it,
        checking its size and digest on the way."""
        digest = hashlib.sha256()
        count = 0
        if desc.size <= IN_MEMORY_LIMIT:
            data = stream.read(desc.size + 1)
            _check(desc, sha256_digest(data), len(data))
            return data, None
        directory = self.work_dir if self.work_dir is not None else None
        fd, name = tempfile.mkstemp(prefix="nydusify-upload-", dir=directory)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(COPY_BLOCK)
                    if not block:
                        break
                    digest.update(block)
                    count += len(block)
                    if count > desc.size:
                        break
                    out.write(block)
            _check(desc, "sha256:" + digest.hexdigest(), count)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, path

    def push_manifest(self, desc: Descriptor, data: bytes, *, tag: str | None = None) -> None:
        _check(desc, sha256_digest(data), len(data))
        self.client.put_manifest(self.repository, desc.digest, data, desc.media_type)
        if tag is not None:
            self.reference.with_tag(tag)  # validates the tag
            self.client.put_manifest(self.repository, tag, data, desc.media_type)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RegistryTarget":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(desc: Descriptor, digest: str, size: int) -> None:
    if size != desc.size:
        raise IntegrityError(f"content of {desc.digest} has {'more than ' if size > desc.size else ''}{size} bytes, its descriptor says {desc.size}", expected=str(desc.size), got=str(size))
    if digest != desc.digest:
        raise IntegrityError(f"content digest mismatch: expected {desc.digest}, got {digest}", expected=desc.digest, got=digest)

