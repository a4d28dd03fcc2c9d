"""The HTTP front against hostile and careless clients (issue 19): bodies refused from their
Content-Length before they are sent, slow heads and bodies answered 408 and closed, idle
keep-alive connections closed, open connections (and so threads) capped with a clear refusal past
the cap while health checks are still answered, 405 for a wrong method, logid echoed."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Services, metric_value, save_tiny_models, scrape_metrics

from bench.soak import synthetic_jpeg
from serving.control.manager import free_ports
from serving.http_front import OVERFLOW_THREADS
from serving.protocol import request_items

pytestmark = pytest.mark.service
TIMEOUT_S = 2  # header, body and keep-alive timeouts of the service under test
MAX_CONNECTIONS = 8
RUNTIME = {"build_dag_each_worker": "false", "header_timeout_s": TIMEOUT_S,
           "body_timeout_s": TIMEOUT_S, "keepalive_timeout_s": TIMEOUT_S,
           "max_connections": MAX_CONNECTIONS, "max_body_bytes": 1_000_000}
CLIENT_TIMEOUT_S = 20  # a client gives up only long after every server-side deadline


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    models_dir = tmp_path_factory.mktemp("models")
    save_tiny_models(models_dir)
    running = Services(models_dir, tmp_path_factory.mktemp("build"),
                       {"peach": tuple(free_ports(2))})
    with running.started("peach", "--no-supervisor",
                         *(f"--runtime={key}={value}" for key, value in RUNTIME.items())):
        yield running


def _connect(service: Services) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.ports["peach"][0]), timeout=10)
    sock.settimeout(CLIENT_TIMEOUT_S)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: (status, lower-case headers, body); raises if the connection closes
    first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response; got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _threads(service: Services) -> int:
    (record,) = service.records()
    status = Path(f"/proc/{record['pid']}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def _open_connections(service: Services) -> float | None:
    """The worker's serving_http_connections gauge (this scrape's connection included), or None
    when the scrape itself is refused because every thread is still busy."""
    try:
        samples = scrape_metrics(service.ports["peach"][0])
    except (OSError, http.client.HTTPException):
        return None
    return metric_value(samples, "serving_http_connections")


def _wait_until_released(service: Services) -> None:
    """Until the worker has closed every connection but the scrape's: a client's close reaches
    its thread a moment later, and till then a new connection may find every thread busy."""
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while (open_now := _open_connections(service)) != 1:
        assert time.monotonic() < deadline, f"{open_now} connections still open"
        time.sleep(0.05)


def _prediction_body() -> bytes:
    items = request_items([synthetic_jpeg(64, 64, 1)])
    return json.dumps({"key": list(items), "value": list(items.values()), "logid": 42}).encode()


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def test_an_oversized_body_is_refused_from_its_content_length_before_it_is_sent(
        service: Services) -> None:
    with _connect(service) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /peach/prediction HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100000000\r\n\r\n")  # and no body at all
        status, headers, body = _read_response(sock)
        seconds = time.monotonic() - started
        assert (status, json.loads(body)["err_no"]) == (413, 5009)
        assert "body of 100000000 bytes; the limit is 1000000 bytes" in json.loads(body)["err_msg"]
        assert headers["connection"] == "close"
        assert _closed_by_server(sock)
    assert seconds < TIMEOUT_S  # answered at once, not after waiting for a body


def test_a_client_that_sends_its_whole_oversized_body_first_still_gets_the_413(
        service: Services) -> None:
    with _connect(service) as sock:
        sock.sendall(_post("/peach/prediction", b"x" * 1_500_000))
        status, _, body = _read_response(sock)
    assert (status, json.loads(body)["err_no"]) == (413, 5009)


def test_a_slow_body_is_answered_408_and_its_connection_closed(service: Services) -> None:
    """The issue's reproduction: Content-Length 1000000 announced, 2 bytes sent."""
    with _connect(service) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /peach/prediction HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000000\r\n\r\n{}")
        status, headers, body = _read_response(sock)
        held = time.monotonic() - started
        assert status == 408 and headers["connection"] == "close"
        assert f"body did not arrive within {TIMEOUT_S} s" in json.loads(body)["error"]
        assert _closed_by_server(sock)
    print(f"a 2-byte body of 1000000 announced held its connection {held:.1f} s")
    assert TIMEOUT_S <= held < TIMEOUT_S + 5


def test_a_slow_head_is_answered_408_and_its_connection_closed(service: Services) -> None:
    with _connect(service) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
        status, _, body = _read_response(sock)
        assert status == 408 and "head did not arrive" in json.loads(body)["error"]
        assert _closed_by_server(sock)
    assert time.monotonic() - started < TIMEOUT_S + 5


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(service: Services) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        answered = time.monotonic()
        assert _closed_by_server(sock)  # without a byte of a new request
        idle = time.monotonic() - answered
    assert TIMEOUT_S - 0.5 <= idle < TIMEOUT_S + 5


def test_open_connections_are_capped_and_health_is_answered_past_the_cap(
        service: Services) -> None:
    """Half-sent requests each held a thread for 300 s, without a cap (600 connections made 600
    threads). Now the pool holds max_connections; past it, overflow threads answer health checks
    and refuse predictions; past those, connections are closed."""
    threads_before = _threads(service)
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):  # the pool, busy with half-sent heads
            held.append(_connect(service))
            held[-1].sendall(b"POST /peach/prediction HTTP/1.1\r\n")
        with _connect(service) as health:
            health.sendall(b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(health)[0] == 200
        with _connect(service) as refused:
            refused.sendall(_post("/peach/prediction", _prediction_body()))
            status, _, body = _read_response(refused)
            answer = json.loads(body)
            assert (status, answer["err_no"]) == (503, 3004)
            assert f"(the limit is {MAX_CONNECTIONS})" in answer["err_msg"]
        for _ in range(5 * MAX_CONNECTIONS):  # 48 connections in all
            held.append(_connect(service))
            held[-1].sendall(b"POST /peach/prediction HTTP/1.1\r\n")
        grown = _threads(service) - threads_before
        print(f"{len(held)} half-sent connections: {grown} more threads")
        assert grown <= MAX_CONNECTIONS + OVERFLOW_THREADS
    finally:
        for sock in held:
            sock.close()
        _wait_until_released(service)


def test_a_wrong_method_is_405_with_the_allowed_one(service: Services) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /peach/prediction HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = _read_response(sock)
        assert (status, headers["allow"]) == (405, "POST")
        sock.sendall(_post("/health/ready", b"{}"))
        status, headers, _ = _read_response(sock)
        assert (status, headers["allow"]) == (405, "GET")


def test_logid_is_echoed_and_keep_alive_serves_several_requests(service: Services) -> None:
    with _connect(service) as sock:
        for _ in range(3):
            sock.sendall(_post("/peach/prediction", _prediction_body()))
            status, headers, body = _read_response(sock)
            answer = json.loads(body)
            assert (status, answer["err_no"], answer["logid"]) == (200, 0, 42)
            assert "connection" not in headers


def test_expect_100_continue_gets_the_go_ahead_before_the_body(service: Services) -> None:
    body = _prediction_body()
    with _connect(service) as sock:
        sock.sendall(f"POST /peach/prediction HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     f"{len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = _read_response(sock)
    assert (status, json.loads(answer)["err_no"]) == (200, 0)
