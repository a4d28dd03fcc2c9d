"""Closed-loop load generators that cost the server's cores as little as possible.

Each of `concurrency` clients sends its next request as soon as the previous answer arrived.
HTTP: one thread multiplexes every keep-alive connection over raw non-blocking sockets with
`selectors`, writing pre-built request bytes and parsing only the status line, the length and the
error number. gRPC: one thread per client calling a generic unary-unary method with identity
serializers on pre-serialized messages, one connection per client. The generator's own CPU time
(all threads of this process) is measured, since it shares the cores with the server.
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

RPC_METHOD = "/baidu.paddle_serving.pipeline_serving.PipelineService/inference"
_HTTP_OK_BODY = re.compile(rb'"err_no"\s*:\s*0\b')
_RECV_BYTES = 1 << 16


@dataclass
class LoadResult:
    """What one closed-loop run measured inside its timed window."""

    transport: str
    concurrency: int
    seconds: float  # length of the timed window
    latencies_ms: list[float] = field(default_factory=list)  # completed in the window
    errors: int = 0
    first_error: str = ""
    loadgen_cpu_s: float = 0.0  # CPU seconds of this process during the window

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return round(float(np.percentile(self.latencies_ms, q)), 2)

    def summary(self) -> dict[str, float | int | str | None]:
        return {"transport": self.transport, "concurrency": self.concurrency,
                "requests": len(self.latencies_ms), "errors": self.errors,
                "first_error": self.first_error, "seconds": round(self.seconds, 3),
                "throughput": round(self.throughput, 2),
                "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
                "p99_ms": self.percentile(99),
                "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
                "loadgen_cpu_ms_per_request": round(
                    1000 * self.loadgen_cpu_s / max(1, len(self.latencies_ms)), 3)}


class _Window:
    """Warm-up, then a timed window; completions are recorded only inside the window."""

    def __init__(self, warmup_s: float, duration_s: float):
        self.start = time.perf_counter() + warmup_s
        self.end = self.start + duration_s
        self._cpu_at_start: float | None = None
        self.cpu_s = 0.0

    def tick(self, now: float) -> None:
        """Call often: takes the CPU readings at the window's edges."""
        if self._cpu_at_start is None and now >= self.start:
            self._cpu_at_start = time.process_time()
        elif self._cpu_at_start is not None and not self.cpu_s and now >= self.end:
            self.cpu_s = time.process_time() - self._cpu_at_start

    def inside(self, finished: float) -> bool:
        return self.start <= finished < self.end


# --- HTTP ----------------------------------------------------------------------------------------


class _HttpConnection:
    """One keep-alive connection: send a prepared request, parse one response, repeat."""

    def __init__(self, address: tuple[str, int], requests: Sequence[bytes], offset: int):
        self.address = address
        self.requests = requests
        self.next_index = offset
        self.sock = self._connect()
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.outgoing = memoryview(b"")

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def reconnect(self) -> None:
        self.sock.close()
        self.sock = self._connect()
        self.buffer.clear()

    def start_request(self, now: float) -> None:
        self.outgoing = memoryview(self.requests[self.next_index % len(self.requests)])
        self.next_index += 1
        self.sent_at = now
        self.buffer.clear()

    def write(self) -> bool:
        """Writes what the socket takes; True once the request is fully sent."""
        sent = self.sock.send(self.outgoing)
        self.outgoing = self.outgoing[sent:]
        return not self.outgoing

    def read(self) -> tuple[int, bytes] | None:
        """Reads what arrived; (status, body) once a whole response is in, else None.
        Raises ConnectionError when the server closed the connection."""
        chunk = self.sock.recv(_RECV_BYTES)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk
        return parse_http_response(self.buffer)


