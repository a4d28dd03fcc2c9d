"""One model's service process (`python -m serving run`): its settings and config.yml, its model,
its worker processes, each serving both fronts over its own pipeline until SIGTERM/SIGINT, then a
drain of the requests in flight. Imports Paddle Serving's pipeline: import this module only once
the working folder and SERVING_LOG_PATH are set (serving.__main__ does), because the pipeline's
logger writes there at import.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import NoReturn

import grpc

from model.model import Model
from model.process import configure_process
from model.settings import Settings
from model.spec import ModelSpec
from serving.admission import InflightLimit, ServiceState
from serving.balance import SharedListener, WorkerSlot
from serving.grpc_front import open_grpc
from serving.http_front import HttpServer, open_http
from serving.pipeline import Pipeline, render_config, write_config
from serving.workers import serve_workers

log = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 600.0


def run_service(spec: ModelSpec, model_dir: Path, settings: Settings, http_port: int,
                rpc_port: int, config_file: Path) -> int:
    """Serve the model in model_dir until stopped; the exit status."""
    workers = settings.worker_count if settings.build_dag_each_worker else 1
    config = render_config(spec.name, settings, http_port, rpc_port)
    write_config(config_file, config, settings)
    log.info("serving %s on http %d / rpc %d (host %s, %d worker(s)) with %s", spec.name,
             http_port, rpc_port, settings.host, workers, config_file)
    configure_process(settings)
    model = Model(spec, model_dir, settings)
    opening = fronts_opening(settings, workers)
    inflight_limit = InflightLimit(settings.max_inflight)  # shared by the workers it forks

    def serve_one(http_slot: WorkerSlot | None = None, metrics_dir: Path | None = None) -> int:
        state = ServiceState(spec.service.name, settings, metrics_dir, inflight_limit)
        return serve(model, state, config, http_port, rpc_port, opening, http_slot)

    if workers == 1:
        return serve_one()
    # Process ops would fork with the shared socket open, and a killed worker's op processes
    # would keep the port: they get SO_REUSEPORT, bound after their forks, instead.
    listener = (SharedListener((settings.host, http_port), workers) if settings.is_thread_op
                else None)
    return serve_workers(workers, serve_one, listener, pin_cores=settings.pin_workers)


class Opening(enum.Enum):
    """When a worker opens its fronts, relative to building its pipeline and loading its model."""

    FIRST = "first"  # answer 503 NOT_READY while the model loads
    AFTER_FORKS = "after the op processes forked"  # they must not inherit the listening sockets
    WHEN_LOADED = "once the model answered"  # never take a connection a sibling could serve


def fronts_opening(settings: Settings, workers: int) -> Opening:
    if workers > 1:
        return Opening.WHEN_LOADED
    return Opening.FIRST if settings.is_thread_op else Opening.AFTER_FORKS


def serve(model: Model, state: ServiceState, config: dict, http_port: int, rpc_port: int,
          opening: Opening, http_slot: WorkerSlot | None) -> int:
    """Build the pipeline (its Op loads the model in its own thread or process), open both
    fronts when `opening` says, serve until SIGTERM/SIGINT, drain, exit."""

    def open_fronts() -> tuple[grpc.Server, HttpServer]:
        return _open_fronts(state, http_port, rpc_port, http_slot)

    fronts = open_fronts() if opening is Opening.FIRST else None
    state.attach(Pipeline(model, config, state.clients))
    stop = threading.Event()  # handlers after the forks: op processes keep the default SIGTERM
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if opening is Opening.AFTER_FORKS:
        fronts = open_fronts()
    try:
        if state.wait_loaded(time.monotonic() + STARTUP_TIMEOUT_S, stop):
            log.info("%s: ready", state.service)
    except RuntimeError as error:  # the model cannot load: no point serving
        log.error("%s", error)
        Pipeline.stop_op_processes()
        exit_now(1)
    grpc_server, http_server = fronts or open_fronts()
    stop.wait()
    return _shutdown(state, grpc_server, http_server)


def _open_fronts(state: ServiceState, http_port: int, rpc_port: int,
                 http_slot: WorkerSlot | None) -> tuple[grpc.Server, HttpServer]:
    grpc_server = open_grpc(state, rpc_port)
    http_server = open_http(state, http_port, http_slot)
    host = state.settings.host
    log.info("%s: http://%s:%d (prediction, /health/live, /health/ready, /metrics), "
             "grpc %s:%d", state.service, host, http_port, host, rpc_port)
    return grpc_server, http_server


def _shutdown(state: ServiceState, grpc_server: grpc.Server, http_server: HttpServer
              ) -> int:
    timeout = state.settings.drain_timeout_s
    log.info("%s: stopping: refusing new requests, draining %d in flight (at most %d s)",
             state.service, state.inflight, timeout)
    state.draining = True
    stopped = grpc_server.stop(grace=timeout)  # closes the port; running RPCs may finish
    http_server.shutdown()  # stop the accept loop, then close the listening socket
    http_server.server_close()
    drained = state.drain(timeout)
    stopped.wait(timeout)
    if state.workers_metrics is not None:
        state.workers_metrics.publish()
    log.info("%s: stopped: %d requests accepted, %d answered, %d abandoned", state.service,
             state.accepted, state.answered, state.accepted - state.answered)
    Pipeline.stop_op_processes()
    exit_now(0 if drained else 1)


def exit_now(status: int) -> NoReturn:
    """Flush the logs and leave: the pipeline's threads are not daemons and never return on
    their own, so a normal interpreter exit would wait for them forever."""
    logging.shutdown()
    os._exit(status)
