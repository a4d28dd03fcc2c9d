"""One model's request handling, independent of the serving framework (KServe-style stages):
load -> decode (base64 -> checked image) -> preprocess (image -> feed) -> predict (feed ->
outputs) -> postprocess (outputs -> response). The Paddle Serving Op (serving.service) delegates
to it; the parity tests call it directly.

Request: {"image": <base64>} or {"image_0": <base64>, "image_1": ...} (the PaddleClas and
PaddleDetection client shapes); several images are one batch. Response: one JSON string per image
key, in the schema documented in serving.postprocess. Refusals raise ServiceError with a stable
code (serving.errors).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ServiceError
from serving.limits import Limits, check_encoded_size, check_image_header
from serving.model_spec import ModelSpec
from serving.postprocess import Postprocessor, build_postprocessor
from serving.preprocess import Preprocessor, Sample, decode_image

DEFAULT_LIMITS = Limits()
_IMAGE_KEY = re.compile(r"^image(?:_(\d+))?$")
# Keys the pipeline itself may add to a request (dag.py: "pipeline.profile" asks for timings).
PIPELINE_KEYS = frozenset({"pipeline.profile"})
# Reserved response key carrying per-stage seconds from the Op back to the front (which strips
# it): with process ops the Op runs in another process, so the timings travel with the answer.
STAGES_KEY = "@stage_seconds"
# Reserved response key, the same way: how many images the predictor call that served the
# request held (auto-batching merges requests), for the serving_batch_images metric.
BATCH_KEY = "@batch_images"


def image_keys(request: Mapping[str, Any], max_images: int = DEFAULT_LIMITS.max_images
               ) -> list[str]:
    """The request's image keys: `image`, or `image_0`, `image_1`, ... in index order."""
    keys = [key for key in request if _IMAGE_KEY.match(key)]
    unknown = sorted(set(request) - set(keys) - PIPELINE_KEYS)
    if unknown:
        raise ServiceError("UNKNOWN_KEY", f"unknown key(s) {unknown}: send key 'image' or "
                           "'image_0', 'image_1', ... with base64-encoded image bytes")
    if not keys:
        raise ServiceError("MISSING_IMAGE", "no image in the request: send key 'image' or "
                           "'image_0', 'image_1', ... with base64-encoded image bytes")
    if len(keys) > max_images:
        raise ServiceError("TOO_MANY_IMAGES", f"{len(keys)} images in one request; the limit "
                           f"is {max_images}")
    return sorted(keys, key=lambda key: int(_IMAGE_KEY.match(key).group(1) or -1))  # type: ignore[union-attr]


