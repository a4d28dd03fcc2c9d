"""glibc malloc settings for the service process: reuse freed image buffers instead of returning
them to the kernel after every request.

Why: a request allocates several multi-megabyte arrays (the decoded image, its RGB copy, the
resized and normalized float32 tensors). glibc serves blocks above its mmap threshold with
mmap/munmap, and it trims the heap top back to the kernel past its trim threshold. In a
single-threaded loop the dynamic threshold soon rises above these sizes and nothing is returned;
in the service, where the HTTP, gRPC and pipeline threads allocate from their own arenas, every
request paid ~700 fresh page faults for a traffic-light scene (`make bench` reports them per
request beside the in-process loop's), about as much CPU as the whole serving layer. Fixed
thresholds keep those pages mapped for reuse; the price is that the process keeps its peak heap
(reported as RSS by `make bench`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): bigger blocks,
# such as a 25-megapixel image, still come from mmap and go back at once.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def reuse_freed_memory() -> bool:
    """Fixes glibc's mmap and trim thresholds for this process and the workers it forks later.
    Returns False (and logs why) where the C library has no mallopt, e.g. musl."""
    libc_name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None) if libc_name else None
    if mallopt is None:
        log.warning("no mallopt in the C library (%s): heap settings left as they are", libc_name)
        return False
    applied = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
               and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    if not applied:
        log.warning("mallopt refused the heap settings: freed buffers go back to the kernel")
    return applied
