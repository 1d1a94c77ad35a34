"""One malloc arena for the `avvp` process, so CPU extraction stays flat in memory.

glibc gives each thread that allocates its own heap ("arena"). Torch's OpenMP threads
and the decoders' threads allocate and free in different threads, and memory freed
into one arena is not reused by another, so a CPU extraction holds more than it uses.
Measured here (`avvp extract --size tiny --device cpu` on 320 x 240 videos, 2 cores):
peaks of 1,388 and 1,478 MiB for 2 and 20 minutes with one arena, 1,486 and 1,501 with
glibc's default arenas, at the same speed. (Memory no longer grows with a video's
length either way: that came from decord decoding ahead, see avvp.pipeline.sources.decode.)
The limit must be set before the threads first allocate, so the command line sets it
when it starts, before torch is imported; an application that embeds avvp can call
this first, or set MALLOC_ARENA_MAX=1. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def use_one_malloc_arena() -> bool:
    """Ask glibc for a single malloc arena; whether it took the setting."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt and mallopt(_M_ARENA_MAX, 1))
