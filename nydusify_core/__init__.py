"""nydusify: convert OCI/Docker images into Nydus (RAFS) images.

Plugins implement hooks with `nydusify_core.hookimpl`; see `nydusify_core.hookspecs`.
"""

from nydusify_core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
