"""The supervisor `python -m serving start` leaves running (`python -m serving supervise`): it
polls every service's readiness once a second and restarts a service whose process died or that
stayed unready for FAILURES_BEFORE_RESTART polls, with the ports and runtime it had. A service's
readiness check answers within about a second whatever its load (serving/admission.py: from
recent successes, or a background probe that counts as ready while it waits behind the requests
in flight, for up to PROBE_TIMEOUT_S), so HEALTH_TIMEOUT_S leaves it ample room and a busy
service is never restarted for being busy. Repeated restarts back off (1 s, 2 s, ... 30 s); the
backoff starts again from 1 s once a service stayed ready for STABLE_S. It runs in its
own session (not the services', whose process groups a stop kills), records its pid in
build/run/supervisor.pid, and exits on SIGTERM without touching the services (`python -m serving
stop` stops it first, then them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving.control.layout import Layout, Ports
from serving.control.manager import (
    Record,
    launch,
    process_alive,
    readiness,
    running_records,
    stop_record,
)

log = logging.getLogger(__name__)
POLL_S = 1.0
FAILURES_BEFORE_RESTART = 3  # consecutive unready polls (a dead process restarts at once)
START_GRACE_S = 300.0  # a restarted service may be unready this long while it loads
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # ready this long after a restart: the next restart backs off from 1 s again


def pid_file(layout: Layout) -> Path:
    return layout.build_dir / "run" / "supervisor.pid"


def supervisor_pid(layout: Layout) -> int | None:
    """The running supervisor's pid, or None."""
    try:
        pid = int(pid_file(layout).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


@dataclass
class Watched:
    record: Record
    process: subprocess.Popen | None = None  # ours once we restarted it (reaped by poll())
    failures: int = 0
    restarts: int = 0
    starting_until: float = 0.0  # monotonic deadline of the current start-up
    next_restart: float = 0.0
    ready_since: float | None = None  # monotonic, since the last unready poll or restart

    def alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        return process_alive(self.record.pid)

    def note_ready(self, now: float) -> None:
        if self.starting_until:
            log.info("[%s] ready again (restart %d)", self.record.name, self.restarts)
        self.failures, self.starting_until = 0, 0.0
        if self.ready_since is None:
            self.ready_since = now
        if self.restarts and now - self.ready_since >= STABLE_S:
            log.info("[%s] stable for %.0f s: restart backoff reset", self.record.name,
                     now - self.ready_since)
            self.restarts = 0

    def note_unready(self) -> None:
        self.ready_since = None

    def note_restart(self, now: float) -> None:
        self.restarts += 1
        self.failures = 0
        self.ready_since = None
        self.starting_until = now + START_GRACE_S
        self.next_restart = now + self.backoff()

    def backoff(self) -> float:
        """Seconds before the next restart may follow the last one."""
        return min(MAX_BACKOFF_S, 2.0 ** min(self.restarts - 1, 5))


def supervise(layout: Layout, stop: threading.Event, poll: float = POLL_S) -> None:
    """Watch every service with a record under build/run until `stop` is set."""
    watched = {record.name: Watched(record) for record in running_records(layout)}
    log.info("watching %s (every %.1f s)", ", ".join(sorted(watched)) or "nothing", poll)
    failures = 0
    while not stop.wait(poll):
        for item in watched.values():
            try:
                check(layout, item)
            except Exception:  # one service's trouble must not end the watch over the others
                failures += 1
                log.exception("[%s] check failed (%d failures of the supervisor so far)",
                              item.record.name, failures)


def check(layout: Layout, item: Watched) -> None:
    now = time.monotonic()
    name = item.record.name
    if not item.alive():
        problem = f"process {item.record.pid} is gone"
    else:
        problem = readiness(item.record)
        if problem is None:
            item.note_ready(now)
            return
        item.note_unready()
        if now < item.starting_until:
            return  # still loading after a restart
        item.failures += 1
        log.warning("[%s] not ready (%d/%d): %s", name, item.failures,
                    FAILURES_BEFORE_RESTART, problem)
        if item.failures < FAILURES_BEFORE_RESTART:
            return
    if now >= item.next_restart:
        restart(layout, item, problem)


def restart(layout: Layout, item: Watched, problem: str) -> None:
    old = item.record
    log.warning("[%s] restarting: %s", old.name, problem)
    with contextlib.suppress(Exception):  # the broken instance must not block the restart
        stop_record(layout, old, grace=5.0, kill=True)
    if item.process is not None:
        item.process.poll()  # reap
    spec = layout.spec(old.name)
    try:
        item.record, item.process = launch(layout, spec, Ports(old.http_port, old.rpc_port),
                                           old.runtime)
    except Exception as error:  # e.g. a port still held: try again after the backoff
        log.error("[%s] restart failed: %s", old.name, error)
        item.record.save(layout.pid_file(old.name))
    item.note_restart(time.monotonic())
    log.info("[%s] started again as pid %d (log %s)", old.name, item.record.pid, item.record.log)


def run_supervisor(layout: Layout) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    path = pid_file(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        supervise(layout, stop)
    finally:
        path.unlink(missing_ok=True)
    log.info("supervisor stopped (services left running)")
    return 0
