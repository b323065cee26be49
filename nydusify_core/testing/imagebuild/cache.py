"""A directory of built test images shared by test sessions, built atomically under a lock.

Each entry is `<root>/<name>-<key>` where the key hashes the recipe version: editing a
recipe means bumping its version, which makes a new entry instead of reusing a stale one.
An entry is built in a temporary directory beside it and renamed into place, so an
interrupted build leaves no half image; a per-entry `flock` keeps parallel sessions (other
checkouts, pytest-xdist workers) from building the same thing twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

CACHE_ENV = "NYDUSIFY_TEST_IMAGES"
DEFAULT_CACHE = Path("/var/tmp/nydusify-test-images")
KEY_LENGTH = 12  # hex characters of the recipe hash in entry names
TMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    root.mkdir(parents=True, exist_ok=True)
    return root


def entry_name(name: str, recipe: str) -> str:
    key = hashlib.sha256(recipe.encode()).hexdigest()[:KEY_LENGTH]
    return f"{name}-{key}"


@contextlib.contextmanager
def _locked(root: Path, entry: str) -> Iterator[None]:
    with open(root / f".{entry}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_build(name: str, recipe: str, build: Callable[[Path], None], *, suffix: str = "") -> Path:
    """Return `<root>/<name>-<key><suffix>`, calling `build(tmp_path)` first if it is absent.

    `build` must create `tmp_path` (a directory, or a file when `suffix` names one) and may
    use `tmp_path.parent` for scratch space: that scratch directory is removed afterwards.
    """
    root = cache_root()
    entry = entry_name(name, recipe) + suffix
    final = root / entry
    if final.exists():
        return final
    with _locked(root, entry):
        if final.exists():  # another session finished it while we waited
            return final
        for stale in root.glob(f"{TMP_PREFIX}{entry}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry}-", dir=root))
        try:
            out = scratch / entry
            build(out)
            os.rename(out, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final
