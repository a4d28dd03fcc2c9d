"""The ONNX models a serving folder holds for the ONNX engines (model.engine.ONNX_FILES): the
FP32 translation, checked against Paddle Inference on the description's sample images before it
is kept, and the INT8 model quantised from it on the description's calibration images.

Images become engine feeds through the model contract (model.model.Model: decode, the declared
preprocessing, the feed stacking), exactly as the service feeds them.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.model_io import InferenceModel
from export.onnx import export_onnx
from export.parity import check_parity
from export.quantize import CALIBRATION_IMAGES, quantize_int8
from model import settings
from model.engine import ONNX_FILES
from model.model import Model
from model.spec import ModelSpec

log = logging.getLogger("export")

PARITY_IMAGES = 8  # sample images compared at export, in calls of PARITY_BATCH as served
PARITY_BATCH = 4  # the service's default batch_size


def image_feeds(model: Model, jpegs: Sequence[bytes], per_call: int) -> list[dict[str, np.ndarray]]:
    """The engine feeds of `jpegs`, `per_call` images per feed, preprocessed as served."""
    samples = [sample for jpeg in jpegs
               for sample in model.preprocess({"image": base64.b64encode(jpeg).decode()}).samples]
    return [model.feed(samples[start:start + per_call])
            for start in range(0, len(samples), per_call)]


def engine_model(spec: ModelSpec, folder: Path, engine: str, precision: str = "fp32") -> Model:
    """The described model on `engine`, with the description's other runtime settings."""
    resolved = settings.resolve(spec.runtime, {"engine": engine, "precision": precision})
    return Model(spec, folder, resolved)


def check_onnx_parity(spec: ModelSpec, folder: Path) -> None:
    """ONNX Runtime on folder/inference.onnx must answer the sample images like Paddle."""
    reference = engine_model(spec, folder, "paddle").load()
    candidate = engine_model(spec, folder, "onnxruntime").load()
    feeds = image_feeds(reference, spec.sample_images(PARITY_IMAGES), PARITY_BATCH)
    report = check_parity(reference.engine, candidate.engine, feeds, spec.task)
    if not report.passed:
        raise ExportError(f"{spec.name}: the ONNX model does not answer like the Paddle program "
                          f"on {PARITY_IMAGES} sample images: {vars(report)}")
    log.info("  ONNX Runtime answers %d sample images like Paddle Inference: %s",
             report.images, {k: v for k, v in vars(report).items() if k != "failures"})


def write_onnx_models(model: InferenceModel, folder: Path, description: ModelSpec | None,
                      int8: bool) -> list[Path]:
    """folder/inference.onnx (+ inference_int8.onnx); parity-checked when a description is
    given, which INT8 needs for its calibration images."""
    if int8 and description is None:
        raise ExportError("--int8 needs --model: the description names the calibration images")
    written = [export_onnx(model, folder / ONNX_FILES["fp32"])]
    if description is not None:
        check_onnx_parity(description, folder)
    if int8 and description is not None:
        calibration = image_feeds(engine_model(description, folder, "onnxruntime"),
                                  description.calibration_images(CALIBRATION_IMAGES), 1)
        written.append(quantize_int8(written[0], folder / ONNX_FILES["int8"], calibration))
    return written
