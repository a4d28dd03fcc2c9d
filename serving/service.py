"""The Paddle Serving pipeline service for one described model: a WebService whose DAG is
RequestOp -> ModelOp -> ResponseOp. ModelOp maps the pipeline's hooks onto ModelHandler.

Feeds go to the predictor as a one-element LIST of batch dicts, on purpose: for a dict feed the
pipeline slices every output to the request's image count (operator.py, "normal tensor" branch of
_run_process), which would truncate the detector's variable-length NMS boxes; for a list feed it
hands each output dict over whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paddle_serving_server.pipeline import Op
from paddle_serving_server.web_service import WebService

from serving.handler import BAD_REQUEST, BadRequest, ModelHandler, image_keys
from serving.model_spec import ModelSpec


def _only_input(input_dicts: dict[str, Any]) -> dict[str, Any]:
    """The pipeline keys an Op's input by the previous Op's name; there is exactly one."""
    (request,) = input_dicts.values()
    return request


class ModelOp(Op):
    def __init__(self, handler: ModelHandler, read_op: Op):
        super().__init__(name=handler.spec.name, input_ops=[read_op])
        self.handler = handler

    def init_op(self) -> None:
        self.handler.load()

    def preprocess(self, input_dicts: dict[str, Any], data_id: int = 0, log_id: int = 0
                   ) -> tuple[Any, bool, int | None, str]:
        try:
            batch = self.handler.preprocess(_only_input(input_dicts))
        except BadRequest as error:
            return None, False, BAD_REQUEST, str(error)
        return [batch.feed], False, None, ""

    def postprocess(self, input_data: dict[str, Any], fetch_data: Any, data_id: int = 0,
                    log_id: int = 0) -> tuple[dict[str, str], int | None, str]:
        (outputs,) = fetch_data  # the list feed comes back as a list of one output dict
        keys = image_keys(_only_input(input_data))
        return self.handler.postprocess(keys, outputs), None, ""


class ModelService(WebService):
    def __init__(self, handler: ModelHandler):
        super().__init__(name=handler.spec.service.name)
        self._handler = handler

    def get_pipeline_response(self, read_op: Op) -> Op:
        return ModelOp(self._handler, read_op)


def run(spec: ModelSpec, serving_server: Path, config_file: Path) -> None:
    """Serve in the foreground until killed (the pipeline has no graceful stop)."""
    service = ModelService(ModelHandler(spec, serving_server))
    service.prepare_pipeline_config(yml_file=str(config_file))
    service.run_service()
