"""The conversion's scratch space: a fresh sub-directory, removed whatever happens.

Like nydusify >= v2.2.1: a work dir that did not exist is created and removed at the end;
an existing one is left alone and only our `nydusify-<pid>-*` sub-directory goes. Such
sub-directories left by a run that crashed (its pid is gone) are removed first, so a
re-run starts clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
PREFIX = "nydusify-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(work_dir: Path) -> None:
    for entry in work_dir.glob(f"{PREFIX}*"):
        parts = entry.name[len(PREFIX):].split("-", 1)
        if entry.is_dir() and parts[0].isdigit() and int(parts[0]) != os.getpid() and not _pid_alive(int(parts[0])):
            log.info("removing %s left by an interrupted run", entry)
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(work_dir: Path) -> Iterator[Path]:
    created = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(work_dir)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=work_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                work_dir.rmdir()
