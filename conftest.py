"""Every test in this repository (core and plugins) uses the nydusify test kit."""

pytest_plugins = ["nydusify_core.testing"]
