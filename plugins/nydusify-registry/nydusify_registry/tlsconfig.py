"""Per-host TLS trust from the directories docker and containerd users already fill:
``/etc/docker/certs.d/HOST[:PORT]/`` and ``/etc/containerd/certs.d/HOST[:PORT]/``.

The rules are docker's (containerd applies them too when a host directory has no
hosts.toml): every ``*.crt`` is a CA root trusted for that host only, in addition to the
base bundle (system CAs, or the endpoint's ``ca_file``); every ``*.cert`` with its ``*.key``
of the same stem is a client certificate for mutual TLS. ``NYDUSIFY_CERTS_DIRS``
(colon-separated) replaces the two base directories, e.g. for tests or rootless setups.
hosts.toml itself is not read.

requests takes a single CA bundle per request, so the base bundle and the host's CAs are
concatenated once into a private file (content-addressed, removed at exit).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from nydusify_core.errors import UsageError

__all__ = ["CERTS_DIRS_ENV", "DEFAULT_CERTS_DIRS", "HostTls", "certs_dirs", "host_tls", "trust_bundle"]

CERTS_DIRS_ENV = "NYDUSIFY_CERTS_DIRS"
DEFAULT_CERTS_DIRS = ("/etc/docker/certs.d", "/etc/containerd/certs.d")
MAX_CA_FILE = 4 << 20  # a CA file larger than this is not a CA file


@dataclass(frozen=True)
class HostTls:
    """What the certs.d directories say about one registry host."""

    ca_files: tuple[Path, ...] = ()
    client_cert: tuple[str, str] | None = None  # (certificate, key) for mutual TLS


def certs_dirs() -> list[Path]:
    """The base directories searched for `HOST[:PORT]` subdirectories, in order."""
    value = os.environ.get(CERTS_DIRS_ENV)
    if value is None:
        return [Path(d) for d in DEFAULT_CERTS_DIRS]
    return [Path(d) for d in value.split(os.pathsep) if d]


def host_tls(host: str, bases: list[Path] | None = None) -> HostTls:
    """CA roots and the client certificate for `host` (``name`` or ``name:port``, exactly
    as in image references) from every base directory that has a subdirectory for it."""
    if not host or "/" in host or host in (".", ".."):
        return HostTls()
    cas: list[Path] = []
    client: tuple[str, str] | None = None
    for base in certs_dirs() if bases is None else bases:
        directory = base / host
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise UsageError(f"cannot read TLS directory {directory}: {exc.strerror}") from None
        for name in names:
            path = directory / name
            if name.endswith(".crt"):
                _check_ca(path)
                cas.append(path)
            elif name.endswith(".cert"):
                key = directory / (name[: -len(".cert")] + ".key")
                if not key.is_file():
                    raise UsageError(f"missing key {key} for client certificate {path} (CA roots must end in .crt)")
                client = client or (str(path), str(key))
            elif name.endswith(".key"):
                if not (directory / (name[: -len(".key")] + ".cert")).is_file():
                    raise UsageError(f"missing client certificate {path.with_suffix('.cert')} for key {path}")
    return HostTls(tuple(cas), client)


def _check_ca(path: Path) -> None:
    """Fail early, naming the file, rather than with an opaque TLS error on every request."""
    try:
        if path.stat().st_size > MAX_CA_FILE:
            raise UsageError(f"CA file {path} is larger than {MAX_CA_FILE >> 20} MiB")
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=os.fspath(path))
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"CA file {path} holds no usable PEM certificate ({type(exc).__name__})") from None


_lock = threading.Lock()
_bundle_dir: Path | None = None


def _private_dir() -> Path:
    global _bundle_dir
    if _bundle_dir is None:
        _bundle_dir = Path(tempfile.mkdtemp(prefix="nydusify-ca-"))
        atexit.register(shutil.rmtree, _bundle_dir, True)
    return _bundle_dir


def _base_pem(base: str | bool) -> bytes:
    """The PEM text of the base trust: a bundle file, an OpenSSL hashed directory, or
    (True) requests' own bundle."""
    if base is True:
        import requests.certs

        base = requests.certs.where()
    path = Path(str(base))
    if path.is_dir():
        seen: set[str] = set()
        parts = []
        for entry in sorted(path.iterdir()):
            real = os.path.realpath(entry)
            if real in seen or not entry.is_file():
                continue
            seen.add(real)
            data = entry.read_bytes()
            if data.startswith(b"-----BEGIN"):
                parts.append(data)
        return b"\n".join(parts)
    return path.read_bytes()


def trust_bundle(base: str | bool, ca_files: tuple[Path, ...]) -> str | bool:
    """A CA bundle path trusting `base` plus `ca_files` (`base` itself when there are none)."""
    if not ca_files:
        return base
    pem = b"\n".join([_base_pem(base), *(p.read_bytes() for p in ca_files)]) + b"\n"
    name = hashlib.sha256(pem).hexdigest()[:32] + ".pem"
    with _lock:
        out = _private_dir() / name
        if not out.exists():
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.replace(out)
    return str(out)
