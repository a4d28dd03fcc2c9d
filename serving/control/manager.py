"""Start, stop and inspect the background services (`python -m serving start|stop|status`).

Each service is `python -m serving run --model NAME` in its own session, hence its own process
group, which holds its worker and op processes: whatever is left of the group after a stop is
killed with it. Its working dir is build/serving/<name>/ (the pipeline writes PipelineServingLogs/
into it), its output goes to build/logs/<name>.log, and a JSON record in build/run/<name>.json
says what to stop. A supervisor (serving.control.supervisor) watches the services' readiness and
restarts dead ones. Stopping sends SIGTERM to the service process only (it drains its in-flight
requests, then stops its workers), and SIGKILLs the group only if it lingers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from model.settings import Settings, parse_pairs, resolve
from model.spec import ModelSpec
from serving.control.layout import Layout, Ports
from serving.protocol import get_json, health_url, http_url, post_http, probe_image, request_items

LOG_TAIL_LINES = 40
READY_POLL_S = 0.5
# A readiness check answers within about a second whatever the load (serving/admission.py
# PROBE_WAIT_S); more than this means the service's HTTP front itself does not answer.
HEALTH_TIMEOUT_S = 5.0
STOP_GRACE_S = Settings().drain_timeout_s + 5.0  # the service's drain, plus exit time


class ServingError(RuntimeError):
    """A service did not start or stop; the message says why and where to look."""


@dataclass(frozen=True)
class Record:
    name: str
    service: str
    pid: int  # also the process group id (own session)
    http_port: int
    rpc_port: int
    log: str
    started_at: float
    runtime: tuple[str, ...] = ()  # the --runtime pairs it was started with (for restarts)
    host: str = "127.0.0.1"  # where to reach it: the interface it binds (every one: loopback)

    @property
    def url(self) -> str:
        return http_url(self.host, self.http_port, self.service)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Record:
        saved = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}  # records of older versions may hold more
        return cls(**{k: v for k, v in saved.items() if k in known - {"runtime"}},
                   runtime=tuple(saved.get("runtime", ())))


def process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z"


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group (an exited child of ours stays a
    zombie until reaped, and os.killpg(pgid, 0) still succeeds on it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


def free_ports(count: int) -> list[int]:
    """Ports nobody binds now, reserved for this process (tests and benchmarks start services on
    them). They lie below the kernel's ephemeral range (ip_local_port_range), which it hands to
    outgoing connections, so none is taken by a client between this call and the service's bind;
    and a lock file per port, held until this process exits, keeps another process that calls
    free_ports from picking the same one."""
    low = ephemeral_port_range()[0]
    chosen: list[int] = []
    for port in random.sample(range(low // 2, low), low - low // 2):
        if len(chosen) == count:
            break
        if _bindable(port) and _reserve(port):
            chosen.append(port)
    if len(chosen) < count:
        raise ServingError(f"fewer than {count} free ports below {low}")
    return chosen


def ephemeral_port_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_RESERVATIONS = Path(tempfile.gettempdir()) / "paddle-vision-serving-ports"
_held: list[Any] = []  # this process's reservations: open, locked files


def _reserve(port: int) -> bool:
    _RESERVATIONS.mkdir(exist_ok=True)
    lock = (_RESERVATIONS / f"{port}.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        lock.close()
        return False
    _held.append(lock)
    return True


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def reach_host(bind_host: str) -> str:
    """The address a client on this machine reaches a service binding `bind_host` at."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0") else bind_host


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return f"(no log at {path})"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def predict_once(record: Record, timeout: float = 10.0) -> tuple[dict, float]:
    """One real prediction over HTTP: (response, seconds)."""
    started = time.perf_counter()
    response = post_http(record.url, request_items([probe_image()]), timeout)
    return response, time.perf_counter() - started


