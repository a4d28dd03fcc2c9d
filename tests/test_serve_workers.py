"""build_dag_each_worker with the project's front (serving.workers.serve_workers): worker_num whole
services in forked processes sharing both ports. Connections must reach every worker, a worker
that dies must take the service down (so the supervisor restarts it), workers must not outlive
a killed parent, stop must leave nothing."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_helpers import Services, save_tiny_models

from bench.procstats import group_pids
from model.process import core_share
from serving.control.manager import free_ports, group_alive
from serving.protocol import request_items

pytestmark = pytest.mark.service
WORKERS = 2
CONNECTIONS = 24  # all on one worker by chance: 2 ** -23
ROUNDS = 8


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    save_tiny_models(folder)
    return folder


@pytest.fixture
def service(models_dir: Path, tmp_path: Path) -> Services:
    """A fresh service per test, without the supervisor (it would restart what a test kills)."""
    http_port, rpc_port = free_ports(2)
    running = Services(models_dir, tmp_path / "build", {"peach": (http_port, rpc_port)})
    with running.started("peach", "--no-supervisor", "--runtime=build_dag_each_worker=true",
                         f"--runtime=worker_num={WORKERS}", "--runtime=thread_num=1"):
        yield running


def _jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def _workers(service: Services) -> list[int]:
    (record,) = service.records()
    return [pid for pid in group_pids(record["pid"]) if pid != record["pid"]]


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while we look
            count += os.readlink(fd).startswith("socket:")
    return count


def _answered_connection(service: Services) -> http.client.HTTPConnection:
    """A keep-alive connection that has had one prediction answered (so it is accepted)."""
    items = request_items([_jpeg()])
    body = json.dumps({"key": list(items), "value": list(items.values())}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", service.ports["peach"][0], timeout=30)
    connection.request("POST", "/peach/prediction", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and b'"err_no": 0' in response.read()
    return connection


def test_every_worker_accepts_connections_and_answers(service: Services) -> None:
    workers = _workers(service)
    assert len(workers) == WORKERS
    before = {pid: _sockets(pid) for pid in workers}
    connections = []
    try:
        for _ in range(CONNECTIONS):
            connections.append(_answered_connection(service))
        gained = {pid: _sockets(pid) - before[pid] for pid in workers}
        assert all(count > 0 for count in gained.values()), gained
    finally:
        for connection in connections:
            connection.close()


def test_each_new_connection_goes_to_the_least_busy_worker(service: Services) -> None:
    """SO_REUSEPORT hashes connections to workers blind to load: two clients would share one
    worker half of the time (all ROUNDS even by chance: 2 ** -ROUNDS)."""
    workers = _workers(service)
    idle = {pid: _sockets(pid) for pid in workers}
    for _ in range(ROUNDS):
        connections = []
        try:
            for _ in range(2 * WORKERS):
                connections.append(_answered_connection(service))
            gained = [_sockets(pid) - idle[pid] for pid in workers]
            assert gained == [2] * WORKERS, gained
        finally:
            for connection in connections:
                connection.close()
        deadline = time.monotonic() + 10  # the workers close their ends once they read EOF
        while {pid: _sockets(pid) for pid in workers} != idle and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {pid: _sockets(pid) for pid in workers} == idle, "connections left open"


def test_a_dead_worker_takes_the_service_down(service: Services) -> None:
    (record,) = service.records()
    os.kill(_workers(service)[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while group_alive(record["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(record["pid"]), "the other worker and the parent kept running"


def test_workers_do_not_outlive_a_killed_parent(service: Services) -> None:
    workers = _workers(service)
    assert len(workers) == WORKERS
    os.kill(service.records()[0]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in workers) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(not Path(f"/proc/{pid}").exists() or _state(pid) == "Z" for pid in workers)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_each_worker_runs_on_its_own_share_of_the_cores(service: Services) -> None:
    """runtime pin_workers (default on): every thread of each worker on its share."""
    cores = sorted(os.sched_getaffinity(0))
    expected = sorted(sorted(core_share(index, WORKERS, cores) or cores)
                      for index in range(WORKERS))
    found = []
    for pid in _workers(service):
        affinities = set()
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                affinities.add(frozenset(os.sched_getaffinity(int(thread))))
        assert len(affinities) == 1, f"worker {pid}: threads on different cores {affinities}"
        found.append(sorted(affinities.pop()))
    assert sorted(found) == expected
