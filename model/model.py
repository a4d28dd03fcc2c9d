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

from model.engine import Engine, build_engine
from model.errors import RequestError
from model.postprocess import build_postprocessor
from model.preprocess import Preprocessor, Sample
from model.request import CheckedImage, check_request, decode_checked
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
        self._engine: Engine | None = None

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        """The engine `load()` built."""
        if self._engine is None:
            raise RuntimeError(f"{self.spec.name}: the engine is used before load()")
        return self._engine

    def load(self) -> Model:
        """Build the engine the settings name (model.engine.build_engine)."""
        engine = build_engine(self.model_dir, self.settings)
        _check_interface(self.spec, engine.input_names, engine.output_names)
        self._engine = engine
        return self

    def __call__(self, request: Mapping[str, Any]) -> dict[str, str]:
        """One request, start to end, in this process."""
        prepared = self.preprocess(request)
        return self.postprocess(prepared.keys, self.predict(prepared.samples))

    def check(self, request: Mapping[str, Any]) -> list[CheckedImage]:
        """The request's images within every limit, not decoded yet (model.request)."""
        return check_request(request, self.settings.limits)

    def preprocess(self, request: Mapping[str, Any],
                   checked: Sequence[CheckedImage] | None = None) -> Prepared:
        """Check the request's images (unless `checked` already holds them), then decode each
        and replay the declared preprocessing on it, one image at a time: a decoded image is
        dropped before the next is decoded."""
        started = time.perf_counter()
        images = self.check(request) if checked is None else checked
        decoding = preprocessing = 0.0
        samples = []
        for image in images:
            decode_started = time.perf_counter()
            pixels = decode_checked(image)
            preprocess_started = time.perf_counter()
            try:
                samples.append(self._preprocessor.from_array(pixels))
            except ValueError as error:  # e.g. smaller than the crop
                raise RequestError("NOT_AN_IMAGE", f"{image.key}: {error}") from None
            del pixels
            decoding += preprocess_started - decode_started
            preprocessing += time.perf_counter() - preprocess_started
        checking = time.perf_counter() - started - decoding - preprocessing
        return Prepared(keys=[image.key for image in images], samples=samples,
                        seconds={"decode": checking + decoding, "preprocess": preprocessing})

    def predict(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """One engine call for all `samples` (of one request or several) -> each image's part
        of the outputs, in sample order."""
        outputs = self.engine.run(self.feed(samples))
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
