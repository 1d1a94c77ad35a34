"""The errors of the stores: what a stored table refuses, and why."""

from __future__ import annotations


class StoreError(Exception):
    """A stored table cannot be read or written as asked."""


class ProvenanceMismatchError(StoreError, ValueError):
    """A write's provenance differs from the table's."""


class BrokenPartError(StoreError, ValueError):
    """A part file of a table cannot be read (cut short, overwritten, not Parquet)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class StoreLocationError(StoreError, ValueError):
    """A store root that cannot hold a store: a file, or a folder this process cannot write."""


class MissingKeysError(StoreError, KeyError):
    """Requested keys are not stored."""

    def __str__(self) -> str:
        # KeyError would print the message with quotes around it.
        return str(self.args[0])
