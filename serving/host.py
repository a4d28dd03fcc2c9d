"""One model's service process with the project's front (runtime http_front=project): the upstream
pipeline (DAG, ops, LocalPredictor) served by our own gRPC server (upstream protocol, so
PipelineClient works unchanged) and our own HTTP/1.1 keep-alive server, both bound to the
configured host (127.0.0.1 by default). It replaces Paddle Serving's Go gateway, which binds every
interface, adds a gRPC hop, answers every error with HTTP 200 and has no health endpoint.

HTTP routes: POST /<service>/prediction (upstream body shape), GET /health/live,
GET /health/ready, GET /metrics (Prometheus text). SIGTERM/SIGINT: stop accepting on both ports,
let in-flight requests finish (at most drain_timeout_s), exit 0.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from paddle_serving_server.pipeline.proto import pipeline_service_pb2, pipeline_service_pb2_grpc

from serving import errors
from serving.balance import BACKLOG, SharedListener, WorkerSlot
from serving.cores import pin_worker
from serving.errors import BY_NAME
from serving.handler import BATCH_KEY, STAGES_KEY
from serving.metrics import (
    CONTENT_TYPE,
    CallbackCounter,
    Counter,
    Gauge,
    Histogram,
    Registry,
    resident_memory_bytes,
)
from serving.options import ServiceOptions
from serving.protocol import probe_image
from serving.service import pipeline_workers

log = logging.getLogger("serving.host")
STAGES = ("decode", "preprocess", "predict", "postprocess")
PROBE_EVERY_S = 10.0  # re-check that the model answers when no request succeeded for this long
PROBE_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 600.0
PUBLISH_EVERY_S = 1.0  # worker processes share their metrics this often (serve_workers)
_WORKER_METRICS_DIR: Path | None = None  # set in worker processes by serve_workers
ACTIVE_CLIENT_S = 1.0  # a connection that sent a request this recently counts as a client
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
DISCARD_LIMIT = 64 << 20  # refused bodies larger than this are not read: the connection closes


def _response(name: str, message: str) -> pipeline_service_pb2.Response:
    return pipeline_service_pb2.Response(err_no=BY_NAME[name].err_no, err_msg=message)


class ServiceMetrics:
    def __init__(self, host: ServiceHost):
        self.registry = Registry()
        add = self.registry.add
        self.requests: Counter = add(Counter(  # type: ignore[assignment]
            "serving_requests_total", "Prediction requests answered, by protocol, outcome "
            "(ok, client_error, rejected, server_error) and err_no.",
            ("service", "protocol", "outcome", "code")))
        self.latency: Histogram = add(Histogram(  # type: ignore[assignment]
            "serving_request_duration_seconds", "Time from receiving a prediction request to "
            "answering it, inside the service.", ("service", "protocol")))
        self.stages: Histogram = add(Histogram(  # type: ignore[assignment]
            "serving_stage_duration_seconds", "Time per pipeline stage of successful requests "
            "(decode, preprocess, predict, postprocess).", ("service", "stage")))
        self.batch_images: Histogram = add(Histogram(  # type: ignore[assignment]
            "serving_batch_images", "Images in the predictor call that served each successful "
            "request (auto-batching merges requests arriving together).", ("service",),
            buckets=BATCH_BUCKETS))
        add(CallbackCounter("serving_requests_accepted_total", "Prediction requests admitted "
                            "to the pipeline (not refused as draining, unready or overloaded).",
                            lambda: host.accepted))
        add(Gauge("serving_inflight_requests", "Prediction requests being processed.",
                  lambda: host.inflight))
        add(Gauge("serving_ready", "1 when the model is loaded and answers, else 0.",
                  lambda: float(host.ready_reason() is None), combine=min))
        add(Gauge("process_resident_memory_bytes", "Resident memory of the service process.",
                  resident_memory_bytes))


class WorkerMetrics:
    """Metrics of a service run as several worker processes sharing its port (serve_workers):
    each worker publishes its raw values to a file every PUBLISH_EVERY_S, and whichever worker
    a scrape reaches merges the others' files into its answer."""

    def __init__(self, folder: Path, metrics: ServiceMetrics):
        self._folder, self._metrics = folder, metrics
        self._own = folder / f"{os.getpid()}.json"
        threading.Thread(target=self._publish_forever, name="metrics", daemon=True).start()

    def publish(self) -> None:
        partial = self._own.with_suffix(".tmp")
        partial.write_text(json.dumps(self._metrics.registry.state()))
        partial.replace(self._own)

    def _publish_forever(self) -> None:
        while True:
            self.publish()
            time.sleep(PUBLISH_EVERY_S)

    def others(self) -> list[dict[str, list]]:
        states = []
        for file in self._folder.glob("*.json"):
            if file != self._own:
                with contextlib.suppress(OSError, ValueError):
                    states.append(json.loads(file.read_text()))
        return states


