"""How the decoders (decord, PyAV) fail: `BackendError` when one of them cannot read a
file, with its message trimmed by `first_line` to what stays the same from run to run.

The reasons given per file replace libav's console logging, which is turned off here.
"""

from __future__ import annotations

import re

import av

# libav prints its own warnings to the console, once per bad packet; the reasons given
# per file replace them (`frame_readers` quiets the copy bundled in decord likewise).
av.logging.set_level(None)

# What changes from run to run in the decoders' messages: decord's log time stamps
# ("[15:12:17] "), and the addresses in libav's log contexts ("[h264 @ 0x55d5c1f0]").
_RUN_VARYING = re.compile(r"\[\d{2}:\d{2}:\d{2}\]\s*|\s*@\s*0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


class BackendError(Exception):
    """One decoder could not read the file; the message says why, `at` since when (s)."""

    def __init__(self, message: str, at: float | None = None) -> None:
        super().__init__(message)
        self.at = at


def first_line(error: Exception) -> str:
    """The decoder's message, first line, without what changes from run to run (so one
    bad file keeps one failure row)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return _RUN_VARYING.sub("", lines[0]).strip() if lines else type(error).__name__
