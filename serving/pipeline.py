"""The adapter to Paddle Serving: the only module that knows its pipeline's internals.

One described model becomes RequestOp -> ModelOp -> ResponseOp on upstream's DAG and channels.
ModelOp maps the pipeline's hooks onto the model contract (model.model.Model): preprocess each
request, predict each batch with the model's own engine (no LocalPredictor: the Op's client is
never built), postprocess each request. `Pipeline` is what the rest of the service sees: build it,
call it with a pipeline Request, ask which of its workers died, read the stage timings off an
answer. The wire messages (Request, Response) and the gRPC registration are re-exported from here,
so the fronts need nothing else of Paddle Serving. `render_config` writes its config.yml;
`run_upstream_gateway` serves the stock way (Paddle Serving's gRPC server and Go HTTP gateway),
the benchmark's reference configuration.

Auto-batching: with op batch_size > 1 the pipeline hands ModelOp several requests at once and
merges their preprocess dicts by concatenating each value. So preprocess returns ONE value per
request, an object array of its samples (any image sizes concatenate), and process returns ONE
value, an object array of per-image outputs: the pipeline then slices it back by each request's
image count ("normal tensor" branch of operator.py _run_process). Raw outputs would not survive
that slicing: the detector's NMS boxes are counted per image, not per row.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from paddle_serving_server.pipeline import Op, RequestOp, ResponseOp
from paddle_serving_server.pipeline.channel import (
    ChannelDataErrcode,
    ChannelDataType,
    ChannelTimeoutError,
)
from paddle_serving_server.pipeline.dag import DAG
from paddle_serving_server.pipeline.pipeline_server import PipelineServicer, ServerYamlConfChecker
from paddle_serving_server.pipeline.proto import pipeline_service_pb2, pipeline_service_pb2_grpc
from paddle_serving_server.web_service import WebService

from model.errors import BY_NAME, RequestError
from model.model import Model
from model.settings import Settings, as_text

Request = pipeline_service_pb2.Request
Response = pipeline_service_pb2.Response
add_servicer_to_server = pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server
Servicer = pipeline_service_pb2_grpc.PipelineServiceServicer
log = logging.getLogger(__name__)

# Stashed in the request dict between preprocess and postprocess: the pipeline hands the same
# dict to both (operator.py _run_preprocess / _run_postprocess), so nothing outlives a request.
_BATCH_KEYS = "@batch_keys"
_BATCH_SECONDS = "@batch_seconds"
_SAMPLES = "@samples"  # preprocess -> process: the request's samples
_CHECKED = "@checked"  # batching -> preprocess: the request's images, checked, not decoded
_IMAGE_OUTPUTS = "@image_outputs"  # process -> postprocess: each image's part of the outputs
# Reserved answer keys carrying per-stage seconds and the predictor call's image count from the
# Op back to the service (pop_timings strips them): with process ops the Op runs in another
# process, so the timings travel with the answer.
STAGES_KEY = "@stage_seconds"
BATCH_KEY = "@batch_images"
MODEL_LOAD_FAILED = 3  # exit status of a process whose model cannot load
# channel.front() waits forever for timeout <= 0; this is "only what is already queued".
_NO_WAIT = 1e-6


def error_response(name: str, message: str) -> Response:
    return Response(err_no=BY_NAME[name].err_no, err_msg=message)


def render_config(model_name: str, settings: Settings, http_port: int, rpc_port: int
                  ) -> dict[str, Any]:
    """The config.yml mapping Paddle Serving's PipelineServer reads."""
    return {
        "http_port": http_port,
        "rpc_port": rpc_port,
        "worker_num": settings.worker_count,
        "build_dag_each_worker": settings.build_dag_each_worker,
        "dag": {
            "is_thread_op": settings.is_thread_op,
            "retry": 1,
            "client_type": "brpc",  # checked against brpc|grpc; unused, the Op has no client
            "use_profile": False,
            "tracer": {"interval_s": -1},
        },
        "op": {
            model_name: {
                "concurrency": settings.concurrency,
                # -1: no per-call timeout. With one, upstream runs every predictor call in an
                # extra thread (func_timeout, operator.py _run_process) and cannot stop a
                # running prediction anyway.
                "timeout": -1,
                "retry": 1,
                "batch_size": settings.batch_size,
                "auto_batching_timeout": settings.auto_batching_timeout,  # ms
                # No model_config and no client_type: upstream builds no LocalPredictor and no
                # client (ModelOp predicts with the model's own engine).
                "local_service_conf": {"device_type": 0},
            }
        },
    }


