"""The service's gRPC front: upstream's PipelineService protocol, so Paddle Serving's
PipelineClient works unchanged, served by the project's own gRPC server on the configured host."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc

from serving.admission import ServiceState
from serving.pipeline import Request, Response, Servicer, add_servicer_to_server

# Threads beyond max_inflight: a call past the service's limit is answered OVERLOADED at once
# by one of them instead of waiting for a thread. Past all of them gRPC itself refuses the call
# (RESOURCE_EXHAUSTED) rather than queue it.
SPARE_THREADS = 16


class _PipelineServicer(Servicer):
    def __init__(self, state: ServiceState):
        self._state = state

    def inference(self, request: Request, context: Any) -> Response:
        self._state.note_client(context.peer())
        return self._state.predict(request, "grpc")


def open_grpc(state: ServiceState, port: int) -> grpc.Server:
    """Bound and started; worker processes share the port (SO_REUSEPORT)."""
    settings = state.settings
    threads = settings.max_inflight + SPARE_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=threads,
        options=[("grpc.max_receive_message_length", settings.max_body_bytes),
                 ("grpc.max_send_message_length", settings.max_body_bytes),
                 ("grpc.so_reuseport", 1)])
    add_servicer_to_server(_PipelineServicer(state), server)
    if server.add_insecure_port(f"{settings.host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC to {settings.host}:{port}")
    server.start()
    return server
