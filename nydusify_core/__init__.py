"""nydusify: convert OCI/Docker images into Nydus (RAFS) images."""

__version__ = "0.1.0"
