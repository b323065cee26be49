"""Docker image references: parse, validate and normalise them the way the Docker CLI does.

`nginx` means `docker.io/library/nginx:latest`; the API of `docker.io` lives at
`registry-1.docker.io`, and its credentials are stored under `https://index.docker.io/v1/`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from nydusify_core.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_CREDENTIALS_KEY = "https://index.docker.io/v1/"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
TRANSPORT_PREFIX = "docker://"
# other transports: a reference with one of these prefixes is not a registry reference
FOREIGN_PREFIXES = ("oci:", "oci-archive:", "dir:", "docker-archive:", "docker-daemon:", "containers-storage:")

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


class InvalidReferenceError(UsageError):
    """A string that is not a valid Docker image reference."""


def _fail(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid image reference {text!r}: {why}")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: `domain/path[:tag][@digest]`.

    `tag` is None only when a digest is given; a reference with neither gets `latest`.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        return parse_reference(text)

    @property
    def name(self) -> str:
        """`docker.io/library/nginx`: the fully-qualified repository name."""
        return f"{self.domain}/{self.path}"

    @property
    def registry(self) -> str:
        """The host[:port] to talk to (Docker Hub's API host for `docker.io`)."""
        return registry_host(self.domain)

    @property
    def reference(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> "Reference":
        if not _TAG_RE.match(tag):
            raise _fail(tag, "invalid tag format")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "Reference":
        if not _SHA256_RE.match(digest):
            raise _fail(digest, "invalid digest (expected sha256:<64 lowercase hex>)")
        return replace(self, digest=digest)

    def repository(self, path: str) -> "Reference":
        """Another repository on the same registry (for cross-repository mounts)."""
        return replace(self, path=path)

    def familiar(self) -> str:
        """The short form the Docker CLI prints: `nginx:latest`, `user/app:1`."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
                path = path[len(OFFICIAL_REPO_PREFIX):]
            return path + self._suffix()
        return self.name + self._suffix()

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag else ""
        return out + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def registry_host(domain: str) -> str:
    return DOCKER_HUB_API_HOST if domain in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN) else domain


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a domain only if it has `.` or `:`, is
    `localhost`, or has uppercase letters (which a path component never has)."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def accepts(ref: str) -> bool:
    """Anything that parses as a Docker reference and names no other transport (the
    registry source's and target's claim on a `--source` / `--target`)."""
    if ref.startswith(FOREIGN_PREFIXES):
        return False
    try:
        parse_reference(ref)
    except Exception:
        return False
    return True


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise `text`; raise `InvalidReferenceError` saying what is wrong.

    With `default_tag`, a reference without tag and digest gets `latest` (Docker's
    `TagNameOnly`). Only sha256 digests are accepted, since content is verified with it.
    """
    if not isinstance(text, str) or not text:
        raise _fail(str(text), "empty reference")
    original = text
    if text.startswith(TRANSPORT_PREFIX):
        text = text[len(TRANSPORT_PREFIX):]
    if text.startswith(FOREIGN_PREFIXES):
        raise _fail(original, "has a non-registry transport prefix")
    if any(c.isspace() for c in text):
        raise _fail(original, "contains whitespace")
    if _HEX64_RE.match(text):
        raise _fail(original, "a 64-character hexadecimal string is an image ID, not a repository name")

    name, at, digest = text.partition("@")
    if at:
        if not _DIGEST_RE.match(digest):
            raise _fail(original, f"invalid digest {digest!r}")
        if not _SHA256_RE.match(digest):
            raise _fail(original, f"unsupported digest {digest!r} (only sha256:<64 lowercase hex> is supported)")
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a colon after the last slash separates the tag (not a port)
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG_RE.match(tag):
            raise _fail(original, f"invalid tag {tag!r} (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')")
    if not name:
        raise _fail(original, "missing repository name")

    domain, path = _split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise _fail(original, f"invalid registry host {domain!r}")
    _check_port(original, domain)
    if path.lower() != path:
        raise _fail(original, "repository name must be lowercase")
    for component in path.split("/"):
        if not _COMPONENT_RE.match(component):
            raise _fail(
                original,
                f"invalid repository path component {component!r} (lowercase letters, digits and single separators '.', '_', '__', '-')",
            )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(original, f"repository name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag is None and not at and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest or None)


def _check_port(original: str, domain: str) -> None:
    host, port = split_host_port(domain)
    if port is not None and not 0 < port < 65536:
        raise _fail(original, f"port {port} out of range")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(original, f"invalid IPv6 address {host!r}") from None


def split_host_port(domain: str) -> tuple[str, int | None]:
    """`host:5000` -> ("host", 5000); `[::1]:5000` -> ("[::1]", 5000)."""
    if domain.startswith("["):
        end = domain.find("]")
        host, rest = domain[: end + 1], domain[end + 1:]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = domain.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return domain, None


def is_loopback_host(domain: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1: Docker's implicit insecure registries."""
    host, _ = split_host_port(domain)
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_registry_reference(text: str) -> bool:
    """True when `text` parses as a Docker reference and names no other transport."""
    try:
        parse_reference(text)
    except UsageError:
        return False
    return True


def target_from_suffix(source: str | Reference, suffix: str) -> Reference:
    """`--target-suffix`: the tag-normalised source plus `suffix` appended to its tag.

    `localhost:5000/nginx` + `-nydus` -> `localhost:5000/nginx:latest-nydus`. A source
    pinned by digest has no tag to extend, so it is rejected (as in Go nydusify).
    """
    ref = source if isinstance(source, Reference) else parse_reference(source)
    if ref.digest:
        raise InvalidReferenceError(f"--target-suffix cannot be used with a digest reference {str(ref)!r}; give --target")
    if not suffix:
        raise InvalidReferenceError("--target-suffix must not be empty")
    return parse_reference(f"{ref.name}:{ref.tag or DEFAULT_TAG}{suffix}")