def parse_http_response(buffer: bytearray | bytes) -> tuple[int, bytes] | None:
    """(status, body) if `buffer` holds one complete HTTP/1.1 response (Content-Length or
    chunked), else None."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).decode("latin1").lower()
    status = int(head.split(" ", 2)[1])
    body_start = head_end + 4
    length = re.search(r"\ncontent-length:\s*(\d+)", head)
    if length:
        end = body_start + int(length.group(1))
        return (status, bytes(buffer[body_start:end])) if len(buffer) >= end else None
    if "transfer-encoding: chunked" in head:
        return _parse_chunked(status, bytes(buffer[body_start:]))
    raise ValueError("HTTP response with neither Content-Length nor chunked encoding")


def _parse_chunked(status: int, data: bytes) -> tuple[int, bytes] | None:
    body, position = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(data[position:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            return (status, bytes(body)) if data.find(b"\r\n", start) >= 0 else None
        if len(data) < start + size + 2:
            return None
        body += data[start:start + size]
        position = start + size + 2


def run_http(host: str, port: int, requests: Sequence[bytes], concurrency: int,
             duration_s: float, warmup_s: float) -> LoadResult:
    result = LoadResult("http", concurrency, duration_s)
    window = _Window(warmup_s, duration_s)
    selector = selectors.DefaultSelector()
    connections = [_HttpConnection((host, port), requests, offset=i) for i in range(concurrency)]
    now = time.perf_counter()
    for connection in connections:
        connection.start_request(now)
        selector.register(connection.sock, selectors.EVENT_WRITE, connection)
    try:
        while now < window.end:
            for key, events in selector.select(timeout=0.05):
                _on_http_event(selector, key.data, events, window, result)
            now = time.perf_counter()
            window.tick(now)
    finally:
        selector.close()
        for connection in connections:
            connection.sock.close()
    window.tick(time.perf_counter())
    result.loadgen_cpu_s = window.cpu_s
    return result


def _on_http_event(selector: selectors.BaseSelector, connection: _HttpConnection, events: int,
                   window: _Window, result: LoadResult) -> None:
    try:
        if events & selectors.EVENT_WRITE:
            if connection.write():
                selector.modify(connection.sock, selectors.EVENT_READ, connection)
            return
        response = connection.read()
    except OSError as error:  # includes ConnectionError: reconnect and resend
        _record_error(result, f"{type(error).__name__}: {error}")
        selector.unregister(connection.sock)
        connection.reconnect()
        connection.start_request(time.perf_counter())
        selector.register(connection.sock, selectors.EVENT_WRITE, connection)
        return
    if response is None:
        return
    finished = time.perf_counter()
    status, body = response
    if status != 200 or not _HTTP_OK_BODY.search(body[:200]):
        _record_error(result, f"HTTP {status}: {body[:200]!r}")
    elif window.inside(finished):
        result.latencies_ms.append((finished - connection.sent_at) * 1000)
    connection.start_request(finished)
    selector.modify(connection.sock, selectors.EVENT_WRITE, connection)


def _record_error(result: LoadResult, message: str) -> None:
    result.errors += 1
    result.first_error = result.first_error or message


# --- gRPC ----------------------------------------------------------------------------------------


def run_rpc(host: str, port: int, messages: Sequence[bytes], concurrency: int,
            duration_s: float, warmup_s: float,
            is_ok: Callable[[bytes], tuple[bool, str]]) -> LoadResult:
    """`is_ok(response bytes) -> (ok, error text)` checks the pipeline's err_no."""
    import grpc

    result = LoadResult("rpc", concurrency, duration_s)
    window = _Window(warmup_s, duration_s)
    lock = threading.Lock()
    # One connection per client, as separate clients have (a server may spread connections
    # over worker processes); a local subchannel pool keeps channels from sharing one.
    channels = [grpc.insecure_channel(f"{host}:{port}", options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20)]) for _ in range(concurrency)]

    def client(offset: int) -> None:
        call = channels[offset].unary_unary(RPC_METHOD)  # no serializers: bytes in and out
        index = offset
        while time.perf_counter() < window.end:
            started = time.perf_counter()
            try:
                reply = call(messages[index % len(messages)], timeout=60)
                ok, error = is_ok(reply)
            except grpc.RpcError as failure:
                ok, error = False, f"gRPC {failure.code()}: {failure.details()}"
            finished = time.perf_counter()
            index += 1
            with lock:
                if not ok:
                    _record_error(result, error)
                elif window.inside(finished):
                    result.latencies_ms.append((finished - started) * 1000)

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    while time.perf_counter() < window.end:
        window.tick(time.perf_counter())
        time.sleep(0.01)
    window.tick(time.perf_counter())
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    result.loadgen_cpu_s = window.cpu_s
    return result
