"""One described model, run in this process (KServe-style): built from its description, `load()`
once, then per request `preprocess` -> `predict` -> `postprocess`. `predict` takes the images of
several requests at once, the batch API a serving pipeline uses to share a predictor call;
calling the model runs the three stages on one request.

Request: {"image": <base64>} or {"image_0": <base64>, ...} (model.request). Response: one JSON
string per image key, in the schema of model.postprocess. Refusals raise RequestError with a
stable code (model.errors).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.engine import PaddleEngine
from model.errors import RequestError
from model.postprocess import build_postprocessor
from model.preprocess import Preprocessor, Sample
from model.request import decode_checked, image_keys
from model.settings import Settings
from model.spec import ModelSpec, ModelSpecError


@dataclass
class Prepared:
    """One request's images, decoded and preprocessed, not yet stacked into a feed."""

    keys: list[str]
    samples: list[Sample]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds


class Model:
    """Pre- and postprocessing are built from the description at once (cheap, and a bad
    description fails here); `load()` creates the engine, after which the model is `ready`."""

    def __init__(self, spec: ModelSpec, model_dir: Path, settings: Settings | None = None):
        """model_dir: the folder of the model files to run (a serving_server/ folder, or the
        description's inference/ folder)."""
        self.spec = spec
        self.model_dir = model_dir
        self.settings = settings or Settings()
        self._preprocessor = Preprocessor(spec.preprocess_steps(model_dir))
        self._postprocessor = build_postprocessor(spec.postprocess.type, spec.labels,
                                                  spec.fetches, spec.postprocess.params)
        self._engine: PaddleEngine | None = None

    @property
    def ready(self) -> bool:
        return self._engine is not None

    def load(self) -> Model:
        engine = PaddleEngine(self.model_dir, self.settings)
        _check_interface(self.spec, engine.input_names, engine.output_names)
        self._engine = engine
        return self

    def __call__(self, request: Mapping[str, Any]) -> dict[str, str]:
        """One request, start to end, in this process."""
        prepared = self.preprocess(request)
        return self.postprocess(prepared.keys, self.predict(prepared.samples))

    def preprocess(self, request: Mapping[str, Any]) -> Prepared:
        """Check and decode the request's images, and replay the declared preprocessing."""
        started = time.perf_counter()
        limits = self.settings.limits
        keys = image_keys(request, limits.max_images)
        images = [decode_checked(key, request[key], limits) for key in keys]
        decoded = time.perf_counter()
        samples = []
        for key, image in zip(keys, images, strict=True):
            try:
                samples.append(self._preprocessor.from_array(image))
            except ValueError as error:  # e.g. smaller than the crop
                raise RequestError("NOT_AN_IMAGE", f"{key}: {error}") from None
        return Prepared(keys=keys, samples=samples,
                        seconds={"decode": decoded - started,
                                 "preprocess": time.perf_counter() - decoded})

    def predict(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """One engine call for all `samples` (of one request or several) -> each image's part
        of the outputs, in sample order."""
        if self._engine is None:
            raise RuntimeError(f"{self.spec.name}: predict() before load()")
        outputs = self._engine.run(self.feed(samples))
        named = dict(zip(self.spec.fetches, outputs, strict=True))
        return self._postprocessor.split(named, len(samples))

    def postprocess(self, keys: Sequence[str], image_outputs: Sequence[np.ndarray]
                    ) -> dict[str, str]:
        """Each image's part of the outputs -> one JSON result per image key."""
        return {key: json.dumps(self._postprocessor.image_result(part))
                for key, part in zip(keys, image_outputs, strict=True)}

    def feed(self, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
        """The engine's inputs for `samples`, by the input names the description declares."""
        sources = {
            "image": lambda: stack_padded([s.image for s in samples]),
            "im_shape": lambda: np.array([s.im_shape for s in samples], dtype=np.float32),
            "scale_factor": lambda: np.array([s.scale_factor for s in samples], dtype=np.float32),
        }
        return {name: sources[source]() for name, source in self.spec.feeds.items()}


def _check_interface(spec: ModelSpec, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """The description's feeds must be the program's inputs, and its fetches as many as the
    program's outputs (they name them in order)."""
    if sorted(spec.feeds) != sorted(inputs):
        raise ModelSpecError(f"{spec.name}: model.yml feeds {sorted(spec.feeds)} are not the "
                             f"model's inputs {sorted(inputs)}")
    if len(spec.fetches) != len(outputs):
        raise ModelSpecError(f"{spec.name}: model.yml names {len(spec.fetches)} fetches "
                             f"{list(spec.fetches)} for the model's {len(outputs)} outputs "
                             f"{list(outputs)}")


def stack_padded(images: list[np.ndarray]) -> np.ndarray:
    """CHW images -> one NCHW batch, zero-padded bottom/right to the largest H and W (what
    PaddleDetection's batching does; im_shape keeps each image's real size)."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = np.zeros((len(images), images[0].shape[0], height, width), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch
