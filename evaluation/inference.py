"""The one place the evaluation runs a model: encoded images -> per-image results, in this process,
through the model contract (model.model.Model) with the served model's own preprocessing,
runtime settings and postprocessing (the response schema of model/postprocess.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from model import settings
from model.model import Model
from model.postprocess import Result
from model.spec import ModelSpec, PostprocessSpec
from serving.control.layout import Layout
from serving.control.prepare import ensure_serving_folder
from serving.protocol import request_items

Predict = Callable[[Sequence[bytes]], list[Result]]


PADDLE_FP32 = {"engine": "paddle", "precision": "fp32"}


def served_model_files(spec: ModelSpec, runtime: Mapping[str, Any]) -> Path:
    """The serving_server/ folder the serve stage runs for these settings, built by the export
    stage when missing (e.g. the ONNX model an engine other than Paddle needs)."""
    layout = Layout(models_dir=spec.folder.parent)
    ensure_serving_folder(layout, spec, {key: str(value) for key, value in runtime.items()})
    return layout.serving_server(spec.name)


def load_predict(model_dir: Path, inference_dir: Path | None = None,
                 preprocess: Sequence[Mapping[str, Any]] | None = None,
                 postprocess: Mapping[str, Any] | None = None,
                 runtime: Mapping[str, Any] | None = None) -> Predict:
    """A function mapping encoded images (one predictor call) to their results, for the model
    described by `model_dir`/model.yml, run on the files and engine it is served with. The optional
    arguments replace, for a study, the described inference folder (then run on Paddle Inference
    FP32 unless `runtime` says otherwise), preprocessing steps, postprocess parameters or runtime
    settings."""
    spec = ModelSpec.load(model_dir)
    changes: dict[str, Any] = {}
    if inference_dir is not None:
        changes["inference_dir"] = inference_dir.resolve()
    if preprocess is not None:
        changes["preprocess"] = tuple(dict(step) for step in preprocess)
    if postprocess is not None:
        changes["postprocess"] = PostprocessSpec(spec.postprocess.type,
                                                 {**spec.postprocess.params, **postprocess})
    spec = dataclasses.replace(spec, **changes)
    if inference_dir is None:
        model_dir = served_model_files(spec, runtime or {})
        resolved = settings.resolve(spec.runtime, runtime or {})
    else:  # a study of a Paddle inference folder, not what the service serves
        model_dir = spec.inference_dir
        resolved = settings.resolve(spec.runtime, PADDLE_FP32, runtime or {})
    model = Model(spec, model_dir, resolved).load()

    def predict(images: Sequence[bytes]) -> list[Result]:
        answers = model(request_items(list(images)))
        return [json.loads(answer) for answer in answers.values()]

    return predict


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the evaluation reads from a model description."""

    name: str
    task: str  # classification | detection
    labels: tuple[str, ...]
    inference_dir: Path
    score_threshold: float  # the served one (detectors)


def describe(model_dir: Path) -> ModelInfo:
    spec = ModelSpec.load(model_dir)
    return ModelInfo(spec.name, spec.task, spec.labels, spec.inference_dir,
                     float(spec.postprocess.params.get("score_threshold", 0.0)))

