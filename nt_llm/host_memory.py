"""The C library's allocator setting for work on the CPU: keep freed memory in the process.

glibc's malloc maps every block above its largest mmap threshold (32 MiB on 64-bit) freshly from the kernel and
unmaps it when freed, and it gives memory freed at the top of its heap back to the kernel. A training step on
the CPU makes many such blocks (each head's logits chunk and LM-head gradient, parameter gradients, optimizer
temporaries), so every step pays a page fault for each 4 KiB of them again; on the 2-core VM of the
development a 130m NeuroTrails step spent 1.3-14 s of 25-40 s in the kernel this way (``bench/bench_train.py``).
``keep_freed_memory`` turns both off: large blocks come from the heap, freed memory stays for the next step.
The cost is that the process keeps its high-water mark of host memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc serve large blocks from its heap (``M_MMAP_MAX=0``) and never trim it (``M_TRIM_THRESHOLD=-1``).

    Process-wide and idempotent; affects allocations from now on. Returns whether it applied: False, with
    nothing changed, where the C library is not glibc (macOS, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    if not applied:
        logger.warning("glibc refused the mallopt settings: freed host memory is returned to the kernel as usual")
    return applied
