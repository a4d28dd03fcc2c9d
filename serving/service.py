"""The Paddle Serving pipeline of one described model: RequestOp -> ModelOp -> ResponseOp, the
upstream DAG, channels and LocalPredictor. ModelOp maps the pipeline's hooks onto ModelHandler.

Auto-batching: with op batch_size > 1 the pipeline hands ModelOp several requests at once and
merges their preprocess dicts by concatenating each value. So preprocess returns ONE value per
request, an object array of its samples (any image sizes concatenate), and process returns ONE
value, an object array of per-image outputs: the pipeline then slices it back by each request's
image count ("normal tensor" branch of operator.py _run_process). Raw outputs would not survive
that slicing: the detector's NMS boxes are counted per image, not per row.

`build_servicer` builds the upstream PipelineServicer for the project's own front
(serving.host), and `pipeline_workers` names what of it must stay alive; `run_upstream` is the
stock WebService path with Paddle Serving's Go HTTP gateway, kept as the benchmark's reference
configuration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from paddle_serving_server.pipeline import Op, RequestOp, ResponseOp
from paddle_serving_server.pipeline.channel import ChannelDataErrcode, ChannelTimeoutError
from paddle_serving_server.pipeline.dag import DAG
from paddle_serving_server.pipeline.pipeline_server import PipelineServicer, ServerYamlConfChecker
from paddle_serving_server.web_service import WebService

from serving.errors import ServiceError
from serving.handler import BATCH_KEY, STAGES_KEY, ModelHandler

# Stashed in the request dict between preprocess and postprocess: the pipeline hands the same
# dict to both (operator.py _run_preprocess / _run_postprocess), so nothing outlives a request.
_BATCH_KEYS = "@batch_keys"
_BATCH_SECONDS = "@batch_seconds"
_SAMPLES = "@samples"  # preprocess -> process: the request's samples
_IMAGE_OUTPUTS = "@image_outputs"  # process -> postprocess: each image's part of the outputs
# channel.front() waits forever for timeout <= 0; this is "only what is already queued".
_NO_WAIT = 1e-6


def _only_input(input_dicts: dict[str, Any]) -> dict[str, Any]:
    """The pipeline keys an Op's input by the previous Op's name; there is exactly one."""
    (request,) = input_dicts.values()
    return request


def object_array(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of `items` (np.array would stack equal-shaped arrays into one)."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def _no_clients() -> int:
    return 0


def collect_batches(channel: Any, op_name: str, batch_size: int, timeout: float | None,
                    clients: Callable[[], int]) -> Iterator[list[Any]]:
    """Batches of up to `batch_size` requests from `channel`. Upstream's policy holds every
    partial batch for the whole auto_batching_timeout: a lone client would wait that long on
    every request for company that never comes. Here a batch starts with the first request to
    arrive, takes whatever else is already queued, and waits (at most `timeout` s in all) only
    while there are more `clients()` than the batch holds: their next requests are on the way."""
    while True:
        batch = [channel.front(op_name)]
        deadline = time.monotonic() + (timeout or 0.0)
        while len(batch) < batch_size:
            wait = deadline - time.monotonic() if clients() > len(batch) else 0.0
            try:
                batch.append(channel.front(op_name, max(wait, _NO_WAIT)))
            except ChannelTimeoutError:
                break
        yield batch


class ModelOp(Op):
    def __init__(self, handler: ModelHandler, read_op: Op, report_stages: bool = True,
                 clients: Callable[[], int] = _no_clients):
        """clients: how many clients this worker is serving now (serving.host); a partial batch
        waits for more requests only while there are more clients than it holds."""
        super().__init__(name=handler.spec.name, input_ops=[read_op])
        self.handler = handler
        self.report_stages = report_stages
        self.clients = clients
        # process() and postprocess() of one batch run in the same Op thread (or process).
        self._predict = threading.local()

    def init_op(self) -> None:
        self.handler.load()

    def use_default_auto_batching_config(self) -> None:
        """Keeps batching on. Upstream's DAG turns it off under build_dag_each_worker (dag.py,
        DAG.build), where each of its worker processes serves one gRPC call at a time, so no
        batch could form; the project's workers serve many connections each."""

    def _auto_batching_generator(self, input_channel: Any, op_name: str, batch_size: int,
                                 timeout: float | None, op_info_prefix: str
                                 ) -> Iterator[list[Any]]:
        """Upstream's batching hook, with the project's policy (collect_batches)."""
        return collect_batches(input_channel, op_name, batch_size, timeout, self.clients)

    def preprocess(self, input_dicts: dict[str, Any], data_id: int = 0, log_id: int = 0
                   ) -> tuple[Any, bool, int | None, str]:
        request = _only_input(input_dicts)
        try:
            prepared = self.handler.prepare(request)
        except ServiceError as error:
            return None, False, error.err_no, str(error)
        request[_BATCH_KEYS], request[_BATCH_SECONDS] = prepared.keys, prepared.seconds
        return {_SAMPLES: object_array(prepared.samples)}, False, None, ""

    def process(self, feed_batch: list[dict[str, Any]], typical_logid: int = 0
                ) -> tuple[dict[str, Any], int, str]:
        """One predictor call for every image of the batched requests. Calls the LocalPredictor
        directly: upstream's Op.process first re-checks the feed and fetch names through
        inspect-based decorators (error_catch.ParamChecker), 0.13-0.20 ms per call measured,
        for a feed the handler built from the model's own names."""
        (merged,) = feed_batch
        samples = list(merged[_SAMPLES])
        started = time.perf_counter()
        try:
            self._predict.images = len(samples)
            outputs = self.client.predict(feed=self.handler.feed(samples),
                                          fetch=self._fetch_names, batch=True,
                                          log_id=typical_logid)
            image_outputs = object_array(self.handler.split(outputs, len(samples)))
        finally:
            self._predict.seconds = time.perf_counter() - started
        return {_IMAGE_OUTPUTS: image_outputs}, ChannelDataErrcode.OK.value, ""

    def postprocess(self, input_data: dict[str, Any], fetch_data: dict[str, Any],
                    data_id: int = 0, log_id: int = 0
                    ) -> tuple[dict[str, str], int | None, str]:
        started = time.perf_counter()
        request = _only_input(input_data)
        keys, seconds = request.pop(_BATCH_KEYS), request.pop(_BATCH_SECONDS)
        response = self.handler.respond(keys, list(fetch_data[_IMAGE_OUTPUTS]))
        if self.report_stages:
            seconds = {**seconds, "predict": getattr(self._predict, "seconds", 0.0),
                       "postprocess": time.perf_counter() - started}
            response[STAGES_KEY] = json.dumps(seconds)
            response[BATCH_KEY] = str(getattr(self._predict, "images", 0))
        return response, None, ""


def build_servicer(handler: ModelHandler, config: dict[str, Any],
                   clients: Callable[[], int] = _no_clients) -> PipelineServicer:
    """The upstream servicer (DAG executor started, ops launched) for a rendered config.yml
    mapping; the caller serves it on its own ports. Does what PipelineServer.prepare_server
    does minus its port checks (our fronts may already hold the ports) and ProcessInfo.json.
    clients: see ModelOp."""
    config = ServerYamlConfChecker.load_server_yaml_conf(yml_dict=config)  # + defaults
    response_op = ResponseOp(input_ops=[ModelOp(handler, RequestOp(), clients=clients)])
    used_ops, _ = DAG.get_use_ops(response_op)
    for op in used_ops:
        if not isinstance(op, RequestOp | ResponseOp):
            op.init_from_dict(config["op"][op.name])
            op.launch_local_rpc_service()  # logs only, for local_predictor ops
    return PipelineServicer(handler.spec.service.name, response_op, config)


def pipeline_workers(servicer: PipelineServicer) -> list[Any]:
    """What must stay alive for the pipeline to answer: each op's thread (thread ops) or process
    (process ops), as DAG.start returned them, and the DAG executor's receiving thread.

    Read from the servicer, not diffed from threading.enumerate() around its build: with thread
    ops the fronts are already open then, and the handler thread of a health probe that came in
    during the load ended later and read as a dead worker, readiness stuck at 503 for good."""
    executor = servicer._dag_executor
    ops = [worker for worker in executor._dag._threads_or_proces if worker is not None]
    return [*ops, executor._recive_func]


class _UpstreamService(WebService):
    def __init__(self, handler: ModelHandler):
        super().__init__(name=handler.spec.service.name)
        self._handler = handler

    def get_pipeline_response(self, read_op: Op) -> Op:
        return ModelOp(self._handler, read_op, report_stages=False)


def run_upstream(handler: ModelHandler, config_file: Path) -> None:
    """Serve with Paddle Serving's own gRPC server and Go HTTP gateway until killed (no health,
    no drain, HTTP always 200, the gateway binds every interface)."""
    service = _UpstreamService(handler)
    service.prepare_pipeline_config(yml_file=str(config_file))
    service.run_service()
