"""Process-wide settings the node applies before it starts its threads (ROS-free, glibc-specific).

glibc gives every thread that allocates its own malloc arena (up to 8 per core). The node's worker, TSDF, executor
and DDS threads allocate and free large NumPy buffers at frame rate; across many arenas the freed memory fragments
and is not returned, so the resident size keeps growing. Measured with the 10-minute 30 Hz soak (``python
bench/node.py --rate 30 --frames 60 --repeat 300``): RSS 0.83 -> 5.84 GB, +15.3 % over the second half with the
default arenas; 0.83 -> 2.86 GB, +0.3 % with ``MALLOC_ARENA_MAX=2`` (latency and drops unchanged). The node sets the
same limit with ``mallopt`` at start unless the user set ``MALLOC_ARENA_MAX`` themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["limit_malloc_arenas"]

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads created from now on. False where it does not apply (not glibc, or the
    environment's ``MALLOC_ARENA_MAX`` already decides)."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, int(arenas)) == 1
