"""Real servers on loopback for tests (registry, S3)."""

__all__: list[str] = []
