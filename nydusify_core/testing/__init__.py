"""The nydusify test kit: a pytest plugin for nydusify and its plugins.

Opt in explicitly from a conftest (`pytest_plugins = ["nydusify_core.testing"]`); it is not
a `pytest11` entry point, so it never loads into unrelated test runs. It provides fresh
plugin managers, real servers on loopback (registry, S3), local OCI test images, and the
`BackendContract` suite (`nydusify_core.testing.backend_contract`).
"""

from nydusify_core.testing.images import *  # noqa: F401,F403  (fixtures)
from nydusify_core.testing.nydus import *  # noqa: F401,F403  (helpers)
from nydusify_core.testing.oss_server import *  # noqa: F401,F403  (fixtures)
from nydusify_core.testing.plugins import *  # noqa: F401,F403  (fixtures)
from nydusify_core.testing.servers import *  # noqa: F401,F403  (fixtures)
from nydusify_core.testing.trees import *  # noqa: F401,F403  (snapshot, diff_trees)
from nydusify_core.testing.erofs import *  # noqa: F401,F403  (kernel_mount, read_chunkwise, expanded_blobs)
