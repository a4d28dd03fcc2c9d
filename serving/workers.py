"""A service as several worker processes sharing its ports, each a whole pipeline (both fronts,
the DAG, its own model).

Why: Paddle Inference holds the GIL for the whole predictor call, so one process predicts on one
core at a time and its fronts stall meanwhile; process ops instead pay a multiprocessing-Manager
round trip per channel operation (docs/benchmarks.md). The gRPC port is shared with SO_REUSEPORT
(the kernel spreads connections, as upstream's build_dag_each_worker does), the HTTP port through
a SharedListener (serving.balance: the least busy worker accepts) or, without one, like gRPC.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from model.process import pin_worker
from serving.balance import SharedListener, WorkerSlot

log = logging.getLogger(__name__)

# serve_one(its slot of the shared HTTP listener or None, the folder the workers share metrics in)
ServeOne = Callable[[WorkerSlot | None, Path], int]


def serve_workers(workers: int, serve_one: ServeOne, http_listener: SharedListener | None,
                  pin_cores: bool) -> int:
    """Run `serve_one` in `workers` forked processes; with `pin_cores` each runs on its own share
    of the cores (model.process.pin_worker). The parent only forwards SIGTERM/SIGINT and waits.
    When a worker exits on its own, the parent stops the others and fails, so the supervisor
    restarts the whole service."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="serving-metrics-"))
    children, parent = [], os.getpid()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            slot = http_listener.slot(index) if http_listener else None
            _run_worker(index, workers, parent, pin_cores,
                        functools.partial(serve_one, slot, metrics_dir))
        children.append(pid)
    if http_listener is not None:
        http_listener.socket.close()  # the workers' copies stay: the port closes with theirs
    try:
        return _wait_for(children)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_worker(index: int, workers: int, parent: int, pin_cores: bool,
                serve: Callable[[], int]) -> NoReturn:
    """In the forked child: never return into the parent's code, whatever happens."""
    status = 1
    try:
        _die_with(parent)
        if pin_cores and (share := pin_worker(index, workers)) is not None:
            log.info("worker %d of %d runs on cores %s", index + 1, workers, sorted(share))
        status = serve()
    except BaseException:
        log.exception("worker %d of %d failed", index + 1, workers)
    finally:
        logging.shutdown()
        os._exit(status)


def _wait_for(children: list[int]) -> int:
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.remove(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping.is_set():
            log.error("worker %d exited (status %d); stopping the other workers", pid, code)
            forward(signal.SIGTERM, None)
            code = code or 1
        status = status or code
    return status


def _die_with(parent: int) -> None:
    """SIGTERM this worker when the parent dies, even by SIGKILL: an orphaned worker would keep
    answering on the shared ports next to a restarted service (Linux prctl PR_SET_PDEATHSIG)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
