"""One malloc arena for the `avvp` process, so CPU extraction stays flat in memory.

glibc gives each thread that allocates its own heap ("arena"). Torch's OpenMP threads
allocate and free a window's activations in different threads, and memory freed into
one arena is not reused by another, so the resident memory of a long CPU extraction
creeps up with the video's length although nothing stays alive. Measured here
(benchmarks/extract.py, tiny presets, 2 cores): a 20-minute 320 x 240 video peaked at
2,230 MiB against 1,750 for a 2-minute one (1.28x) with glibc's default arenas, and at
1,950 against 1,750 (1.11x) with one arena, at the same speed (54 s). The limit must be
set before the threads first allocate, so the command line sets it when it starts,
before torch is imported; an application that embeds avvp can call this first, or set
MALLOC_ARENA_MAX=1. Elsewhere (macOS, musl) it does nothing.
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
