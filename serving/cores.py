"""Which cores each worker process may run on (runtime `pin_workers`).

Why: with two workers on two cores and nothing pinned, the scheduler keeps moving each worker's
op thread to the other core as the HTTP, gRPC and pipeline threads wake, and the predictor's
weights and activations are fetched again into that core's caches. With each worker on its own
share, the paired rounds of `make bench` (8 HTTP clients against the in-process limit, whose
workers are pinned the same way) went from 0.793x to 0.864x for peach and from 0.827x to 0.857x
for traffic_light (docs/benchmarks.md, item 10).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def core_share(index: int, workers: int, cores: Sequence[int]) -> set[int] | None:
    """The cores of worker `index` of `workers`: every workers-th of `cores`, from its index.
    None (no pinning) for a single worker, or for more workers than cores, where equal shares
    do not exist and the scheduler balances better than a fixed uneven split."""
    if workers < 2 or workers > len(cores):
        return None
    return set(cores[index::workers])


def pin_worker(index: int, workers: int) -> set[int] | None:
    """Restricts every thread of this process to its core share; returns the share (None: left
    as is). Threads started later inherit it."""
    share = core_share(index, workers, sorted(os.sched_getaffinity(0)))
    if share is not None:
        for thread in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(thread), share)
    return share