class ServiceHost:
    """State shared by both fronts: readiness, in-flight accounting, drain, metrics."""

    def __init__(self, service: str, options: ServiceOptions):
        self.service = service
        self.options = options
        self._servicer: Any = None  # the upstream PipelineServicer, once built (attach)
        self._lock = threading.Condition()
        self.inflight = 0
        self.accepted = self.answered = 0
        self.responders = 0  # HTTP requests between reading and fully writing their response
        self.draining = False
        self.closed = False  # drained: no further HTTP response may start
        self._loaded = False
        self._last_success = 0.0
        self._workers: list[Any] = []  # pipeline_workers of the servicer, checked by readiness
        self._probe_lock = threading.Lock()
        self._last_request: dict[Any, float] = {}  # connection -> when it last sent a request
        self.metrics = ServiceMetrics(self)
        self.workers_metrics = (WorkerMetrics(_WORKER_METRICS_DIR, self.metrics)
                                if _WORKER_METRICS_DIR is not None else None)

    def render_metrics(self) -> str:
        others = self.workers_metrics.others() if self.workers_metrics else []
        return self.metrics.registry.render(others)

    # --- readiness -------------------------------------------------------------------------

    def attach(self, servicer: Any) -> None:
        """The built pipeline; readiness watches the threads/processes it needs alive."""
        self._servicer, self._workers = servicer, pipeline_workers(servicer)

    def ready_reason(self) -> str | None:
        """None when ready, else why not (cheap: no prediction)."""
        if self.draining:
            return "draining: the service is stopping"
        if not self._loaded:
            return "starting: the model is loading"
        dead = [getattr(w, "name", str(w)) for w in self._workers if not w.is_alive()]
        if dead:
            return f"pipeline worker(s) died: {', '.join(dead)}"
        return None

    def check_ready(self) -> str | None:
        """ready_reason, plus a real prediction when none succeeded for PROBE_EVERY_S, plus
        the other worker processes' readiness (as they last published it)."""
        reason = self.ready_reason()
        if reason is None and time.monotonic() - self._last_success > PROBE_EVERY_S:
            reason = self.probe()
        if reason is None and self.workers_metrics is not None:
            unready = sum(value == 0 for state in self.workers_metrics.others()
                          for _, value in state.get("serving_ready", []))
            reason = f"{unready} other worker process(es) not ready" if unready else None
        return reason

    def probe(self, timeout: float = PROBE_TIMEOUT_S) -> str | None:
        """One prediction of a synthetic image straight through the DAG (not counted)."""
        if self._servicer is None:
            return self.ready_reason()
        if not self._probe_lock.acquire(blocking=False):  # one probe at a time; others
            return self.ready_reason()  # answer from the state it will update
        try:
            request = pipeline_service_pb2.Request(
                key=["image"], value=[base64.b64encode(probe_image()).decode()],
                name=self.service)
            pool = futures.ThreadPoolExecutor(1, thread_name_prefix="probe")
            try:
                reply = pool.submit(self._servicer.inference, request, None).result(timeout)
            except futures.TimeoutError:
                return f"the model did not answer a probe within {timeout:.0f} s"
            finally:
                pool.shutdown(wait=False)
            if reply.err_no != errors.OK:
                return f"probe failed: err_no {reply.err_no}: {reply.err_msg}"
            self._loaded = True
            self._last_success = time.monotonic()
            return None
        finally:
            self._probe_lock.release()

    def wait_loaded(self, deadline: float, stop: threading.Event) -> bool:
        """Probe until the model answers; False if asked to stop first."""
        while (reason := self.probe()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.service}: not ready after start-up: {reason}")
            log.info("%s: %s", self.service, reason)
            if stop.wait(0.5):
                return False
        return True

    # --- clients (the Op's auto-batching waits for more requests only while there are more
    # clients than its batch holds) -----------------------------------------------------------

    def note_client(self, connection: Any) -> None:
        """A request arrived on `connection` (an HTTP connection, or a gRPC peer)."""
        self._last_request[connection] = time.monotonic()

    def forget_client(self, connection: Any) -> None:
        self._last_request.pop(connection, None)

    def clients(self) -> int:
        """Connections that sent a request within ACTIVE_CLIENT_S: in a closed loop, the
        requests that will come next. Called once per batch by the Op thread."""
        horizon = time.monotonic() - ACTIVE_CLIENT_S
        stale = [connection for connection, at in list(self._last_request.items())
                 if at < horizon]
        for connection in stale:  # gRPC peers are never told apart from closed ones
            self._last_request.pop(connection, None)
        return len(self._last_request)

    # --- predictions -----------------------------------------------------------------------

    def predict(self, request: pipeline_service_pb2.Request, protocol: str
                ) -> pipeline_service_pb2.Response:
        started = time.perf_counter()
        reply = self._admit_and_call(request)
        if reply.err_no == errors.OK:
            self._last_success = time.monotonic()
        self._record(reply, protocol, time.perf_counter() - started)
        return reply

    def _admit_and_call(self, request: pipeline_service_pb2.Request
                        ) -> pipeline_service_pb2.Response:
        if request.name and request.name != self.service:
            return _response("NO_SERVICE", f"no service {request.name!r} here; this port "
                             f"serves {self.service!r}")
        with self._lock:
            if self.draining:
                return _response("DRAINING", "the service is stopping; not accepting requests")
            reason = self.ready_reason()  # cheap; a dead op process would never answer
            if reason is not None:
                return _response("NOT_READY", f"not ready: {reason}")
            if self.inflight >= self.options.max_inflight:
                return _response("OVERLOADED", f"{self.inflight} requests in flight (limit "
                                 f"{self.options.max_inflight}); retry later")
            self.inflight += 1
            self.accepted += 1
        try:
            return self._servicer.inference(request, None)
        except Exception as error:  # the upstream servicer should not raise; never drop one
            log.exception("%s: prediction failed", self.service)
            return _response("INTERNAL", f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self.inflight -= 1
                self.answered += 1
                self._lock.notify_all()

    def _record(self, reply: pipeline_service_pb2.Response, protocol: str,
                seconds: float) -> None:
        metrics = self.metrics
        if (stages := _pop_reserved(reply, STAGES_KEY)) is not None:
            for stage, value in json.loads(stages).items():
                metrics.stages.observe(value, self.service, stage)
        if (images := _pop_reserved(reply, BATCH_KEY)) is not None:
            metrics.batch_images.observe(int(images), self.service)
        metrics.requests.inc(self.service, protocol, errors.outcome(reply.err_no),
                             str(reply.err_no))
        metrics.latency.observe(seconds, self.service, protocol)

    # --- stop --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def responding(self) -> Iterator[bool]:
        """Around one HTTP request, up to its last byte: yields False once the service has
        drained (the connection is then closed without an answer, so the client knows the
        request was never processed, instead of a response cut by the exit)."""
        with self._lock:
            allowed = not self.closed
            self.responders += allowed
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self.responders -= 1
                    self._lock.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests, wait for in-flight ones and for the HTTP answers being written;
        True if all finished in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self.draining = True
            while (self.inflight or self.responders) and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            self.closed = True
            return self.inflight == 0


def _pop_reserved(reply: pipeline_service_pb2.Response, key: str) -> str | None:
    """Removes the Op's reserved `key` from the answer; its value, if it was there."""
    if key not in reply.key:
        return None
    index = list(reply.key).index(key)
    value = reply.value[index]
    del reply.key[index], reply.value[index]
    return value


class _GrpcServicer(pipeline_service_pb2_grpc.PipelineServiceServicer):
    def __init__(self, host: ServiceHost):
        self._host = host

    def inference(self, request: pipeline_service_pb2.Request, context: Any
                  ) -> pipeline_service_pb2.Response:
        self._host.note_client(context.peer())
        return self._host.predict(request, "grpc")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = True  # worker processes share the port (serve_workers without a slot)
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], host: ServiceHost, slot: WorkerSlot | None):
        """slot: this worker's part of a listening socket shared by the workers (serve_workers);
        without one the server binds its own."""
        self.host = host
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
    # holds the second until the client's delayed ACK (measured: 52 ms median instead of 8).
    disable_nagle_algorithm = True
    timeout = 300  # seconds: an idle keep-alive connection (and its thread) is closed after it
    server: _HttpServer
    server_version = "paddle-vision-serving"

    def log_message(self, format: str, *args: Any) -> None:  # access log: off
        pass

    def do_GET(self) -> None:
        with self.server.host.responding() as allowed:
            if allowed:
                self._get()
            else:
                self.close_connection = True

    def do_POST(self) -> None:
        self.server.host.note_client(self)
        with self.server.host.responding() as allowed:
            if allowed:
                self._post()
            else:
                self.close_connection = True

    def finish(self) -> None:  # the connection is closing
        self.server.host.forget_client(self)
        super().finish()

    def _get(self) -> None:
        host = self.server.host
        if self.path == "/health/live":
            self._send_json(200, {"status": "alive"})
        elif self.path == "/health/ready":
            reason = host.check_ready()
            self._send_json(200 if reason is None else 503,
                            {"status": "ready" if reason is None else "not ready",
                             "reason": reason or ""})
        elif self.path == "/metrics":
            self._send(200, host.render_metrics().encode(), CONTENT_TYPE)
        else:
            self._not_found()

    def _post(self) -> None:
        host = self.server.host
        service, _, tail = self.path.lstrip("/").partition("/")
        length = self.headers.get("Content-Length")
        if tail != "prediction":
            self.close_connection = True  # the body is left unread
            self._not_found()
            return
        if length is None or not length.isdigit():
            self.close_connection = True
            self._reply(_response("BAD_REQUEST", "a Content-Length header is required "
                                  "(chunked bodies are not supported)"))
            return
        if int(length) > host.options.limits.max_body_bytes:
            self.close_connection = True
            self._discard(int(length))
            self._reply(_response("BODY_TOO_LARGE", f"body of {length} bytes; the limit is "
                                  f"{host.options.limits.max_body_bytes} bytes"))
            return
        body = self.rfile.read(int(length))
        try:
            request = _parse_body(body, service)
        except ValueError as error:
            self._reply(_response("BAD_REQUEST", str(error)))
            return
        if host.draining:
            self.close_connection = True
        self._reply(host.predict(request, "http"), request.logid)

    def _discard(self, length: int) -> None:
        """Read (without keeping) a refused body up to DISCARD_LIMIT, so a client that sends it
        all before reading gets the 413 instead of a connection reset."""
        left = min(length, DISCARD_LIMIT)
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)

    def _not_found(self) -> None:
        self._send_json(404, {"error": f"no route {self.command} {self.path}; routes: POST "
                              f"/{self.server.host.service}/prediction, GET /health/live, "
                              "/health/ready, /metrics"})

    def _reply(self, reply: pipeline_service_pb2.Response, logid: int = 0) -> None:
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


