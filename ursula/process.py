"""Process-wide setup of a process that runs a core: ``tune_malloc`` and ``tune_gc``.

glibc's malloc serves a block above its mmap threshold with its own ``mmap`` and gives it
back to the kernel when freed, but it raises that threshold every time such a block is freed
(up to 32 MiB). A node moves many blocks of a MiB and more (request bodies, journal batches,
snapshot images, cold chunks): after the first few are freed, the rest come from the heap,
whose free space is not given back, so RSS stays near the peak of the transient copies.
Measured with ``bench/memory.py`` (1 MiB appends, 64 MiB hot cap): with the threshold fixed at
128 KiB the peak RSS of a fill drops from about 490 to 350-360 MB and the settled RSS from about
290 to 115-165 MB, but every large block is then a fresh mmap (page faults, zeroed pages):
the fill is 10-25 % slower and a cold catch-up read about half as fast (500 -> 250 MB/s).
So it is a choice, not a default: ``[node] malloc_mmap_threshold = 131072`` for a node that
must stay small; 0 (the default) leaves glibc alone. ``tune_malloc`` sets it
(``mallopt(M_MMAP_THRESHOLD)``, which also turns glibc's adjustment off); anything but glibc
is left alone.

May import: the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def tune_gc(threshold: int) -> bool:
    """Run Python's young-generation collection every ``threshold`` allocations instead of
    every 700, and move everything alive now (imports, the recovered state) out of the
    collector's sight (``gc.freeze``); returns whether anything was changed.

    A core process allocates a few dozen short-lived objects per request, nearly all freed by
    reference counting; with the default threshold the collector still ran every few requests
    and walked the young generation each time (3-4 % of an append's instructions in
    ``bench/pathcost.py``). Cycles are still collected, only in larger steps."""
    if threshold <= 0:
        return False
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
    gc.freeze()
    return True


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
