"""The supervisor and the background threads it relies on (issue 19): restarts back off and the
backoff starts over once a service stayed ready; a busy service (its model held still behind a
request in flight) stays ready and is never restarted; the worker's metrics publisher survives
and counts its failures."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Services, save_tiny_models

from bench.procstats import group_pids
from bench.soak import synthetic_jpeg
from model.settings import Settings
from serving.admission import FRESH_S, ServiceState
from serving.control.manager import HEALTH_TIMEOUT_S, Record, free_ports
from serving.control.supervisor import (
    FAILURES_BEFORE_RESTART,
    MAX_BACKOFF_S,
    POLL_S,
    STABLE_S,
    Watched,
)
from serving.protocol import get_json, health_url, request_items

WAIT_S = 60


def _watched() -> Watched:
    return Watched(Record("peach", "peach", os.getpid(), 1, 2, "log", 0.0))


def test_restarts_back_off_and_the_backoff_starts_over_after_a_stable_period() -> None:
    item = _watched()
    delays = []
    for now in (0.0, 10.0, 20.0, 30.0):  # a service that keeps failing
        item.note_restart(now)
        delays.append(item.next_restart - now)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    item.note_ready(100.0)
    item.note_ready(100.0 + STABLE_S / 2)
    item.note_restart(100.0 + STABLE_S / 2 + 1)  # not stable long enough: backoff goes on
    assert item.backoff() == 16.0
    item.note_ready(200.0)
    item.note_unready()  # an unready poll restarts the stable period
    item.note_ready(200.0 + STABLE_S / 2)
    item.note_ready(200.0 + STABLE_S)
    assert item.restarts == 5
    item.note_ready(200.0 + STABLE_S / 2 + STABLE_S)  # ready STABLE_S in a row
    item.note_restart(1000.0)
    assert item.next_restart - 1000.0 == 1.0
    for _ in range(10):
        item.note_restart(2000.0)
    assert item.backoff() == MAX_BACKOFF_S


def test_the_metrics_publisher_survives_and_counts_its_failures(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    state = ServiceState("peach", Settings(), folder)
    own = folder / f"{os.getpid()}.json"
    deadline = time.monotonic() + WAIT_S

    def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    wait_for(own.exists, "first publication")
    shutil.rmtree(folder)  # every publication fails now
    wait_for(lambda: state.metrics.thread_failures.value("metrics") >= 2, "failures counted")
    assert any(thread.name == "metrics" for thread in threading.enumerate())
    folder.mkdir()
    wait_for(own.exists, "publishing again once the folder is back")
    assert "serving_thread_failures_total{thread=\"metrics\"}" in state.render_metrics()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Services]:
    """One worker, its model in an op process of its own (process ops), under the supervisor."""
    models_dir = tmp_path / "models"
    save_tiny_models(models_dir)
    running = Services(models_dir, tmp_path / "build", {"peach": tuple(free_ports(2))})
    runtime = {"build_dag_each_worker": "false", "is_thread_op": "false"}
    with running.started("peach", *(f"--runtime={k}={v}" for k, v in runtime.items())):
        yield running
        os.killpg(running.records()[0]["pid"], signal.SIGCONT)


@pytest.mark.service
def test_a_busy_service_is_never_restarted_for_being_busy(supervised: Services) -> None:
    """The model answers nothing for longer than the supervisor used to allow (a request in
    flight behind a long predictor call, here its op process stopped): readiness stays 200 and
    answers fast, the supervisor restarts nothing, and the request is answered afterwards. Before,
    /health/ready ran a probe behind that call for up to 30 s, the supervisor's 2 s timeout failed
    twice and it killed the service with its request in flight."""
    (record,) = supervised.records()
    http_port = supervised.ports["peach"][0]
    op_process = max((pid for pid in group_pids(record["pid"]) if pid != record["pid"]),
                     key=_rss)  # the process holding the model
    os.kill(op_process, signal.SIGSTOP)
    items = request_items([synthetic_jpeg(64, 64, 3)])
    answer: list = []
    held = threading.Thread(target=lambda: answer.append(_post(http_port, items)))
    held.start()
    # Long enough for the old supervisor to kill it: FRESH_S without a success, then its
    # failing polls (2 s timeout, 1 s apart).
    window = FRESH_S + FAILURES_BEFORE_RESTART * (POLL_S + HEALTH_TIMEOUT_S) + 2
    started = time.monotonic()
    slowest = 0.0
    while time.monotonic() - started < window:
        asked = time.monotonic()
        status, body = get_json(health_url("127.0.0.1", http_port), HEALTH_TIMEOUT_S)
        slowest = max(slowest, time.monotonic() - asked)
        assert (status, body["status"]) == (200, "ready"), body
        time.sleep(POLL_S)
    os.kill(op_process, signal.SIGCONT)
    held.join(WAIT_S)
    log = (supervised.build_dir / "logs" / "supervisor.log").read_text()
    restarts = len(re.findall(r"restarting", log))
    print(f"model held {window:.0f} s: {restarts} restarts; slowest readiness {slowest:.2f} s")
    assert restarts == 0, log
    assert supervised.records()[0]["pid"] == record["pid"]
    assert answer and answer[0]["err_no"] == 0
    assert slowest < HEALTH_TIMEOUT_S / 2


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0


def _post(port: int, items: dict[str, str]) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S * 2)
    try:
        connection.request("POST", "/peach/prediction",
                           json.dumps({"key": list(items), "value": list(items.values())}))
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()