def _parse_body(body: bytes, service: str) -> pipeline_service_pb2.Request:
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
    return pipeline_service_pb2.Request(key=keys, value=values, name=service, logid=logid)


def serve(service: str, build_servicer: Callable[[Callable[[], int]], Any],
          options: ServiceOptions,
          http_port: int, rpc_port: int, forks: bool, http_slot: WorkerSlot | None = None
          ) -> int:
    """Build the pipeline (build_servicer gets the host's client count, for the Op's
    auto-batching), serve both ports until SIGTERM/SIGINT, drain, exit status.

    forks: the pipeline starts process ops (is_thread_op false). Their DAG must then be built
    before any socket exists, or the children would inherit the listening sockets (and keep the
    ports bound after the service is killed); they load the model after the fork, so readiness
    still says 503 meanwhile. Thread ops load the model while the DAG is built, so the fronts
    open first and answer 503 during the load.
    """
    host = ServiceHost(service, options)
    fronts = None if forks else _open_fronts(host, http_port, rpc_port, http_slot)
    servicer = build_servicer(host.clients)
    host.attach(servicer)
    stop = threading.Event()  # handlers after the forks: op processes keep the default SIGTERM
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    grpc_server, http_server = fronts or _open_fronts(host, http_port, rpc_port, http_slot)
    if host.wait_loaded(time.monotonic() + STARTUP_TIMEOUT_S, stop):
        log.info("%s: ready", service)
    stop.wait()
    return _shutdown(host, grpc_server, http_server)


