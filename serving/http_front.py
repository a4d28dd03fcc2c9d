"""The service's HTTP/1.1 front, in each worker process next to its gRPC front. It replaces Paddle
Serving's Go gateway, which binds every interface, adds a gRPC hop, answers every error with
HTTP 200 and has no health endpoint.

Routes: POST /<service>/prediction (upstream's JSON body), GET /health/live, GET /health/ready,
GET /metrics (Prometheus text). Another method on a route is 405, another path 404.

Connections: each open connection is served by a thread of a bounded pool (max_connections per
worker process), which also runs its predictions: no hand-off between threads. Every read has a
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
from serving.http_connection import Connection, TimedOut
from serving.http_wire import CONTINUE, Head, HttpError, render_response
from serving.metrics import CONTENT_TYPE
from serving.pipeline import Request, Response, error_response

log = logging.getLogger(__name__)
OVERFLOW_THREADS = 8  # serve connections past max_connections, one request each
OVERFLOW_HEAD_S = 1.0  # how long such a connection may take to send its request head
ACCEPT_POLL_S = 0.5  # how often the accept loop checks that it should stop
GET_ROUTES = ("/health/live", "/health/ready", "/metrics")


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
                    try:
                        if selector.select(ACCEPT_POLL_S):
                            self._accept()
                    except Exception:  # the accept loop must outlive any one failure
                        self.state.count_failure("http-accept")
                        log.exception("%s: HTTP accept loop failed", self.state.service)
                        self._stop.wait(ACCEPT_POLL_S)
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
            self._stop.wait(ACCEPT_POLL_S)  # until some close: the socket stays readable
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
        reply = self._unread(error_response(
            "OVERLOADED", f"{limit} connections open on this worker process (the limit is "
            f"{limit}); retry later"))
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
        """Head checks, then admission, and only then the body: a refused body is never read."""
        state, settings = self.state, self.settings
        length = head.content_length()
        if length is None:
            return self._prediction_reply(error_response(
                "BAD_REQUEST", "a Content-Length header is required (chunked bodies are not "
                "supported)"), close=True)
        if length > settings.max_body_bytes:
            return self._unread(error_response(
                "BODY_TOO_LARGE", f"body of {length} bytes; the limit is "
                f"{settings.max_body_bytes} bytes"))
        started = time.perf_counter()
        service = head.path.split("/")[1]
        with state.admitted(service) as refusal:
            if refusal is not None:
                state.record(refusal, "http", time.perf_counter() - started)
                return self._unread(refusal)
            if head.expects_continue:
                connection.send(CONTINUE)
            body = connection.read_body(length, time.monotonic() + settings.body_timeout_s)
            state.note_client(connection)
            try:
                request = _parse_body(body, service)
            except ValueError as error:
                return self._prediction_reply(error_response("BAD_REQUEST", str(error)))
            reply = state.call(request)
        state.record(reply, "http", time.perf_counter() - started)
        return self._prediction_reply(reply, request.logid)

    def _unread(self, refusal: Response) -> Reply:
        """A refusal answered before the body was read: the connection closes after it."""
        reply = self._prediction_reply(refusal, close=True)
        reply.unread_body = True
        return reply

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
