"""One model's service process (`python -m serving run`): its settings and config.yml, its model,
its worker processes, each serving both fronts over its own pipeline until SIGTERM/SIGINT, then a
drain of the requests in flight. Imports Paddle Serving's pipeline: import this module only once
the working folder and SERVING_LOG_PATH are set (serving.__main__ does), because the pipeline's
logger writes there at import.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import grpc

from model.model import Model
from model.process import configure_process
from model.settings import Settings
from model.spec import ModelSpec
from serving.admission import ServiceState
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
    # With several workers the fronts open once the model is loaded, so the kernel never hands
    # a connection to a worker that would answer 503 while the others are ready.
    forks = not settings.is_thread_op or workers > 1

    def serve_one(http_slot: WorkerSlot | None = None, metrics_dir: Path | None = None) -> int:
        return serve(model, config, http_port, rpc_port, forks, http_slot, metrics_dir)

    if workers == 1:
        return serve_one()
    # Process ops would fork with the shared socket open, and a killed worker's op processes
    # would keep the port: they get SO_REUSEPORT, bound after their forks, instead.
    listener = (SharedListener((settings.host, http_port), workers) if settings.is_thread_op
                else None)
    return serve_workers(workers, serve_one, listener, pin_cores=settings.pin_workers)


def serve(model: Model, config: dict, http_port: int, rpc_port: int, forks: bool,
          http_slot: WorkerSlot | None, metrics_dir: Path | None) -> int:
    """Build the pipeline, serve both ports until SIGTERM/SIGINT, drain, exit.

    forks: the pipeline starts process ops, or this is one of several workers. Process ops must
    then be forked before any socket exists, or they would inherit the listening sockets (and
    keep the ports bound after the service is killed); they load the model after the fork, so
    readiness still says 503 meanwhile. Thread ops load the model while the pipeline is built,
    so the fronts open first and answer 503 during the load.
    """
    state = ServiceState(model.spec.service.name, model.settings, metrics_dir)
    fronts = None if forks else _open_fronts(state, http_port, rpc_port, http_slot)
    state.attach(Pipeline(model, config, state.clients))
    stop = threading.Event()  # handlers after the forks: op processes keep the default SIGTERM
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    grpc_server, http_server = fronts or _open_fronts(state, http_port, rpc_port, http_slot)
    if state.wait_loaded(time.monotonic() + STARTUP_TIMEOUT_S, stop):
        log.info("%s: ready", state.service)
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


def _shutdown(state: ServiceState, grpc_server: grpc.Server, http_server: HttpServer) -> int:
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
    logging.shutdown()
    # os._exit: the upstream op threads are not daemons and never return on their own.
    os._exit(0 if drained else 1)
