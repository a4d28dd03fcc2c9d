"""The service's HTTP/1.1 front (keep-alive, one thread per connection), in the service process
next to its gRPC front. It replaces Paddle Serving's Go gateway, which binds every interface, adds
a gRPC hop, answers every error with HTTP 200 and has no health endpoint.

Routes: POST /<service>/prediction (upstream's JSON body), GET /health/live, GET /health/ready,
GET /metrics (Prometheus text).
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from model import errors
from model.errors import BY_NAME
from serving.admission import ServiceState
from serving.balance import BACKLOG, WorkerSlot
from serving.metrics import CONTENT_TYPE
from serving.pipeline import Request, Response, error_response

DISCARD_LIMIT = 64 << 20  # refused bodies larger than this are not read: the connection closes


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = True  # worker processes share the port (serve_workers without a slot)
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], state: ServiceState, slot: WorkerSlot | None):
        """slot: this worker's part of a listening socket shared by the workers (serve_workers);
        without one the server binds its own."""
        self.state = state
        self.slot = slot
        super().__init__(address, _HttpHandler, bind_and_activate=slot is None)
        if slot is not None:
            self.socket.close()
            self.socket = slot.socket
            slot.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.slot is not None:
            self.slot.wait_for_turn()
        return super().get_request()

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.slot is not None:
            self.slot.opened()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:  # after the connection's last request
        super().shutdown_request(request)
        if self.slot is not None:
            self.slot.closed()


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # A buffered wfile: headers and body leave in one write, flushed by _send (two writes cost
    # an extra wake-up of the client per response).
    wbufsize = 1 << 16
    # Bodies larger than the buffer still leave in two writes: without TCP_NODELAY, Nagle
    # holds the second until the client's delayed ACK, tens of milliseconds.
    disable_nagle_algorithm = True
    timeout = 300  # seconds: an idle keep-alive connection (and its thread) is closed after it
    server: HttpServer
    server_version = "paddle-vision-serving"

    def log_message(self, format: str, *args: Any) -> None:  # access log: off
        pass

    def do_GET(self) -> None:
        with self.server.state.responding() as allowed:
            if allowed:
                self._get()
            else:
                self.close_connection = True

    def do_POST(self) -> None:
        self.server.state.note_client(self)
        with self.server.state.responding() as allowed:
            if allowed:
                self._post()
            else:
                self.close_connection = True

    def finish(self) -> None:  # the connection is closing
        self.server.state.forget_client(self)
        super().finish()

    def _get(self) -> None:
        state = self.server.state
        if self.path == "/health/live":
            self._send_json(200, {"status": "alive"})
        elif self.path == "/health/ready":
            reason = state.check_ready()
            self._send_json(200 if reason is None else 503,
                            {"status": "ready" if reason is None else "not ready",
                             "reason": reason or ""})
        elif self.path == "/metrics":
            self._send(200, state.render_metrics().encode(), CONTENT_TYPE)
        else:
            self._not_found()

    def _post(self) -> None:
        state = self.server.state
        service, _, tail = self.path.lstrip("/").partition("/")
        length = self.headers.get("Content-Length")
        if tail != "prediction":
            self.close_connection = True  # the body is left unread
            self._not_found()
            return
        if length is None or not length.isdigit():
            self.close_connection = True
            self._reply(error_response("BAD_REQUEST", "a Content-Length header is required "
                                       "(chunked bodies are not supported)"))
            return
        if int(length) > state.settings.max_body_bytes:
            self.close_connection = True
            self._discard(int(length))
            self._reply(error_response("BODY_TOO_LARGE", f"body of {length} bytes; the limit "
                                       f"is {state.settings.max_body_bytes} bytes"))
            return
        body = self.rfile.read(int(length))
        try:
            request = _parse_body(body, service)
        except ValueError as error:
            self._reply(error_response("BAD_REQUEST", str(error)))
            return
        if state.draining:
            self.close_connection = True
        self._reply(state.predict(request, "http"), request.logid)

    def _discard(self, length: int) -> None:
        """Read (without keeping) a refused body up to DISCARD_LIMIT, so a client that sends it
        all before reading gets the 413 instead of a connection reset."""
        left = min(length, DISCARD_LIMIT)
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)

    def _not_found(self) -> None:
        self._send_json(404, {"error": f"no route {self.command} {self.path}; routes: POST "
                              f"/{self.server.state.service}/prediction, GET /health/live, "
                              "/health/ready, /metrics"})

    def _reply(self, reply: Response, logid: int = 0) -> None:
        if reply.err_no == BY_NAME["DRAINING"].err_no:
            self.close_connection = True
        body = {"err_no": reply.err_no, "err_msg": reply.err_msg, "key": list(reply.key),
                "value": list(reply.value), "tensors": [], "logid": logid}
        self._send_json(errors.http_status(reply.err_no), body)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()  # before the request counts as answered: drain waits for that

    def handle_expect_100(self) -> bool:
        super().handle_expect_100()
        self.wfile.flush()  # the client sends the body only once it has this
        return True


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
    if not isinstance(logid, int) or logid < 0:
        raise ValueError('"logid" must be a non-negative integer')
    return Request(key=keys, value=values, name=service, logid=logid)


def open_http(state: ServiceState, port: int, slot: WorkerSlot | None) -> HttpServer:
    """Listening, served by a thread of its own."""
    server = HttpServer((state.settings.host, port), state, slot)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
