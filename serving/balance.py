"""One HTTP listening socket shared by a service's worker processes, each new connection accepted
by the worker holding the fewest open connections.

Why: with SO_REUSEPORT (upstream's way for build_dag_each_worker, still used for gRPC) the kernel
hashes every connection to a worker, blind to load: two keep-alive clients land on the same
worker half of the time and get one core between them (docs/benchmarks.md). Here every worker
waits on the same socket, and a worker with more open connections than another ready worker lets
that one accept first.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time

NOT_READY = 1 << 30  # a worker's count until it accepts: never the least busy
# How long a busier worker leaves a pending connection to a less busy one. That worker may be
# inside predictor.run, which holds the GIL, so its accept thread waits for one prediction.
YIELD_AT_MOST_S = 0.05
_POLL_S = 0.001
BACKLOG = 128


class SharedListener:
    """Created (bound, not yet listening) before the workers fork; each worker then calls
    `slot(index)` for its own view."""

    def __init__(self, address: tuple[str, int], workers: int):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(address)  # binding now: a taken port fails before the models load
        # Non-blocking: every waiting worker wakes for a connection, the losers' accept()
        # raises BlockingIOError, which socketserver ignores.
        self.socket.setblocking(False)
        self.open_connections = multiprocessing.RawArray("i", [NOT_READY] * workers)

    def slot(self, index: int) -> WorkerSlot:
        return WorkerSlot(self, index)


class WorkerSlot:
    """One worker's side: start listening, count its connections, yield to a less busy one."""

    def __init__(self, listener: SharedListener, index: int):
        self.socket = listener.socket
        self._counts = listener.open_connections
        self._index = index
        self._lock = threading.Lock()  # the worker's handler threads update its count

    def start(self) -> None:
        """The model is loaded: take connections (listen() again by a later worker is a no-op)."""
        with self._lock:
            self._counts[self._index] = 0
        self.socket.listen(BACKLOG)

    def wait_for_turn(self) -> None:
        """Before accept(): while another ready worker has fewer connections, give it the
        chance to take this one (at most YIELD_AT_MOST_S, in case it is stuck)."""
        deadline = time.monotonic() + YIELD_AT_MOST_S
        while (self._counts[self._index] > min(self._counts)
               and time.monotonic() < deadline):
            time.sleep(_POLL_S)

    def opened(self) -> None:
        self._add(1)

    def closed(self) -> None:
        self._add(-1)

    def _add(self, change: int) -> None:
        with self._lock:
            self._counts[self._index] += change
