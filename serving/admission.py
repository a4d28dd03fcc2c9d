"""What both fronts of a service worker share: readiness, admission (in-flight limit, drain), the
clients the auto-batching waits for, and the metrics of every answer. The fronts hand it pipeline
Requests; it hands them to the Pipeline once admitted and records the Response."""

from __future__ import annotations

import base64
import contextlib
import logging
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
PROBE_EVERY_S = 10.0  # re-check that the model answers when no request succeeded for this long
PROBE_TIMEOUT_S = 30.0
PROBE_POLL_S = 0.2  # while a probe waits, how often it checks that the pipeline's workers live
ACTIVE_CLIENT_S = 1.0  # a connection that sent a request this recently counts as a client


class ServiceState:
    def __init__(self, service: str, settings: Settings, metrics_dir: Path | None = None):
        """metrics_dir: the folder the worker processes of one service share their metrics in
        (serving.workers), None for a single process."""
        self.service = service
        self.settings = settings
        self.pipeline: Pipeline | None = None  # once built (attach)
        self._lock = threading.Condition()
        self.inflight = 0
        self.accepted = self.answered = 0
        self.responders = 0  # HTTP requests between reading and fully writing their response
        self.draining = False
        self.closed = False  # drained: no further HTTP response may start
        self._loaded = False
        self._last_success = 0.0
        self._probe_lock = threading.Lock()
        self._last_request: dict[Any, float] = {}  # connection -> when it last sent a request
        self.metrics = ServiceMetrics(lambda: self.accepted, lambda: self.inflight,
                                      lambda: float(self.ready_reason() is None))
        self.workers_metrics = (WorkerMetrics(metrics_dir, self.metrics)
                                if metrics_dir is not None else None)

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
        """ready_reason, plus a real prediction when none succeeded for PROBE_EVERY_S, plus
        the other worker processes' readiness (as they last published it)."""
        reason = self.ready_reason()
        if reason is None and time.monotonic() - self._last_success > PROBE_EVERY_S:
            reason = self.probe()
        if reason is None and self.workers_metrics is not None:
            unready = self.workers_metrics.unready_others()
            reason = f"{unready} other worker process(es) not ready" if unready else None
        return reason

    def probe(self, timeout: float = PROBE_TIMEOUT_S) -> str | None:
        """One prediction of a synthetic image straight through the pipeline (not counted)."""
        if self.pipeline is None:
            return self.ready_reason()
        if not self._probe_lock.acquire(blocking=False):  # one probe at a time; others
            return self.ready_reason()  # answer from the state it will update
        try:
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
        finally:
            self._probe_lock.release()

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
        started = time.perf_counter()
        reply = self._admit_and_call(request)
        if reply.err_no == errors.OK:
            self._last_success = time.monotonic()
        self._record(reply, protocol, time.perf_counter() - started)
        return reply

    def _admit_and_call(self, request: Request) -> Response:
        if request.name and request.name != self.service:
            return error_response("NO_SERVICE", f"no service {request.name!r} here; this port "
                                  f"serves {self.service!r}")
        with self._lock:
            if self.draining:
                return error_response("DRAINING", "the service is stopping; not accepting "
                                      "requests")
            reason = self.ready_reason()  # cheap; a dead op process would never answer
            if reason is not None:
                return error_response("NOT_READY", f"not ready: {reason}")
            if self.inflight >= self.settings.max_inflight:
                return error_response("OVERLOADED", f"{self.inflight} requests in flight "
                                      f"(limit {self.settings.max_inflight}); retry later")
            self.inflight += 1
            self.accepted += 1
        try:
            return self.pipeline.infer(request)  # type: ignore[union-attr]
        except Exception as error:  # the upstream servicer should not raise; never drop one
            log.exception("%s: prediction failed", self.service)
            return error_response("INTERNAL", f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self.inflight -= 1
                self.answered += 1
                self._lock.notify_all()

    def _record(self, reply: Response, protocol: str, seconds: float) -> None:
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
