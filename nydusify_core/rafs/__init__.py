"""RAFS (Nydus) on-disk formats: bootstraps (v5, v6) and data blobs."""
