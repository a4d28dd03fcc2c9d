"""Admission of a service run as several worker processes (the default), with its model held
still: the op processes are stopped (SIGSTOP), so every admitted request stays in flight as long
as the test wants, as behind a long predictor call. max_inflight holds per service whichever
worker a connection reaches, over HTTP and gRPC alike (OVERLOADED, never a queue); a worker
whose op died answers NOT_READY; on stop, a keep-alive connection's next request gets 503
DRAINING and the service gives up on what it cannot finish after drain_timeout_s."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from paddle_serving_server.pipeline.proto import pipeline_service_pb2, pipeline_service_pb2_grpc
from service_helpers import Services, save_tiny_models

from bench.procstats import group_pids
from bench.soak import synthetic_jpeg
from serving.control.manager import free_ports, group_alive
from serving.protocol import request_items

pytestmark = pytest.mark.service
MAX_INFLIGHT = 2
DRAIN_TIMEOUT_S = 3
ATTEMPTS = 8  # new connections each: all on one worker by chance 2 ** -7
RUNTIME = {"build_dag_each_worker": "true", "worker_num": 2, "is_thread_op": "false",
           "max_inflight": MAX_INFLIGHT, "drain_timeout_s": DRAIN_TIMEOUT_S}
ITEMS = request_items([synthetic_jpeg(64, 64, 2)])
BODY = json.dumps({"key": list(ITEMS), "value": list(ITEMS.values())})
WAIT_S = 60  # deadline of every wait for the service to reach a state


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    save_tiny_models(folder)
    return folder


@pytest.fixture
def service(models_dir: Path, tmp_path: Path) -> Iterator[Services]:
    running = Services(models_dir, tmp_path / "build", {"peach": tuple(free_ports(2))})
    try:
        with running.started("peach", "--no-supervisor",
                             *(f"--runtime={key}={value}" for key, value in RUNTIME.items())):
            yield running
    finally:
        _continue_all(running)  # whatever a test left stopped


def _record(service: Services) -> dict:
    (record,) = service.records()
    return record


def _workers(service: Services) -> list[int]:
    return [pid for pid in group_pids(_record(service)["pid"]) if _ppid(pid) ==
            _record(service)["pid"]]


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return -1


def _ops(service: Services) -> dict[int, list[int]]:
    """worker pid -> its child processes (the op process, multiprocessing's helpers)."""
    pids = group_pids(_record(service)["pid"])
    return {worker: [pid for pid in pids if _ppid(pid) == worker] for worker in _workers(service)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def _stop_ops(service: Services) -> None:
    for children in _ops(service).values():
        for pid in children:
            os.kill(pid, signal.SIGSTOP)


def _continue_all(service: Services) -> None:
    """SIGCONT to the whole process group: a worker that exited left its op processes to
    init."""
    for record in service.records():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record["pid"], signal.SIGCONT)


def _post(service: Services, timeout: float = 10) -> tuple[int, dict]:
    """One prediction on a new connection: (HTTP status, answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", service.ports["peach"][0],
                                            timeout=timeout)
    try:
        connection.request("POST", "/peach/prediction", BODY)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _rpc(service: Services, timeout: float = 10) -> pipeline_service_pb2.Response:
    """One prediction on a new channel."""
    with grpc.insecure_channel(f"127.0.0.1:{service.ports['peach'][1]}") as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        return stub.inference(pipeline_service_pb2.Request(
            key=list(ITEMS), value=list(ITEMS.values()), name="peach"), timeout=timeout)


def _inflight(service: Services) -> float:
    """serving_inflight_requests of the whole service, as a scrape reports it."""
    connection = http.client.HTTPConnection("127.0.0.1", service.ports["peach"][0], timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return float(re.search(r"^serving_inflight_requests (\S+)$", text, re.M).group(1))


def _wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {WAIT_S} s: {what}"
        time.sleep(0.1)


def _held_requests(service: Services, count: int) -> tuple[list[threading.Thread], list]:
    """`count` predictions admitted and held in flight (the ops are stopped)."""
    answers: list = []

    def send() -> None:
        try:
            answers.append(_post(service, WAIT_S))
        except OSError as error:  # the service went away without answering
            answers.append((0, {"err_no": None, "err_msg": str(error)}))

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    # the workers publish their metrics once a second; a scrape merges them
    _wait_until(lambda: _inflight(service) == count, f"{count} requests in flight")
    return threads, answers


def test_max_inflight_holds_per_service_across_workers_over_http_and_grpc(
        service: Services) -> None:
    _stop_ops(service)
    threads, answers = _held_requests(service, MAX_INFLIGHT)
    for _ in range(ATTEMPTS):  # whichever worker each new connection reaches
        status, answer = _post(service)
        assert (status, answer["err_no"]) == (503, 3004), answer
        assert f"limit {MAX_INFLIGHT}" in answer["err_msg"]
        assert _rpc(service).err_no == 3004
    with socket.create_connection(("127.0.0.1", service.ports["peach"][0]), timeout=10) as sock:
        sock.sendall(b"POST /peach/prediction HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000000\r\n\r\n")  # no body: refused before it
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 ") and b'"err_no": 3004' in answer, answer
    _continue_all(service)
    for thread in threads:
        thread.join(WAIT_S)
    assert [(status, answer["err_no"]) for status, answer in answers] == [(200, 0)] * MAX_INFLIGHT


def test_a_worker_whose_op_died_answers_not_ready(service: Services) -> None:
    """Its op process and the channels' Manager process both killed: before the Manager was
    watched, a request to that worker waited forever."""
    worker, children = next(iter(_ops(service).items()))
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: all(_state(pid) in ("Z", "gone") for pid in children), "their deaths")
    codes = set()
    for _ in range(4 * ATTEMPTS):
        status, answer = _post(service)
        codes.add((status, answer["err_no"]))
        if answer["err_no"] == 3003:
            assert "pipeline worker(s) died" in answer["err_msg"]
    assert codes == {(200, 0), (503, 3003)}, f"worker {worker}'s op killed: {codes}"


def test_stop_answers_draining_then_gives_up_after_the_drain_timeout(
        service: Services) -> None:
    record = _record(service)
    keep_alive = http.client.HTTPConnection("127.0.0.1", service.ports["peach"][0], timeout=10)
    keep_alive.request("GET", "/health/live")
    assert keep_alive.getresponse().read()  # accepted by a worker, kept open
    _stop_ops(service)
    threads, answers = _held_requests(service, 1)
    log = Path(record["log"])
    stopped = time.monotonic()
    os.kill(record["pid"], signal.SIGTERM)
    _wait_until(lambda: log.read_text().count("stopping: refusing new requests") == 2,
                "both workers draining")
    keep_alive.request("POST", "/peach/prediction", BODY)
    response = keep_alive.getresponse()
    answer = json.loads(response.read())
    assert (response.status, answer["err_no"]) == (503, 3001)
    assert response.getheader("Connection") == "close"
    _wait_until(lambda: "1 abandoned" in log.read_text(), "the drain timeout")
    gave_up = time.monotonic() - stopped
    assert re.search(r"stopped: \d+ requests accepted, \d+ answered, 1 abandoned",
                     log.read_text())
    _continue_all(service)  # a stopped op process would outlive SIGTERM
    _wait_until(lambda: not group_alive(record["pid"]), "the service's exit")
    for thread in threads:
        thread.join(WAIT_S)
    print(f"gave up on the held request {gave_up:.1f} s after SIGTERM")
    assert DRAIN_TIMEOUT_S <= gave_up < DRAIN_TIMEOUT_S + 10
    assert answers[0][1]["err_no"] is None  # closed unanswered: the client knows it was lost
