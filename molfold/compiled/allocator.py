"""glibc malloc settings for repeated large model calls, applied in-process.

By default glibc serves every allocation above 128 KiB-32 MiB (its threshold adapts) with a fresh
``mmap`` and gives it back on ``free``, and trims the heap top above 128 KiB: every call of a
potential then pays page faults to zero-fill its large temporaries again. On the Cu benchmark cell
this costs the compiled Allegro about 40 % (0.14 -> 0.21 s per call on 2 cores).

:func:`keep_freed_memory` raises both thresholds to their maxima (``mallopt(M_MMAP_THRESHOLD,
32 MiB)``, ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``): the setting the allegro benchmark calls "tuned",
which the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` also
give. The process then keeps up to its peak memory instead of returning it between calls.
Allocations above 32 MiB are always mapped afresh, which is why compiled potentials evaluate large
graphs in blocks whose temporaries stay below it (:data:`molfold.compiled.potential
.CPU_BLOCK_BYTES`).

A no-op where the C library is not glibc, and where the user set either variable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit systems
TRIM_THRESHOLD = 2**30

_applied = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True if they are in effect (now or already)."""
    global _applied
    if _applied:
        return True
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False  # the user chose
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    _applied = bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
