"""Declarative image preprocessing, in the vocabularies the toolkits already write.

A model declares its steps as a list of `{type: Name, ...params}` mappings: the PaddleClas names
(ResizeImage, CropImage, NormalizeImage, ToCHWImage, as in PaddleClas's inference config) or the
PaddleDetection names (Resize, NormalizeImage, Permute, PadStride, as in the `Preprocess` list of
the infer_cfg.yml that PaddleDetection's export writes). Training, export checks and the services
all run the same steps, so what is served is what was evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

_INTERPOLATIONS = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 2: cv2.INTER_CUBIC,
                   3: cv2.INTER_AREA, 4: cv2.INTER_LANCZOS4}


@dataclass
class Sample:
    """An image on its way to the model, with what detectors need to map boxes back."""

    image: np.ndarray  # HWC uint8 RGB until normalized; CHW float32 after ToCHWImage/Permute
    scale_factor: tuple[float, float] = (1.0, 1.0)  # (y, x): resized / original
    original_shape: tuple[int, int] = field(default=(0, 0))  # (h, w) as decoded

    @property
    def im_shape(self) -> tuple[float, float]:
        """(h, w) of the network input before padding, as PaddleDetection feeds it."""
        h, w = self.original_shape
        return (round(h * self.scale_factor[0]), round(w * self.scale_factor[1]))


Step = Callable[[Sample], Sample]


def use_image_threads(count: int) -> None:
    """Threads OpenCV may use per call for decoding and resizing (its default: every core). A
    service runs one worker per core, so extra threads only compete with the other worker and
    spin between calls (docs/benchmarks.md measures it)."""
    cv2.setNumThreads(count)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> HWC uint8 RGB. Raises ValueError when the bytes are not an image."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image (expected JPEG, PNG, BMP or WebP bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _resize_short(size: int, interp: int = 1) -> Step:
    def resize_short(sample: Sample) -> Sample:
        h, w = sample.image.shape[:2]
        ratio = size / min(h, w)
        target = (round(w * ratio), round(h * ratio))
        sample.image = cv2.resize(sample.image, target, interpolation=_INTERPOLATIONS[interp])
        sample.scale_factor = (target[1] / h * sample.scale_factor[0],
                               target[0] / w * sample.scale_factor[1])
        return sample

    return resize_short


def _resize_image(resize_short: int | None = None, size: int | Sequence[int] | None = None,
                  interpolation: int = 1, **_: Any) -> Step:
    """PaddleClas ResizeImage: by short side, or to a fixed size."""
    if resize_short is not None:
        return _resize_short(resize_short, interpolation)
    height, width = (size, size) if isinstance(size, int) else size  # type: ignore[misc]
    return _resize(target_size=(height, width), keep_ratio=False, interp=interpolation)


def _crop_image(size: int | Sequence[int], **_: Any) -> Step:
    """PaddleClas CropImage: center crop."""
    crop_w, crop_h = (size, size) if isinstance(size, int) else size

    def center_crop(sample: Sample) -> Sample:
        h, w = sample.image.shape[:2]
        if h < crop_h or w < crop_w:
            raise ValueError(f"image {w}x{h} smaller than the {crop_w}x{crop_h} crop")
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        sample.image = sample.image[top:top + crop_h, left:left + crop_w]
        return sample

    return center_crop


def _resize(target_size: int | Sequence[int], keep_ratio: bool = False, interp: int = 1,
            **_: Any) -> Step:
    """PaddleDetection Resize: to target_size (h, w), or within it keeping the aspect ratio."""
    target_h, target_w = (
        (target_size, target_size) if isinstance(target_size, int) else target_size)

    def resize(sample: Sample) -> Sample:
        h, w = sample.image.shape[:2]
        if keep_ratio:
            ratio = min(max(target_h, target_w) / max(h, w), min(target_h, target_w) / min(h, w))
            scale_y = scale_x = ratio
        else:
            scale_y, scale_x = target_h / h, target_w / w
        sample.image = cv2.resize(sample.image, None, fx=scale_x, fy=scale_y,
                                  interpolation=_INTERPOLATIONS[interp])
        sample.scale_factor = (scale_y * sample.scale_factor[0], scale_x * sample.scale_factor[1])
        return sample

    return resize


def _normalize(mean: Sequence[float], std: Sequence[float], scale: float | str | None = None,
               is_scale: bool = True, order: str = "hwc", **_: Any) -> Step:
    """NormalizeImage in both dialects: PaddleClas (`scale`) and PaddleDetection (`is_scale`)."""
    if isinstance(scale, str):  # PaddleClas writes "1.0/255.0"
        numerator, denominator = scale.split("/")
        scale = float(numerator) / float(denominator)
    factor = scale if scale is not None else (1 / 255 if is_scale else 1.0)
    mean_ = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    inv_std = 1 / np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    if order != "hwc":
        raise ValueError(f"NormalizeImage order {order!r} unsupported: images are HWC here")

    def normalize(sample: Sample) -> Sample:
        sample.image = (sample.image.astype(np.float32) * factor - mean_) * inv_std
        return sample

    return normalize


def _to_chw(**_: Any) -> Step:
    def to_chw(sample: Sample) -> Sample:
        sample.image = np.ascontiguousarray(sample.image.transpose(2, 0, 1))
        return sample

    return to_chw


def _pad_stride(stride: int = 0, **_: Any) -> Step:
    """PaddleDetection PadStride: zero-pad CHW so H and W are multiples of `stride`."""

    def pad_stride(sample: Sample) -> Sample:
        if stride <= 0:
            return sample
        c, h, w = sample.image.shape
        padded = np.zeros((c, -(-h // stride) * stride, -(-w // stride) * stride), np.float32)
        padded[:, :h, :w] = sample.image
        sample.image = padded
        return sample

    return pad_stride


STEPS: dict[str, Callable[..., Step]] = {
    "ResizeImage": _resize_image,
    "CropImage": _crop_image,
    "NormalizeImage": _normalize,
    "ToCHWImage": _to_chw,
    "Resize": _resize,
    "Permute": _to_chw,
    "PadStride": _pad_stride,
}


class Preprocessor:
    """Built once from the declared steps; `__call__` maps encoded bytes to a model-ready Sample."""

    def __init__(self, steps: Sequence[Mapping[str, Any]]):
        self._steps = [self._build(step) for step in steps]

    @staticmethod
    def _build(step: Mapping[str, Any]) -> Step:
        params = dict(step)
        name = params.pop("type", None)
        if name not in STEPS:
            raise ValueError(f"unknown preprocessing step {name!r}; known: {sorted(STEPS)}")
        return STEPS[name](**params)

    def from_array(self, rgb: np.ndarray) -> Sample:
        sample = Sample(image=rgb, original_shape=(rgb.shape[0], rgb.shape[1]))
        for step in self._steps:
            sample = step(sample)
        return sample

    def __call__(self, data: bytes) -> Sample:
        return self.from_array(decode_image(data))