def serve_workers(workers: int, serve_one: Callable[[WorkerSlot | None], int],
                  http_listener: SharedListener | None = None, pin_cores: bool = False) -> int:
    """Run `serve_one` (a whole service: both fronts + its own pipeline) in `workers` forked
    processes sharing both ports: the gRPC port with SO_REUSEPORT (the kernel spreads
    connections over them, as upstream's build_dag_each_worker does), the HTTP port through
    `http_listener` (serving.balance: the least busy worker accepts) or, without one, like gRPC.

    Why: Paddle Inference holds the GIL for the whole predictor.run, so one process predicts on
    one core at a time and its fronts stall meanwhile; process ops instead pay a multiprocessing
    Manager round trip per channel operation (~6 ms CPU per request measured, docs/benchmarks.md).
    With `pin_cores`, each worker runs on its own share of the cores (serving.cores).
    The parent only forwards SIGTERM/SIGINT and waits. When a worker exits on its own, it stops
    the others and fails, so the supervisor restarts the whole service."""
    global _WORKER_METRICS_DIR
    _WORKER_METRICS_DIR = Path(tempfile.mkdtemp(prefix="serving-metrics-"))
    children, parent = [], os.getpid()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            _die_with(parent)
            if pin_cores and (share := pin_worker(index, workers)) is not None:
                log.info("worker %d of %d runs on cores %s", index + 1, workers, sorted(share))
            os._exit(serve_one(http_listener and http_listener.slot(index)))
        children.append(pid)
    if http_listener is not None:
        http_listener.socket.close()  # the workers' copies stay: the port closes with theirs
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.remove(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping.is_set():
            log.error("worker %d exited (status %d); stopping the other workers", pid, code)
            forward(signal.SIGTERM, None)
            code = code or 1
        status = status or code
    shutil.rmtree(_WORKER_METRICS_DIR, ignore_errors=True)
    return status


def _die_with(parent: int) -> None:
    """SIGTERM this worker when the parent dies, even by SIGKILL: an orphaned worker would keep
    answering on the shared ports next to a restarted service (Linux prctl PR_SET_PDEATHSIG)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _open_fronts(host: ServiceHost, http_port: int, rpc_port: int, http_slot: WorkerSlot | None
                 ) -> tuple[grpc.Server, _HttpServer]:
    options = host.options
    message_limit = options.limits.max_body_bytes
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.max_inflight,
                                   thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", message_limit),
                 ("grpc.max_send_message_length", message_limit),
                 ("grpc.so_reuseport", 1)])  # shared by worker processes
    pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server(_GrpcServicer(host),
                                                                    grpc_server)
    if grpc_server.add_insecure_port(f"{options.host}:{rpc_port}") == 0:
        raise OSError(f"cannot bind gRPC to {options.host}:{rpc_port}")
    http_server = _HttpServer((options.host, http_port), host, http_slot)
    grpc_server.start()
    threading.Thread(target=http_server.serve_forever, name="http", daemon=True).start()
    log.info("%s: http://%s:%d (prediction, /health/live, /health/ready, /metrics), "
             "grpc %s:%d", host.service, options.host, http_port, options.host, rpc_port)
    return grpc_server, http_server


def _shutdown(host: ServiceHost, grpc_server: grpc.Server, http_server: socketserver.TCPServer
              ) -> int:
    timeout = host.options.drain_timeout_s
    log.info("%s: stopping: refusing new requests, draining %d in flight (at most %d s)",
             host.service, host.inflight, timeout)
    host.draining = True
    stopped = grpc_server.stop(grace=timeout)  # closes the port; running RPCs may finish
    http_server.shutdown()  # stop the accept loop, then close the listening socket
    http_server.server_close()
    drained = host.drain(timeout)
    stopped.wait(timeout)
    if host.workers_metrics is not None:
        host.workers_metrics.publish()
    log.info("%s: stopped: %d requests accepted, %d answered, %d abandoned", host.service,
             host.accepted, host.answered, host.accepted - host.answered)
    for child in multiprocessing.active_children():  # process ops
        child.terminate()
    logging.shutdown()
    # os._exit: the upstream op threads are not daemons and never return on their own.
    os._exit(0 if drained else 1)
