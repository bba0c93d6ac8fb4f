"""Keep freed memory in the worker's heap instead of handing it back to the kernel at once.

glibc serves allocations above a threshold with their own ``mmap`` and returns freed heap
memory above another as soon as it is free, so each large request (a 730 kB body, its numpy
temporaries, the tensor) maps fresh pages and faults every one of them in again. On 256-image
requests that was ≈30 % of a gevent worker's CPU (docs/performance.md, item 14). Raising both
thresholds keeps up to ``keep_bytes`` of freed memory mapped for the next request; the cost is
RSS that stays at its peak instead of shrinking back after a burst of large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit builds).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
#: mallopt takes a C int.
MAX_KEEP_BYTES = 2**31 - 1


def keep_freed_memory(keep_bytes: int) -> bool:
    """Set glibc's trim threshold to ``keep_bytes`` and its mmap threshold to the same, capped
    at 32 MiB (glibc's own limit). Returns False where it could not (not glibc, or 0 given:
    nothing changed); ``keep_bytes`` must be 0..MAX_KEEP_BYTES."""
    if not 0 <= keep_bytes <= MAX_KEEP_BYTES:
        raise ValueError(f"keep_bytes must be 0..{MAX_KEEP_BYTES}, got {keep_bytes}")
    if keep_bytes == 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, min(keep_bytes, MAX_MMAP_THRESHOLD)) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, keep_bytes) == 1
    return mmap_ok and trim_ok
