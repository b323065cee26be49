"""Local OCI test images for tests."""

__all__: list[str] = []
