"""What both fronts of a service worker share: readiness, admission (in-flight limit, drain), the
clients the auto-batching waits for, and the metrics of every answer. The fronts hand it pipeline
Requests; it hands them to the Pipeline once admitted and records the Response."""

from __future__ import annotations

import base64
import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

from model import errors
from model.settings import Settings
from serving.pipeline import Pipeline, Request, Response, error_response, pop_timings
from serving.protocol import probe_image
from serving.service_metrics import ServiceMetrics, WorkerMetrics

log = logging.getLogger(__name__)
FRESH_S = 10.0  # a prediction that succeeded this recently shows the model answers
PROBE_TIMEOUT_S = 30.0  # longer without a probe's answer: the model is stuck
PROBE_WAIT_S = 1.0  # a readiness check waits this long for a probe's answer, then says ready
PROBE_POLL_S = 0.2  # while a probe waits, how often it checks that the pipeline's workers live
ACTIVE_CLIENT_S = 1.0  # a connection that sent a request this recently counts as a client


class InflightLimit:
    """The requests in flight of one service, counted across its worker processes in shared
    memory: made before the workers fork, so `max_inflight` holds per service whichever worker
    a connection reaches."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count = multiprocessing.RawValue("i", 0)
        self._lock = multiprocessing.Lock()

    def try_acquire(self) -> int | None:
        """None when a slot was taken, else how many requests are in flight."""
        with self._lock:
            if self._count.value >= self.limit:
                return self._count.value
            self._count.value += 1
            return None

    def release(self) -> None:
        with self._lock:
            self._count.value -= 1


class ServiceState:
    def __init__(self, service: str, settings: Settings, metrics_dir: Path | None = None,
                 inflight_limit: InflightLimit | None = None):
        """metrics_dir: the folder the worker processes of one service share their metrics in
        (serving.workers), None for a single process. inflight_limit: the service's, shared by
        its workers (a process of its own without one)."""
        self.service = service
        self.settings = settings
        self.inflight_limit = inflight_limit or InflightLimit(settings.max_inflight)
        self.pipeline: Pipeline | None = None  # once built (attach)
        self._lock = threading.Condition()
        self.inflight = 0
        self.accepted = self.answered = 0
        self.responders = 0  # HTTP requests between reading and fully writing their response
        self.http_connections = 0  # open, in this worker (serving.http_front)
        self.draining = False
        self.closed = False  # drained: no further HTTP response may start
        self._loaded = False
        self._last_success = 0.0
        self._probe_lock = threading.Lock()
        self._probe: _Probe | None = None  # the background probe of readiness checks
        self._last_request: dict[Any, float] = {}  # connection -> when it last sent a request
        self.metrics = ServiceMetrics(lambda: self.accepted, lambda: self.inflight,
                                      lambda: float(self.ready_reason() is None),
                                      lambda: self.http_connections)
        self.workers_metrics = (WorkerMetrics(metrics_dir, self.metrics)
                                if metrics_dir is not None else None)

    def count_failure(self, thread: str) -> None:
        """A background or connection thread caught a failure (and logged it)."""
        self.metrics.thread_failures.inc(thread)

    def render_metrics(self) -> str:
        others = self.workers_metrics.others() if self.workers_metrics else []
        return self.metrics.registry.render(others)

    # --- readiness -------------------------------------------------------------------------

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def ready_reason(self) -> str | None:
        """None when ready, else why not (cheap: no prediction)."""
        if self.draining:
            return "draining: the service is stopping"
        if not self._loaded or self.pipeline is None:
            return "starting: the model is loading"
        dead = self.pipeline.dead_workers()
        if dead:
            return f"pipeline worker(s) died: {', '.join(dead)}"
        return None

    def check_ready(self) -> str | None:
        """ready_reason; when no prediction succeeded for FRESH_S, the verdict of a probe (a
        real prediction of a synthetic image, run in the background: see probe_verdict); then
        the other worker processes' readiness (as they last published it). Answers within
        PROBE_WAIT_S plus the cheap checks, whatever the load: a busy service is never unready
        for being busy."""
        reason = self.ready_reason()
        if reason is None and time.monotonic() - self._last_success > FRESH_S:
            reason = self.probe_verdict()
        if reason is None and self.workers_metrics is not None:
            unready = self.workers_metrics.unready_others()
            reason = f"{unready} other worker process(es) not ready" if unready else None
        return reason

    def probe_verdict(self) -> str | None:
        """Starts a probe unless one is running, and waits for it at most PROBE_WAIT_S. A probe
        still queued behind the requests in flight counts as ready until PROBE_TIMEOUT_S: the
        model is busy, not broken."""
        with self._probe_lock:
            if self._probe is None:
                self._probe = _Probe(self)
            probe = self._probe
        if probe.done.wait(PROBE_WAIT_S):
            with self._probe_lock:
                if self._probe is probe:
                    self._probe = None  # the next stale check starts a fresh one
            return probe.reason
        waited = time.monotonic() - probe.started
        if waited > PROBE_TIMEOUT_S:
            return f"the model did not answer a probe within {PROBE_TIMEOUT_S:.0f} s"
        return None

    def probe(self, timeout: float = PROBE_TIMEOUT_S) -> str | None:
        """One prediction of a synthetic image straight through the pipeline (not counted),
        waited for: None when it succeeded, else why not (start-up uses it)."""
        if self.pipeline is None:
            return self.ready_reason()
        request = Request(key=["image"], value=[base64.b64encode(probe_image()).decode()],
                          name=self.service)
        pool = futures.ThreadPoolExecutor(1, thread_name_prefix="probe")
        try:
            reply = self._await(pool.submit(self.pipeline.infer, request), timeout)
        finally:
            pool.shutdown(wait=False)
        if isinstance(reply, str):
            return reply
        if reply.err_no != errors.OK:
            return f"probe failed: err_no {reply.err_no}: {reply.err_msg}"
        self._loaded = True
        self._last_success = time.monotonic()
        return None

    def _await(self, answer: futures.Future, timeout: float) -> Response | str:
        """The probe's answer, or why there is none: the deadline passed, or a pipeline worker
        died meanwhile (its request would never be answered)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return answer.result(min(PROBE_POLL_S, max(0.0, deadline - time.monotonic())))
            except futures.TimeoutError:
                if dead := self.pipeline.dead_workers():  # type: ignore[union-attr]
                    return f"pipeline worker(s) died: {', '.join(dead)}"
                if time.monotonic() >= deadline:
                    return f"the model did not answer a probe within {timeout:.0f} s"

    def wait_loaded(self, deadline: float, stop: threading.Event) -> bool:
        """Probe until the model answers; False if asked to stop first. A pipeline worker that
        died meanwhile (an op process whose model could not load) ends the start-up."""
        while (reason := self.probe()) is not None:
            dead = self.pipeline.dead_workers() if self.pipeline else []
            if dead or time.monotonic() > deadline:
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

    def predict(self, request: Request, protocol: str) -> Response:
        """Admit, call the pipeline, record: a request whose body is already read (gRPC)."""
        started = time.perf_counter()
        with self.admitted(request.name) as refusal:
            reply = refusal or self.call(request)
        self.record(reply, protocol, time.perf_counter() - started)
        return reply

    @contextlib.contextmanager
    def admitted(self, service: str) -> Iterator[Response | None]:
        """One prediction's admission, held until the block ends: yields None when admitted
        (the caller reads the request and calls `call`), else the refusal to answer. The HTTP
        front enters it before reading a body, so a refused request's body is never read."""
        refusal = self._admit(service)
        try:
            yield refusal
        finally:
            if refusal is None:
                self.inflight_limit.release()
                with self._lock:
                    self.inflight -= 1
                    self.answered += 1
                    self._lock.notify_all()

    def _admit(self, service: str) -> Response | None:
        if service and service != self.service:
            return error_response("NO_SERVICE", f"no service {service!r} here; this port "
                                  f"serves {self.service!r}")
        with self._lock:
            if self.draining:
                return error_response("DRAINING", "the service is stopping; not accepting "
                                      "requests")
            reason = self.ready_reason()  # cheap; a dead op process would never answer
            if reason is not None:
                return error_response("NOT_READY", f"not ready: {reason}")
            busy = self.inflight_limit.try_acquire()
            if busy is not None:
                return error_response("OVERLOADED", f"{busy} requests in flight in the service "
                                      f"(limit {self.inflight_limit.limit}); retry later")
            self.inflight += 1
            self.accepted += 1
        return None

    def call(self, request: Request) -> Response:
        """The pipeline's answer to an admitted request."""
        try:
            reply = self.pipeline.infer(request)  # type: ignore[union-attr]
        except Exception as error:  # the upstream servicer should not raise; never drop one
            log.exception("%s: prediction failed", self.service)
            return error_response("INTERNAL", f"{type(error).__name__}: {error}")
        if reply.err_no == errors.OK:
            self._last_success = time.monotonic()
        return reply

    def record(self, reply: Response, protocol: str, seconds: float) -> None:
        metrics = self.metrics
        stages, images = pop_timings(reply)
        for stage, value in stages.items():
            metrics.stages.observe(value, self.service, stage)
        if images is not None:
            metrics.batch_images.observe(images, self.service)
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


class _Probe:
    """One background probe: a thread waiting for the model's answer to a synthetic image."""

    def __init__(self, state: ServiceState):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.reason: str | None = None
        self._state = state
        threading.Thread(target=self._run, name="probe", daemon=True).start()

    def _run(self) -> None:
        try:
            self.reason = self._state.probe(timeout=float("inf"))
        except Exception as error:  # a failing probe must say why, not leave readiness hanging
            self._state.count_failure("probe")
            log.exception("%s: readiness probe failed", self._state.service)
            self.reason = f"probe failed: {type(error).__name__}: {error}"
        if self.reason is not None:
            log.warning("%s: readiness probe: %s", self._state.service, self.reason)
        self.done.set()
