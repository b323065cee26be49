"""Builders behind `nydusify_core.testing.images`: one module per image family, plus the
cache, the tool runner and a minimal OCI layout writer they share."""
