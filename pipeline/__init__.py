"""The stages as plain functions, their configs and the `avvp` command line."""
