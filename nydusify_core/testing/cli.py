"""Running the `nydusify` command line from tests, and the error contract every command keeps."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Mapping

__all__ = ["run_cli", "cli_ok", "one_line_error", "pseudo_random"]


def run_cli(*args: str | os.PathLike[str], stdin: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m nydusify_core.cli ARGS` in a child process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "nydusify_core.cli", *map(str, args)], capture_output=True, text=True,
                          input=stdin, env=None if env is None else dict(env), timeout=timeout)


def cli_ok(*args: str | os.PathLike[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """`run_cli` that must succeed (its stderr is the assertion message otherwise)."""
    res = run_cli(*args, **kw)
    assert res.returncode == 0, res.stderr
    return res


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The contract for every failure: non-zero exit, one `nydusify:` line, no traceback; the line."""
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nydusify: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def pseudo_random(seed: int, n: int) -> bytes:
    """`n` incompressible but reproducible bytes."""
    out, block = bytearray(), seed.to_bytes(8, "little")
    while len(out) < n:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:n])
