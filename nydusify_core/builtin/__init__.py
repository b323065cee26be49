"""Built-in components, registered through the same path as third-party plugins."""
