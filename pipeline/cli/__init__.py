"""The `avvp` command line, one module per command group."""
