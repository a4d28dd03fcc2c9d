"""Model outputs -> per-image JSON-ready results, chosen by the description's `postprocess.type`.

Response schema (one JSON document per image):
- TopK (classifier): [{"class_id": int, "label": str, "score": float}, ...] best first, k long.
- Detection: [{"class_id": int, "label": str, "score": float, "bbox": [x1, y1, x2, y2]}, ...]
  in original image pixels, score >= score_threshold, best first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Result = list[dict[str, Any]]


class Postprocessor(ABC):
    """Outputs of one predictor call -> one result per image, in two steps: `split` cuts the
    batch's outputs per image (the service's Op does it right after the call, so requests batched
    together each get their own part), `image_result` turns one image's part into its result."""

    @abstractmethod
    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[np.ndarray]: ...

    @abstractmethod
    def image_result(self, image_outputs: np.ndarray) -> Result: ...


class TopK(Postprocessor):
    """Classifier probabilities [N, classes] -> the k best classes per image."""

    def __init__(self, labels: Sequence[str], fetches: Sequence[str], k: int = 5):
        self._labels = list(labels)
        self._output = fetches[0]
        self._k = max(1, min(int(k), len(self._labels)))

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[np.ndarray]:
        return list(np.asarray(outputs[self._output]).reshape(count, -1))

    def image_result(self, image_outputs: np.ndarray) -> Result:
        best = np.argsort(-image_outputs, kind="stable")[: self._k]
        return [{"class_id": int(i), "label": self._labels[i], "score": float(image_outputs[i])}
                for i in best]


class Detection(Postprocessor):
    """NMS output [M, 6] (class, score, x1, y1, x2, y2) for the whole batch plus the per-image box
    counts [N] -> thresholded, score-sorted boxes per image. The counts, not a LoD, split the batch:
    the exported NMS outputs carry no LoD at run time (prototxt_patches/traffic_light.yml)."""

    def __init__(self, labels: Sequence[str], fetches: Sequence[str],
                 score_threshold: float = 0.5):
        self._labels = list(labels)
        self._boxes, self._boxes_num = fetches[0], fetches[1]
        self._threshold = float(score_threshold)

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[np.ndarray]:
        boxes = np.asarray(outputs[self._boxes], dtype=np.float32).reshape(-1, 6)
        per_image = np.asarray(outputs[self._boxes_num]).reshape(-1).astype(np.int64)
        if per_image.size != count or per_image.sum() > len(boxes):
            raise ValueError(f"detector output inconsistent: {per_image.tolist()} boxes for "
                             f"{count} images, {len(boxes)} rows")
        starts = np.concatenate([[0], np.cumsum(per_image)[:-1]])
        return [boxes[start:start + n] for start, n in zip(starts, per_image, strict=True)]

    def image_result(self, image_outputs: np.ndarray) -> Result:
        rows = image_outputs[(image_outputs[:, 1] >= self._threshold)
                             & (image_outputs[:, 0] >= 0)]  # class -1 = padding
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]  # NMS output is grouped by class
        return [{"class_id": int(row[0]), "label": self._label(int(row[0])),
                 "score": float(row[1]), "bbox": [float(v) for v in row[2:6]]} for row in rows]

    def _label(self, class_id: int) -> str:
        return self._labels[class_id] if class_id < len(self._labels) else str(class_id)


POSTPROCESSORS: dict[str, type[Postprocessor]] = {"TopK": TopK, "Detection": Detection}


def build_postprocessor(kind: str, labels: Sequence[str], fetches: Sequence[str],
                        params: Mapping[str, Any]) -> Postprocessor:
    if kind not in POSTPROCESSORS:
        raise ValueError(f"unknown postprocess type {kind!r}; known: {sorted(POSTPROCESSORS)}")
    return POSTPROCESSORS[kind](labels, fetches, **params)