def write_config(path: Path, config: Mapping[str, Any], settings: Settings) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Rendered by `python -m serving` from the model description; edits are "
              f"overwritten.\n# runtime: {as_text(settings)}\n")
    path.write_text(header + yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


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
                    clients: Callable[[], int], cost: Callable[[Any], tuple[int, int]],
                    max_pixels: int) -> Iterator[list[Any]]:
    """Batches of requests from `channel` holding at most `batch_size` images and `max_pixels`
    pixels in all (`cost`: a queued request's images and pixels); a request with more images
    than `batch_size` is a batch of its own. Upstream's policy holds every partial batch for the
    whole auto_batching_timeout: a lone client would wait that long on every request for company
    that never comes. Here a batch starts with the first request to arrive, takes whatever else
    is already queued, and waits (at most `timeout` s in all) only while there are more
    `clients()` than the batch holds: their next requests are on the way. A request that does
    not fit starts the next batch."""
    held = None
    while True:
        batch = [held if held is not None else channel.front(op_name)]
        held = None
        images, pixels = cost(batch[0])
        deadline = time.monotonic() + (timeout or 0.0)
        while images < batch_size:
            wait = deadline - time.monotonic() if clients() > len(batch) else 0.0
            try:
                item = channel.front(op_name, max(wait, _NO_WAIT))
            except ChannelTimeoutError:
                break
            more_images, more_pixels = cost(item)
            if images + more_images > batch_size or pixels + more_pixels > max_pixels:
                held = item
                break
            batch.append(item)
            images, pixels = images + more_images, pixels + more_pixels
        yield batch


class ModelOp(Op):
    def __init__(self, model: Model, read_op: Op, report_stages: bool = True,
                 clients: Callable[[], int] = _no_clients):
        """clients: how many clients this worker is serving now (serving.admission); a partial
        batch waits for more requests only while there are more clients than it holds."""
        super().__init__(name=model.spec.name, input_ops=[read_op])
        self.model = model
        self.report_stages = report_stages
        self.clients = clients
        # process() and postprocess() of one batch run in the same Op thread (or process).
        self._predict = threading.local()

    def init_from_dict(self, conf: dict[str, Any]) -> None:
        super().init_from_dict(conf)
        # Without a model_config upstream marks the Op "without serving" and skips process();
        # the model predicts there itself.
        self.with_serving = True

    def init_client(self, client_config: Any, server_endpoints: Any) -> None:
        """No upstream client: the model's own engine predicts (loaded by init_op)."""
        return None

    def init_op(self) -> None:
        """Runs in the Op's thread (or each Op process, after the fork). A model that cannot
        load ends the process at once, with the reason in the log: nothing there could ever
        answer (upstream would log the error and serve on, failing every request)."""
        try:
            self.model.load()
        except Exception:
            log.exception("%s: cannot load the model from %s; exiting", self.model.spec.name,
                          self.model.model_dir)
            logging.shutdown()
            os._exit(MODEL_LOAD_FAILED)

    def use_default_auto_batching_config(self) -> None:
        """Keeps batching on. Upstream's DAG turns it off under build_dag_each_worker (dag.py,
        DAG.build), where each of its worker processes serves one gRPC call at a time, so no
        batch could form; the project's workers serve many connections each."""

    def _auto_batching_generator(self, input_channel: Any, op_name: str, batch_size: int,
                                 timeout: float | None, op_info_prefix: str
                                 ) -> Iterator[list[Any]]:
        """Upstream's batching hook, with the project's policy (collect_batches)."""
        return collect_batches(input_channel, op_name, batch_size, timeout, self.clients,
                               self._request_cost, self.model.settings.max_batch_pixels)

    def _request_cost(self, item: dict[str, Any]) -> tuple[int, int]:
        """A queued request's (images, pixels), read from its images' headers; the checked
        images wait in the request for preprocess. A refused request costs nothing: preprocess
        checks it again and answers the refusal."""
        (data,) = item.values()
        request = data.dictdata if data.datatype == ChannelDataType.DICT.value else None
        if not isinstance(request, dict):
            return 0, 0
        try:
            checked = self.model.check(request)
        except RequestError:
            return 0, 0
        request[_CHECKED] = checked
        return len(checked), sum(image.pixels for image in checked)

    def preprocess(self, input_dicts: dict[str, Any], data_id: int = 0, log_id: int = 0
                   ) -> tuple[Any, bool, int | None, str]:
        request = _only_input(input_dicts)
        try:
            prepared = self.model.preprocess(request, request.pop(_CHECKED, None))
        except RequestError as error:
            return None, False, error.err_no, str(error)
        request[_BATCH_KEYS], request[_BATCH_SECONDS] = prepared.keys, prepared.seconds
        return {_SAMPLES: object_array(prepared.samples)}, False, None, ""

    def process(self, feed_batch: list[dict[str, Any]], typical_logid: int = 0
                ) -> tuple[dict[str, Any], int, str]:
        """The images of the batched requests, batch_size at a time per predictor call."""
        (merged,) = feed_batch
        samples = list(merged[_SAMPLES])
        started = time.perf_counter()
        try:
            self._predict.images = min(len(samples), self._batch_size)
            outputs = []
            for start in range(0, len(samples), self._batch_size):
                outputs += self.model.predict(samples[start:start + self._batch_size])
            image_outputs = object_array(outputs)
        finally:
            self._predict.seconds = time.perf_counter() - started
        return {_IMAGE_OUTPUTS: image_outputs}, ChannelDataErrcode.OK.value, ""

    def postprocess(self, input_data: dict[str, Any], fetch_data: dict[str, Any],
                    data_id: int = 0, log_id: int = 0
                    ) -> tuple[dict[str, str], int | None, str]:
        started = time.perf_counter()
        request = _only_input(input_data)
        keys, seconds = request.pop(_BATCH_KEYS), request.pop(_BATCH_SECONDS)
        response = self.model.postprocess(keys, list(fetch_data[_IMAGE_OUTPUTS]))
        if self.report_stages:
            seconds = {**seconds, "predict": getattr(self._predict, "seconds", 0.0),
                       "postprocess": time.perf_counter() - started}
            response[STAGES_KEY] = json.dumps(seconds)
            response[BATCH_KEY] = str(getattr(self._predict, "images", 0))
        return response, None, ""


class Pipeline:
    """The built pipeline of one model in this process: the upstream PipelineServicer (DAG
    executor started, ops launched), served on the caller's own ports. Builds what
    PipelineServer.prepare_server does minus its port checks (the fronts may already hold the
    ports) and ProcessInfo.json. clients: see ModelOp."""

    def __init__(self, model: Model, config: dict[str, Any],
                 clients: Callable[[], int] = _no_clients):
        checked = ServerYamlConfChecker.load_server_yaml_conf(yml_dict=config)  # + defaults
        response_op = ResponseOp(input_ops=[ModelOp(model, RequestOp(), clients=clients)])
        used_ops, _ = DAG.get_use_ops(response_op)
        for op in used_ops:
            if not isinstance(op, RequestOp | ResponseOp):
                op.init_from_dict(checked["op"][op.name])
        self._servicer = PipelineServicer(model.spec.service.name, response_op, checked)
        self._workers = self._pipeline_workers()

    def infer(self, request: Request) -> Response:
        return self._servicer.inference(request, None)

    def _pipeline_workers(self) -> list[Any]:
        """What must stay alive for the pipeline to answer: each op's thread (thread ops) or
        process (process ops), as DAG.start returned them, the channels' Manager process
        (process ops), and the DAG executor's receiving thread. Read from the servicer, not
        diffed from threading.enumerate() around its build: a health probe's handler thread that
        came in during the load would read as a dead worker once it ended."""
        executor = self._servicer._dag_executor
        ops = [worker for worker in executor._dag._threads_or_proces if worker is not None]
        # Process ops talk through a multiprocessing Manager's process (dag.py DAG.__init__):
        # without it every request would wait forever.
        manager = getattr(executor._dag, "_manager", None)
        channels = [manager._process] if manager is not None else []
        return [*ops, *channels, executor._recive_func]

    def dead_workers(self) -> list[str]:
        return [getattr(w, "name", str(w)) for w in self._workers if not w.is_alive()]

    @staticmethod
    def stop_op_processes() -> None:
        """Process ops are multiprocessing children of this process."""
        for child in multiprocessing.active_children():
            child.terminate()


def pop_timings(reply: Response) -> tuple[dict[str, float], int | None]:
    """Removes the Op's reserved keys from an answer: (seconds per stage, images in the
    predictor call), empty when it has none (refused requests, the reference configuration)."""
    stages, images = _pop_reserved(reply, STAGES_KEY), _pop_reserved(reply, BATCH_KEY)
    return (json.loads(stages) if stages else {}), (int(images) if images else None)


def _pop_reserved(reply: Response, key: str) -> str | None:
    if key not in reply.key:
        return None
    index = list(reply.key).index(key)
    value = reply.value[index]
    del reply.key[index], reply.value[index]
    return value


class _UpstreamService(WebService):
    def __init__(self, model: Model):
        super().__init__(name=model.spec.service.name)
        self._model = model

    def get_pipeline_response(self, read_op: Op) -> Op:
        return ModelOp(self._model, read_op, report_stages=False)


def run_upstream_gateway(model: Model, config_file: Path) -> None:
    """Serve with Paddle Serving's own gRPC server and Go HTTP gateway until killed (no health,
    no drain, HTTP always 200, the gateway binds every interface)."""
    service = _UpstreamService(model)
    service.prepare_pipeline_config(yml_file=str(config_file))
    service.run_service()
