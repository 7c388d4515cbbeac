"""glibc's malloc told to keep freed tensor memory for the next step instead of handing it back to the kernel.

A training step allocates and frees the same activations, a few MiB each, every step. By default glibc serves
such a block with a fresh mmap() (above its mmap threshold) or gives the freed top of the heap back (above its
trim threshold), so the next step faults every page in again, zero-filled by the kernel. With an mmap threshold of
32 MiB (glibc's largest) and a trim threshold of 64 MiB the same step takes no page faults. Blocks above 32 MiB
still come from mmap and go back at once, so a process keeps at most the trim threshold of freed memory it does
not use; a higher trim threshold trades peak memory for little speed (docs/benchmarks.md has the figures).

Other allocators (jemalloc, tcmalloc, mimalloc preloaded) and settings the user made (``MALLOC_*`` or
``glibc.malloc`` tunables) are left alone, as is any libc that is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_applied = False


def user_chose_malloc(environ=os.environ) -> bool:
    """True when the environment already decides how malloc behaves."""
    if any(key.startswith("MALLOC_") for key in environ):
        return True
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(name in environ.get("LD_PRELOAD", "") for name in OTHER_ALLOCATORS)


def keep_freed_memory() -> bool:
    """Set the thresholds once per process (forked DataLoader workers inherit them); True when they are set."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or user_chose_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl has no mallopt thresholds
    except (OSError, AttributeError):
        return False
    # mmap first: setting either value switches off glibc's own threshold adjustment
    _applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD,
                                                                                      TRIM_THRESHOLD) == 1
    return _applied
