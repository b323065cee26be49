"""The `s3` backend's JSON config (`--backend-config`), with the fields upstream nydusify reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from nydusify_core.errors import UsageError
from nydusify_core.log import register_secret

DEFAULT_ENDPOINT = "s3.amazonaws.com"
DEFAULT_SCHEME = "https"
_WHAT = "s3 backend config"


@dataclass(frozen=True)
class S3Config:
    """Every value is a string, as in upstream. `region` is required (upstream's example
    omits it, and the SDK then fails obscurely). `endpoint` is a host[:port] without a
    scheme; the scheme goes in `scheme`. `meta_prefix` / `blob_prefix` are for `pack`.
    """

    bucket_name: str
    region: str
    endpoint: str = DEFAULT_ENDPOINT
    scheme: str = DEFAULT_SCHEME
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    object_prefix: str = ""
    meta_prefix: str = ""
    blob_prefix: str = ""

    def __post_init__(self) -> None:
        register_secret(self.access_key_secret)
        if not self.bucket_name.strip() or "/" in self.bucket_name or any(c.isspace() for c in self.bucket_name):
            raise UsageError(f"{_WHAT}: 'bucket_name' must be a bucket name (not empty, no '/' or spaces)")
        if not self.region.strip():
            raise UsageError(f"{_WHAT}: 'region' must not be empty (e.g. \"us-east-1\"; S3-compatible stores accept any)")
        if "://" in self.endpoint:
            scheme = self.endpoint.split("://", 1)[0]
            raise UsageError(
                f"{_WHAT}: 'endpoint' must be host[:port] without a scheme (it starts with {scheme + '://'!r}): "
                f"put the scheme in `scheme`, e.g. \"scheme\": \"{scheme}\""
            )
        if "/" in self.endpoint.rstrip("/"):
            raise UsageError(f"{_WHAT}: 'endpoint' must be host[:port], without a path")
        if self.scheme not in ("http", "https"):
            raise UsageError(f"{_WHAT}: 'scheme' must be \"http\" or \"https\", not {self.scheme!r}")
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise UsageError(
                f"{_WHAT}: set both 'access_key_id' and 'access_key_secret', or neither "
                "(then the AWS default chain is used: environment, shared config)"
            )

    @property
    def host(self) -> str:
        return self.endpoint.rstrip("/") or DEFAULT_ENDPOINT

    @property
    def endpoint_url(self) -> str:
        return f"{self.scheme}://{self.host}"
