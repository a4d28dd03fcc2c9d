"""The service's Prometheus metrics, and their merge across the worker processes that share its
port: whichever worker a scrape reaches answers for the whole service."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serving.metrics import (
    CallbackCounter,
    Counter,
    Gauge,
    Histogram,
    Registry,
    resident_memory_bytes,
)

log = logging.getLogger(__name__)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
PUBLISH_EVERY_S = 1.0  # worker processes share their metrics this often


class ServiceMetrics:
    def __init__(self, accepted: Callable[[], float], inflight: Callable[[], float],
                 ready: Callable[[], float], connections: Callable[[], float]):
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
            "serving_batch_images", "Images in the largest predictor call that served each "
            "successful request (auto-batching merges requests arriving together).",
            ("service",),
            buckets=BATCH_BUCKETS))
        self.refused_connections: Counter = add(Counter(  # type: ignore[assignment]
            "serving_http_refused_total", "HTTP requests or connections refused before a "
            "prediction, by reason (request_timeout: 408, bad_request: 4xx, max_connections: "
            "503, no_thread: closed unanswered).", ("reason",)))
        self.thread_failures: Counter = add(Counter(  # type: ignore[assignment]
            "serving_thread_failures_total", "Failures caught in the service's background and "
            "connection threads (each also logged), by thread.", ("thread",)))
        add(CallbackCounter("serving_requests_accepted_total", "Prediction requests admitted "
                            "to the pipeline (not refused as draining, unready or overloaded).",
                            accepted))
        add(Gauge("serving_inflight_requests", "Prediction requests being processed.",
                  inflight))
        add(Gauge("serving_http_connections", "Open HTTP connections (past max_connections "
                  "included).", connections))
        add(Gauge("serving_ready", "1 when the model is loaded and answers, else 0.", ready,
                  combine=min))
        add(Gauge("process_resident_memory_bytes", "Resident memory of the service process.",
                  resident_memory_bytes))


class WorkerMetrics:
    """Each worker process publishes its raw values to a file in a folder the workers share,
    every PUBLISH_EVERY_S; a scrape merges the other workers' files into its answer."""

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
            try:
                self.publish()
            except Exception:  # e.g. the shared folder went away: keep trying, say so
                self._metrics.thread_failures.inc("metrics")
                log.exception("publishing this worker's metrics failed")
            time.sleep(PUBLISH_EVERY_S)

    def others(self) -> list[dict[str, list]]:
        states = []
        for file in self._folder.glob("*.json"):
            if file != self._own:
                with contextlib.suppress(OSError, ValueError):
                    states.append(json.loads(file.read_text()))
        return states

    def unready_others(self) -> int:
        """Other workers whose last published readiness was 0."""
        return sum(value == 0 for state in self.others()
                   for _, value in state.get("serving_ready", []))