def readiness(record: Record, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when the service is ready (GET /health/ready answers 200), else why not."""
    try:
        status, body = get_json(health_url(record.host, record.http_port), timeout)
    except OSError as error:
        return f"not answering ({error})"
    return None if status == 200 else f"HTTP {status}: {body.get('reason', body)}"


# --- start ---------------------------------------------------------------------------------------


def launch(layout: Layout, spec: ModelSpec, ports: Ports, runtime: Iterable[str]
           ) -> tuple[Record, subprocess.Popen]:
    runtime = tuple(runtime)
    host = reach_host(resolve(spec.runtime, parse_pairs(runtime)).host)
    for port in (ports.http, ports.rpc):
        if port_listening(port, host):
            raise ServingError(f"[{spec.name}] port {port} is already in use; stop what holds "
                               "it (`python -m serving status`) or pick others with --port")
    log = layout.log_file(spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    workdir = layout.serving_dir(spec.name)
    command = [sys.executable, "-m", "serving", "run", "--model", spec.name,
               "--models-dir", str(layout.models_dir), "--build-dir", str(layout.build_dir),
               "--port", f"{spec.name}={ports.http}:{ports.rpc}",
               *(f"--runtime={pair}" for pair in runtime)]
    env = {**os.environ, "SERVING_LOG_PATH": str(workdir),
           "PYTHONUNBUFFERED": "1"}
    with log.open("w", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    record = Record(name=spec.name, service=spec.service.name, pid=process.pid,
                    http_port=ports.http, rpc_port=ports.rpc, log=str(log),
                    started_at=time.time(), runtime=runtime, host=host)
    record.save(layout.pid_file(spec.name))
    return record, process


def wait_ready(record: Record, process: subprocess.Popen | None, deadline: float) -> float:
    """Poll readiness until it holds, then time one real prediction (seconds)."""
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        exited = process.poll() if process is not None else None
        if exited is not None or not process_alive(record.pid):
            raise ServingError(f"[{record.name}] exited during start-up (status {exited}); "
                               f"last lines of {record.log}:\n{log_tail(Path(record.log))}")
        reason = readiness(record, timeout=min(30.0, deadline - time.monotonic() + 0.1))
        if reason is None:
            response, seconds = predict_once(record, timeout=30.0)
            if response.get("err_no") == 0:
                return seconds
            reason = f"err_no {response.get('err_no')}: {response.get('err_msg')}"
        last_error = reason
        time.sleep(READY_POLL_S)
    raise ServingError(f"[{record.name}] not ready before the timeout ({last_error}); last "
                       f"lines of {record.log}:\n{log_tail(Path(record.log))}")


# --- stop / status -------------------------------------------------------------------------------


def running_records(layout: Layout) -> list[Record]:
    return [Record.load(path) for path in sorted((layout.build_dir / "run").glob("*.json"))]


def stop_record(layout: Layout, record: Record, grace: float = STOP_GRACE_S,
                kill: bool = False) -> str:
    """Stop a service and forget it. Gracefully: SIGTERM to the service process alone (it drains,
    then stops its op processes; a SIGTERM to the whole group would kill those mid-request), then
    SIGKILL whatever is left of the group after `grace` seconds. kill=True: SIGKILL at once."""
    how = "was not running"
    if group_alive(record.pid):
        how = "killed" if kill else "stopped"
        if not kill:
            _signal_process(record.pid, signal.SIGTERM)
        if kill or not _wait(lambda: not group_alive(record.pid), grace):
            if not kill:
                how = f"killed (no exit {grace:.0f} s after SIGTERM)"
            _signal_group(record.pid, signal.SIGKILL)
            _wait(lambda: not group_alive(record.pid), grace)
    ports_free = _wait(lambda: not (port_listening(record.http_port, record.host)
                                    or port_listening(record.rpc_port, record.host)), grace)
    layout.pid_file(record.name).unlink(missing_ok=True)
    if group_alive(record.pid) or not ports_free:
        raise ServingError(f"[{record.name}] still alive or ports {record.http_port}/"
                           f"{record.rpc_port} still bound after stopping")
    return f"[{record.name}] {how} (process group {record.pid})"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _signal_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait(condition, timeout: float, poll: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def describe(record: Record) -> str:
    """One status line: alive? ready? endpoints."""
    if not process_alive(record.pid):
        return f"{record.name}: DEAD (record left by a crash; `python -m serving stop` clears it)"
    reason = readiness(record, timeout=5.0)
    health = "ready" if reason is None else f"NOT READY: {reason}"
    return "\n".join([f"{record.name}: running, pid {record.pid}, {health}",
                      f"    http {record.url}", f"    rpc  {record.host}:{record.rpc_port}",
                      f"    health {health_url(record.host, record.http_port)}, metrics "
                      f"http://{record.host}:{record.http_port}/metrics",
                      f"    log  {record.log}"])
