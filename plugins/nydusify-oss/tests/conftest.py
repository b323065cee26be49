"""The OSS-protocol test server, until the test kit's `__init__` exports it."""

from nydusify_core.testing.oss_server import oss_bucket, oss_server  # noqa: F401
