"""The service's HTTP/1.1 front, in each worker process next to its gRPC front. It replaces Paddle
Serving's Go gateway, which binds every interface, adds a gRPC hop, answers every error with
HTTP 200 and has no health endpoint.

Routes: POST /<service>/prediction (upstream's JSON body), GET /health/live, GET /health/ready,
GET /metrics (Prometheus text). Another method on a route is 405, another path 404.

Connections: each open connection is served by a thread of a bounded pool (max_connections per
worker process; chosen over an event loop by measurement, docs/serving.md). Every read has a
deadline: an idle keep-alive connection is closed after keepalive_timeout_s, a request whose
head (body) has not fully arrived header_timeout_s (body_timeout_s) after it started is answered
408 and closed. A connection past the pool's size is served by a few overflow threads for one
request, with a one-second head deadline: health and metrics are answered (a supervisor's check
is never refused), a prediction gets 503 OVERLOADED; with those busy too it is closed at once.
A body over max_body_bytes is refused from its Content-Length, before any of it is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from model import errors
from model.errors import BY_NAME
from serving.admission import ServiceState
from serving.balance import BACKLOG, WorkerSlot
from serving.http_wire import (
    CONTINUE,
    END_OF_HEAD,
    MAX_HEAD_BYTES,
    Head,
    HttpError,
    parse_head,
    render_response,
)
from serving.metrics import CONTENT_TYPE
from serving.pipeline import Request, Response, error_response

log = logging.getLogger(__name__)
OVERFLOW_THREADS = 8  # serve connections past max_connections, one request each
OVERFLOW_HEAD_S = 1.0  # how long such a connection may take to send its request head
LINGER_S = 2.0  # after refusing a body, read (and drop) what the client still sends this long
SEND_TIMEOUT_S = 30.0  # a client that does not read its answer for this long is dropped
ACCEPT_POLL_S = 0.5  # how often the accept loop checks that it should stop
_READ_CHUNK = 1 << 16
GET_ROUTES = ("/health/live", "/health/ready", "/metrics")


class TimedOut(Exception):
    """A read deadline passed."""


class Connection:
    """One client socket, read against deadlines (monotonic seconds)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()  # received, not consumed yet

    def _receive(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(_READ_CHUNK)
        except TimeoutError:
            raise TimedOut from None

    def read_head(self, idle_deadline: float, head_timeout: float) -> Head | None:
        """The next request head; None when the client closed, or stayed idle past
        idle_deadline, before sending a byte of it. TimedOut once its first byte is older
        than head_timeout; HttpError when it is malformed."""
        started = time.monotonic() if self.buffer else None
        while (end := self.buffer.find(END_OF_HEAD)) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes")
            try:
                chunk = self._receive(idle_deadline if started is None
                                      else started + head_timeout)
            except TimedOut:
                if started is None:
                    return None
                raise
            if not chunk:
                if self.buffer:
                    raise HttpError(400, "the connection closed in the middle of a request head")
                return None
            if started is None:
                started = time.monotonic()
            self.buffer += chunk
        head = bytes(self.buffer[:end])
        del self.buffer[:end + len(END_OF_HEAD)]
        return parse_head(head)

    def read_body(self, length: int, deadline: float) -> bytes:
        while len(self.buffer) < length:
            chunk = self._receive(deadline)
            if not chunk:
                raise HttpError(400, f"the connection closed after {len(self.buffer)} of "
                                f"{length} body bytes")
            self.buffer += chunk
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def send(self, data: bytes) -> None:
        self.sock.settimeout(SEND_TIMEOUT_S)
        self.sock.sendall(data)

    def linger(self) -> None:
        """Before closing on an unread body: stop sending, then drop what the client still
        sends for LINGER_S, so that a client writing its whole body before reading gets the
        answer instead of a connection reset."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while self._receive(deadline):
                pass


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    close: bool = False
    unread_body: bool = False  # the request's body was refused unread: linger before closing
    extra: dict[str, str] | None = None


def _json(status: int, body: dict[str, Any], **options: Any) -> Reply:
    return Reply(status, json.dumps(body).encode(), **options)


class HttpServer:
    def __init__(self, address: tuple[str, int], state: ServiceState, slot: WorkerSlot | None):
        """slot: this worker's part of a listening socket shared by the workers (serve_workers);
        without one the server binds its own (SO_REUSEPORT: worker processes may share it)."""
        self.state = state
        self.settings = state.settings
        self.slot = slot
        if slot is not None:
            self.socket = slot.socket
            slot.start()
        else:
            self.socket = _listen(address)
        self._pool = futures.ThreadPoolExecutor(self.settings.max_connections, "http")
        self._overflow = futures.ThreadPoolExecutor(OVERFLOW_THREADS, "http-overflow")
        self._lock = threading.Lock()
        self.open_connections = self.overflow_connections = 0
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # --- accepting -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                while not self._stop.is_set():
                    if selector.select(ACCEPT_POLL_S):
                        self._accept()
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        if self.slot is not None:
            self.slot.wait_for_turn()
        try:
            sock, _ = self.socket.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            return
        except OSError as error:  # e.g. out of file descriptors: keep serving the open ones
            self.state.count_failure("http-accept")
            log.warning("%s: accept failed: %s", self.state.service, error)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per answer
        with self._lock:
            self.state.http_connections += 1
            if self.open_connections < self.settings.max_connections:
                self.open_connections += 1
                overflow = False
            elif self.overflow_connections < OVERFLOW_THREADS:
                self.overflow_connections += 1
                overflow = True
            else:
                self.state.http_connections -= 1
                self.state.metrics.refused_connections.inc("no_thread")
                sock.close()
                return
        if self.slot is not None:
            self.slot.opened()
        (self._overflow if overflow else self._pool).submit(self._serve, sock, overflow)

    def shutdown(self) -> None:
        """Stop accepting (open connections are served on until the drain closes them)."""
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()

    # --- one connection --------------------------------------------------------------------------

    def _serve(self, sock: socket.socket, overflow: bool) -> None:
        connection = Connection(sock)
        try:
            if overflow:
                self._serve_overflow(connection)
            else:
                while self._serve_one(connection):
                    pass
        except Exception:  # a bug here must not take the pool thread's next connection down
            self.state.count_failure("http-connection")
            log.exception("%s: HTTP connection failed", self.state.service)
        finally:
            self.state.forget_client(connection)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self.state.http_connections -= 1
                if overflow:
                    self.overflow_connections -= 1
                else:
                    self.open_connections -= 1
            if self.slot is not None:
                self.slot.closed()

    def _serve_one(self, connection: Connection) -> bool:
        """Read and answer one request; whether the connection stays open."""
        settings = self.settings
        try:
            head = connection.read_head(time.monotonic() + settings.keepalive_timeout_s,
                                        settings.header_timeout_s)
        except TimedOut:
            return self._refuse(connection, 408, "request_timeout", "the request head did not "
                                f"arrive within {settings.header_timeout_s} s")
        except HttpError as error:
            return self._refuse(connection, error.status, "bad_request", str(error))
        if head is None:
            return False
        with self.state.responding() as allowed:
            if not allowed:
                return False
            try:
                reply = self._handle(head, connection)
            except TimedOut:
                return self._refuse(connection, 408, "request_timeout", "the request body did "
                                    f"not arrive within {settings.body_timeout_s} s")
            except HttpError as error:
                return self._refuse(connection, error.status, "bad_request", str(error))
            return self._send(connection, reply, head.keep_alive)

    def _serve_overflow(self, connection: Connection) -> None:
        """A connection past max_connections: one request, health and metrics only."""
        head = None
        with contextlib.suppress(TimedOut, HttpError):
            head = connection.read_head(time.monotonic() + OVERFLOW_HEAD_S, OVERFLOW_HEAD_S)
        if head is not None and head.method == "GET" and head.path in GET_ROUTES:
            with self.state.responding() as allowed:
                if allowed:
                    self._send(connection, self._get(head.path), keep_alive=False)
            return
        self.state.metrics.refused_connections.inc("max_connections")
        limit = self.settings.max_connections
        reply = self._prediction_reply(error_response(
            "OVERLOADED", f"{limit} connections open on this worker process (the limit is "
            f"{limit}); retry later"), close=True)
        reply.unread_body = True
        self._send(connection, reply, keep_alive=False)

    def _refuse(self, connection: Connection, status: int, reason: str, message: str) -> bool:
        self.state.metrics.refused_connections.inc(reason)
        with contextlib.suppress(OSError):
            connection.send(render_response(status, json.dumps({"error": message}).encode(),
                                            "application/json", close=True))
        return False

    def _send(self, connection: Connection, reply: Reply, keep_alive: bool) -> bool:
        close = reply.close or not keep_alive or self.state.draining
        try:
            connection.send(render_response(reply.status, reply.body, reply.content_type,
                                            close, reply.extra))
        except OSError:  # the client went away, or stopped reading its answer
            return False
        if reply.unread_body:
            connection.linger()
        return not close

    # --- routes ----------------------------------------------------------------------------------

    def _handle(self, head: Head, connection: Connection) -> Reply:
        prediction = head.path.count("/") == 2 and head.path.endswith("/prediction")
        if head.path in GET_ROUTES:
            if head.method == "GET":
                return self._get(head.path)
            return self._not_allowed(head, "GET")
        if prediction:
            if head.method == "POST":
                return self._post(head, connection)
            return self._not_allowed(head, "POST")
        return _json(404, {"error": f"no route {head.method} {head.path}; " + self._routes()},
                     close=head.method == "POST")

    def _routes(self) -> str:
        return (f"routes: POST /{self.state.service}/prediction, GET /health/live, "
                "/health/ready, /metrics")

    def _not_allowed(self, head: Head, allowed: str) -> Reply:
        return _json(405, {"error": f"{head.method} is not allowed on {head.path}; use "
                           f"{allowed} ({self._routes()})"}, extra={"Allow": allowed},
                     close=head.content_length() is not None)

    def _get(self, path: str) -> Reply:
        state = self.state
        if path == "/health/live":
            return _json(200, {"status": "alive"})
        if path == "/health/ready":
            reason = state.check_ready()
            return _json(200 if reason is None else 503,
                         {"status": "ready" if reason is None else "not ready",
                          "reason": reason or ""})
        return Reply(200, state.render_metrics().encode(), CONTENT_TYPE)

    def _post(self, head: Head, connection: Connection) -> Reply:
        state, settings = self.state, self.settings
        length = head.content_length()
        if length is None:
            return self._prediction_reply(error_response(
                "BAD_REQUEST", "a Content-Length header is required (chunked bodies are not "
                "supported)"), close=True)
        if length > settings.max_body_bytes:
            reply = self._prediction_reply(error_response(
                "BODY_TOO_LARGE", f"body of {length} bytes; the limit is "
                f"{settings.max_body_bytes} bytes"), close=True)
            reply.unread_body = True
            return reply
        if head.expects_continue:
            connection.send(CONTINUE)
        body = connection.read_body(length, time.monotonic() + settings.body_timeout_s)
        state.note_client(connection)
        service = head.path.split("/")[1]
        try:
            request = _parse_body(body, service)
        except ValueError as error:
            return self._prediction_reply(error_response("BAD_REQUEST", str(error)))
        return self._prediction_reply(state.predict(request, "http"), request.logid)

    def _prediction_reply(self, reply: Response, logid: int = 0, close: bool = False) -> Reply:
        body = {"err_no": reply.err_no, "err_msg": reply.err_msg, "key": list(reply.key),
                "value": list(reply.value), "tensors": [], "logid": logid}
        close = close or reply.err_no == BY_NAME["DRAINING"].err_no
        return _json(errors.http_status(reply.err_no), body, close=close)


def _listen(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _parse_body(body: bytes, service: str) -> Request:
    """The upstream gateway's JSON body -> the pipeline Request; ValueError says what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"the body is not JSON ({error}); expected "
                         '{"key": [...], "value": [...]}') from None
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object {"key": [...], "value": [...]}')
    keys, values = data.get("key"), data.get("value")
    if not (isinstance(keys, list) and isinstance(values, list)):
        raise ValueError('"key" and "value" must both be lists of strings')
    if len(keys) != len(values):
        raise ValueError(f'"key" has {len(keys)} items but "value" has {len(values)}')
    if not all(isinstance(item, str) for item in keys + values):
        raise ValueError('"key" and "value" items must be strings')
    if data.get("tensors"):
        raise ValueError('"tensors" are not accepted by image services; send base64 images '
                         'in "value"')
    logid = data.get("logid", 0)
    if not isinstance(logid, int) or isinstance(logid, bool) or not 0 <= logid < 2**64:
        raise ValueError('"logid" must be an integer from 0 to 2**64 - 1')
    return Request(key=keys, value=values, name=service, logid=logid)


def open_http(state: ServiceState, port: int, slot: WorkerSlot | None) -> HttpServer:
    """Listening, served by a thread of its own."""
    server = HttpServer((state.settings.host, port), state, slot)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
