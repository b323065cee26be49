"""Image conversion: an OCI/Docker image into a Nydus image, layer by layer."""

from nydusify_core.conversion.options import ConvertOptions
from nydusify_core.conversion.pipeline import ConvertResult, convert

__all__ = ["ConvertOptions", "ConvertResult", "convert"]