def decode_base64(key: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> bytes:
    if not isinstance(value, str | bytes):
        raise ServiceError("INVALID_BASE64",
                           f"{key}: expected a base64 string, got {type(value).__name__}")
    try:  # the usual payload, one unbroken line: one C pass (the path below copies it twice)
        check_encoded_size(key, len(value), limits)
        data = binascii.a2b_base64(value, strict_mode=True)
    except (ServiceError, binascii.Error, ValueError):  # size: line breaks may be what is over
        return _decode_wrapped_base64(key, value, limits)
    if not data:
        raise ServiceError("EMPTY_IMAGE", f"{key}: empty value (expected base64 image bytes)")
    return data


def _decode_wrapped_base64(key: str, value: str | bytes, limits: Limits) -> bytes:
    """Base64 with line breaks (MIME style), or invalid: the error says what is wrong."""
    text = value.decode("latin1") if isinstance(value, bytes) else value
    compact = "".join(text.split())
    if not compact:
        raise ServiceError("EMPTY_IMAGE", f"{key}: empty value (expected base64 image bytes)")
    check_encoded_size(key, len(compact), limits)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ServiceError("INVALID_BASE64", f"{key}: invalid base64 ({error})") from None
    if not data:
        raise ServiceError("EMPTY_IMAGE", f"{key}: empty image (0 bytes)")
    return data


def decode_checked(key: str, value: Any, limits: Limits) -> np.ndarray:
    """base64 -> RGB image, enforcing the byte and pixel limits before decoding the pixels."""
    data = decode_base64(key, value, limits)
    if len(data) > limits.max_image_bytes:
        raise ServiceError("IMAGE_TOO_LARGE", f"{key}: {len(data)} bytes; the limit is "
                           f"{limits.max_image_bytes} bytes per image")
    check_image_header(key, data, limits)
    try:
        return decode_image(data)
    except ValueError as error:
        raise ServiceError("NOT_AN_IMAGE", f"{key}: {error}") from None


@dataclass
class Prepared:
    """One request's images, decoded and preprocessed, not yet stacked into a feed."""

    keys: list[str]
    samples: list[Sample]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds


@dataclass
class Batch:
    keys: list[str]
    feed: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds


class ModelHandler:
    """Pre- and postprocessing of one described model; `load()` before use.

    One request in one predictor call: `preprocess`, predict, `postprocess`. The service's Op
    uses the finer steps, to predict several requests in one call: `prepare` each request,
    predict on `feed(all samples)`, `split` the outputs per image, `respond` to each request."""

    def __init__(self, spec: ModelSpec, serving_server: Path | None = None,
                 limits: Limits = DEFAULT_LIMITS):
        self.spec = spec
        self.serving_server = serving_server
        self.limits = limits
        self._preprocessor: Preprocessor | None = None
        self._postprocessor: Postprocessor | None = None

    def load(self) -> ModelHandler:
        spec = self.spec
        self._preprocessor = Preprocessor(spec.preprocess_steps(self.serving_server))
        self._postprocessor = build_postprocessor(spec.postprocess.type, spec.labels,
                                                  spec.fetches, spec.postprocess.params)
        return self

    def preprocess(self, request: Mapping[str, Any]) -> Batch:
        prepared = self.prepare(request)
        return Batch(prepared.keys, self.feed(prepared.samples), prepared.seconds)

    def postprocess(self, keys: list[str], outputs: Mapping[str, np.ndarray]) -> dict[str, str]:
        return self.respond(keys, self.split(outputs, len(keys)))

    def prepare(self, request: Mapping[str, Any]) -> Prepared:
        assert self._preprocessor is not None, "call load() first"
        started = time.perf_counter()
        keys = image_keys(request, self.limits.max_images)
        images = [decode_checked(key, request[key], self.limits) for key in keys]
        decoded = time.perf_counter()
        samples = []
        for key, image in zip(keys, images, strict=True):
            try:
                samples.append(self._preprocessor.from_array(image))
            except ValueError as error:  # e.g. smaller than the crop
                raise ServiceError("NOT_AN_IMAGE", f"{key}: {error}") from None
        return Prepared(keys=keys, samples=samples,
                        seconds={"decode": decoded - started,
                                 "preprocess": time.perf_counter() - decoded})

    def feed(self, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
        sources = {
            "image": lambda: stack_padded([s.image for s in samples]),
            "im_shape": lambda: np.array([s.im_shape for s in samples], dtype=np.float32),
            "scale_factor": lambda: np.array([s.scale_factor for s in samples], dtype=np.float32),
        }
        return {name: sources[source]() for name, source in self.spec.feeds.items()}

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[np.ndarray]:
        """The outputs of a call on `count` images -> each image's part, in feed order."""
        assert self._postprocessor is not None, "call load() first"
        return self._postprocessor.split(outputs, count)

    def respond(self, keys: list[str], image_outputs: Sequence[np.ndarray]) -> dict[str, str]:
        """Each image's part of the outputs -> one JSON result per image key."""
        assert self._postprocessor is not None, "call load() first"
        return {key: json.dumps(self._postprocessor.image_result(part))
                for key, part in zip(keys, image_outputs, strict=True)}


def stack_padded(images: list[np.ndarray]) -> np.ndarray:
    """CHW images -> one NCHW batch, zero-padded bottom/right to the largest H and W (what
    PaddleDetection's batching does; im_shape keeps each image's real size)."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = np.zeros((len(images), images[0].shape[0], height, width), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch
