"""Process-wide settings a worker applies before it loads its model. The service's workers and
in-process runs (the benchmark's limit) both call `configure_process`, so the limit runs the
model exactly as a service worker does. What each setting buys, measured: docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Sequence

from model.preprocess import use_image_threads
from model.settings import Settings

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): bigger blocks,
# such as a 25-megapixel image, still come from mmap and go back at once.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
# A negative threshold turns off the executor's eager deletion of intermediate tensors.
_NO_EAGER_DELETION = {"FLAGS_eager_delete_tensor_gb": -1.0}


def configure_process(settings: Settings) -> None:
    use_image_threads(settings.image_threads)
    if settings.reuse_freed_memory and reuse_freed_memory():
        log.info("heap: freed buffers stay mapped for reuse (runtime reuse_freed_memory)")
    if not settings.free_intermediate_tensors:
        keep_intermediate_tensors()
        log.info("paddle: intermediate tensors are kept for the next call "
                 "(runtime free_intermediate_tensors=false)")


def reuse_freed_memory() -> bool:
    """Fixes glibc's mmap and trim thresholds for this process and the workers it forks later.

    Why: a request allocates several multi-megabyte arrays (the decoded image, its RGB copy, the
    resized and normalized float32 tensors). glibc serves blocks above its mmap threshold with
    mmap/munmap and trims the heap top back to the kernel past its trim threshold. In a
    single-threaded loop the dynamic threshold soon rises above these sizes; in a service, where
    the HTTP, gRPC and pipeline threads allocate from their own arenas, every request paid fresh
    page faults for those pages. Fixed thresholds keep them mapped for reuse; the price is that
    the process keeps its peak heap. Returns False (and logs why) where the C library has no
    mallopt, e.g. musl."""
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


def keep_intermediate_tensors() -> None:
    """Turns off Paddle's garbage collection of intermediate tensors in this process; each
    predictor keeps them and the next call reuses them.

    Why: for a PIR program on CPU, Paddle's executor hands every tensor it can free to a
    one-thread work queue that spin-waits for more work (InterpreterCoreEventGarbageCollector,
    allow_spinning), and each of its wake-ups preempts the predicting thread on the worker's
    core. Kept instead, the tensors cost some resident memory per worker. Legacy programs never
    used that thread. Must run before the predictor is built."""
    import paddle

    paddle.set_flags(_NO_EAGER_DELETION)


def core_share(index: int, workers: int, cores: Sequence[int]) -> set[int] | None:
    """The cores of worker `index` of `workers`: every workers-th of `cores`, from its index.
    None (no pinning) for a single worker, or for more workers than cores, where equal shares
    do not exist and the scheduler balances better than a fixed uneven split."""
    if workers < 2 or workers > len(cores):
        return None
    return set(cores[index::workers])


def pin_worker(index: int, workers: int) -> set[int] | None:
    """Restricts every thread of this process to its core share (runtime pin_workers), so the
    scheduler stops moving the predicting thread, and its model's weights, between cores.
    Returns the share (None: left as is). Threads started later inherit it."""
    share = core_share(index, workers, sorted(os.sched_getaffinity(0)))
    if share is not None:
        for thread in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(thread), share)
    return share
