pytest_plugins = ["nydusify_core.testing"]
