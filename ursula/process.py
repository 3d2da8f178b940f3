"""Process-wide setup of a process that runs a core: ``tune_malloc``.

glibc's malloc serves a block above its mmap threshold with its own ``mmap`` and gives it
back to the kernel when freed, but it raises that threshold every time such a block is freed
(up to 32 MiB). A node moves many blocks of a MiB and more (request bodies, journal batches,
snapshot images, cold chunks): after the first few are freed, the rest come from the heap,
whose free space is not given back, so RSS stays near the peak of the transient copies.
Measured with ``bench/memory.py``'s fill (0.5 GiB in 1 MiB appends, 64 MiB hot cap): peak RSS
476 MB and median 352 MB with glibc's default, 350 MB and 217 MB with the threshold fixed at
128 KiB. ``tune_malloc`` fixes it (``mallopt(M_MMAP_THRESHOLD)``, which also turns the
adjustment off); ``[node] malloc_mmap_threshold`` sets the value, 0 leaves glibc alone.
Anything but glibc is left alone.

May import: the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def tune_malloc(mmap_threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``mmap_threshold`` bytes; returns whether it was set."""
    if mmap_threshold <= 0:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
