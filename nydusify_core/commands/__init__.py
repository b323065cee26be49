"""The built-in subcommands of `nydusify`, one module each."""
