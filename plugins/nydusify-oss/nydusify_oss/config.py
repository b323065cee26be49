"""The `oss` backend's JSON config (`--backend-config`), with the fields upstream nydusify reads."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from nydusify_core.errors import UsageError
from nydusify_core.log import register_secret
from nydusify_core.types import Credentials

ENV_ACCESS_KEY_ID = "OSS_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "OSS_ACCESS_KEY_SECRET"

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_WHAT = "oss backend config"


@dataclass(frozen=True)
class OssConfig:
    """Every value is a string, as in upstream (which parses the JSON as a map of strings).

    `scheme` is accepted and ignored (nydusd reads it); put the scheme into `endpoint`
    instead, which defaults to `http://` when it has none, as the Aliyun SDK does.
    `meta_prefix` / `blob_prefix` are used by `pack --backend-push` only.
    """

    endpoint: str
    bucket_name: str
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    object_prefix: str = ""
    meta_prefix: str = ""
    blob_prefix: str = ""
    scheme: str = ""

    def __post_init__(self) -> None:
        register_secret(self.access_key_secret)
        if not self.endpoint.strip():
            raise UsageError(f"{_WHAT}: 'endpoint' must not be empty (e.g. oss-cn-hangzhou.aliyuncs.com)")
        scheme, sep, _ = self.endpoint.partition("://")
        if sep and scheme not in ("http", "https"):
            raise UsageError(f"{_WHAT}: 'endpoint' scheme must be http or https, not {scheme!r}")
        if not _BUCKET_NAME.match(self.bucket_name):
            raise UsageError(
                f"{_WHAT}: invalid 'bucket_name' {self.bucket_name!r} "
                "(3-63 characters: lowercase letters, digits and '-', not starting or ending with '-')"
            )
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise UsageError(
                f"{_WHAT}: set both 'access_key_id' and 'access_key_secret', or neither "
                f"(then {ENV_ACCESS_KEY_ID}/{ENV_ACCESS_KEY_SECRET} are used)"
            )

    @property
    def endpoint_url(self) -> str:
        """The endpoint as the SDK will use it: `http://` unless a scheme is given."""
        endpoint = self.endpoint.strip().rstrip("/")
        return endpoint if "://" in endpoint else f"http://{endpoint}"


def env_credentials() -> Credentials | None:
    """`OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET` from the environment, when both are set."""
    key_id = os.environ.get(ENV_ACCESS_KEY_ID, "")
    secret = os.environ.get(ENV_ACCESS_KEY_SECRET, "")
    if not (key_id and secret):
        return None
    register_secret(secret)
    return Credentials(username=key_id, password=secret)
