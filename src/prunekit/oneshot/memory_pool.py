"""Pooled CPU memory for the calibration passes (``csrc/memory_pool.cpp``).

Each calibration batch allocates the same temporaries; glibc serves them from a heap it never
compacts, so RSS kept growing through a prune while live memory stayed flat. Inside
``pooled_cpu_memory()`` CPU tensors of at least ``min_bytes`` are carved first-fit from one reserved
address range (free ranges coalesced), so every batch reuses the same pages, and ``trim()`` gives the
free pages back to the system.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from ..native import extension

log = logging.getLogger(__name__)

MIN_BYTES = 1 << 16  # smaller requests stay with torch's own allocator


@contextlib.contextmanager
def pooled_cpu_memory(min_bytes: int = MIN_BYTES) -> Iterator[Callable[[], int]]:
    """Route CPU allocations of ``min_bytes`` or more through the pool; yields ``trim`` (give free
    pages back, returns the bytes released). Without the compiled extension it changes nothing."""
    if not extension.available():
        yield lambda: 0
        return
    ext = extension.load()
    if ext.pool_stats()["pooling"]:  # nested: the outer block owns the pool
        yield ext.pool_trim
        return
    if not ext.pool_install(min_bytes):
        log.warning("another CPU allocator is installed; the memory pool is not used")
        yield lambda: 0
        return
    try:
        yield ext.pool_trim
    finally:
        ext.pool_uninstall()


def pool_stats() -> dict[str, int]:
    """Live bytes, their peak and the peak span of the pool since pooling began; whether it is pooling."""
    return dict(extension.load().pool_stats()) if extension.available() else {}
