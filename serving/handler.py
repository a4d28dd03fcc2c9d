"""One model's request handling, independent of the serving framework (KServe-style stages):
load -> preprocess (request -> feed) -> predict (feed -> outputs) -> postprocess (outputs ->
response). The Paddle Serving Op (serving.service) delegates to it; the parity test and any
future HTTP front of our own can call it directly.

Request: {"image": <base64>} or {"image_0": <base64>, "image_1": ...} (the PaddleClas and
PaddleDetection client shapes); several images are one batch. Response: one JSON string per image
key, in the schema documented in serving.postprocess.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.model_spec import ModelSpec
from serving.postprocess import Postprocessor, build_postprocessor
from serving.preprocess import Preprocessor, Sample

# Paddle Serving's own "user input error" code (pipeline/error_catch.py, INPUT_PARAMS_ERROR), so
# clients see one code for every request the service refuses.
BAD_REQUEST = 5000
MAX_IMAGES_PER_REQUEST = 64
_IMAGE_KEY = re.compile(r"^image(?:_(\d+))?$")


class BadRequest(ValueError):
    """The request itself is wrong (no image, bad base64, not an image): the client must fix it."""


def image_keys(request: Mapping[str, Any]) -> list[str]:
    """The request's image keys: `image`, or `image_0`, `image_1`, ... in index order."""
    keys = [key for key in request if _IMAGE_KEY.match(key)]
    if not keys:
        raise BadRequest(f"no image in the request (keys {sorted(request)}): send key 'image' "
                         "or 'image_0', 'image_1', ... with base64-encoded image bytes")
    if len(keys) > MAX_IMAGES_PER_REQUEST:
        raise BadRequest(f"{len(keys)} images in one request; the limit is "
                         f"{MAX_IMAGES_PER_REQUEST}")
    return sorted(keys, key=lambda key: int(_IMAGE_KEY.match(key).group(1) or -1))  # type: ignore[union-attr]


def decode_base64(key: str, value: Any) -> bytes:
    if not isinstance(value, str | bytes):
        raise BadRequest(f"{key}: expected a base64 string, got {type(value).__name__}")
    text = value.decode("latin1") if isinstance(value, bytes) else value
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"{key}: invalid base64 ({error})") from None
    if not data:
        raise BadRequest(f"{key}: empty image")
    return data


@dataclass
class Batch:
    keys: list[str]
    feed: dict[str, np.ndarray]


class ModelHandler:
    """Pre- and postprocessing of one described model; `load()` before use."""

    def __init__(self, spec: ModelSpec, serving_server: Path | None = None):
        self.spec = spec
        self.serving_server = serving_server
        self._preprocessor: Preprocessor | None = None
        self._postprocessor: Postprocessor | None = None

    def load(self) -> ModelHandler:
        spec = self.spec
        self._preprocessor = Preprocessor(spec.preprocess_steps(self.serving_server))
        self._postprocessor = build_postprocessor(spec.postprocess.type, spec.labels,
                                                  spec.fetches, spec.postprocess.params)
        return self

    def preprocess(self, request: Mapping[str, Any]) -> Batch:
        assert self._preprocessor is not None, "call load() first"
        keys = image_keys(request)
        samples = []
        for key in keys:
            data = decode_base64(key, request[key])
            try:
                samples.append(self._preprocessor(data))
            except ValueError as error:
                raise BadRequest(f"{key}: {error}") from None
        return Batch(keys=keys, feed=self._feed(samples))

    def postprocess(self, keys: list[str], outputs: Mapping[str, np.ndarray]) -> dict[str, str]:
        assert self._postprocessor is not None, "call load() first"
        results = self._postprocessor(outputs, len(keys))
        return {key: json.dumps(result) for key, result in zip(keys, results, strict=True)}

    def _feed(self, samples: list[Sample]) -> dict[str, np.ndarray]:
        sources = {
            "image": lambda: stack_padded([s.image for s in samples]),
            "im_shape": lambda: np.array([s.im_shape for s in samples], dtype=np.float32),
            "scale_factor": lambda: np.array([s.scale_factor for s in samples], dtype=np.float32),
        }
        return {name: sources[source]() for name, source in self.spec.feeds.items()}


def stack_padded(images: list[np.ndarray]) -> np.ndarray:
    """CHW images -> one NCHW batch, zero-padded bottom/right to the largest H and W (what
    PaddleDetection's batching does; im_shape keeps each image's real size)."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = np.zeros((len(images), images[0].shape[0], height, width), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch
