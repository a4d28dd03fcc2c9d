"""Model outputs -> per-image JSON-ready results, chosen by the description's `postprocess.type`.

Response schema (one JSON document per image):
- TopK (classifier): [{"class_id": int, "label": str, "score": float}, ...] best first, k long.
- Detection: [{"class_id": int, "label": str, "score": float, "bbox": [x1, y1, x2, y2]}, ...]
  in original image pixels, score >= score_threshold, best first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Result = list[dict[str, Any]]
Postprocessor = Callable[[Mapping[str, np.ndarray], int], list[Result]]


class TopK:
    """Classifier probabilities [N, classes] -> the k best classes per image."""

    def __init__(self, labels: Sequence[str], fetches: Sequence[str], k: int = 5):
        self._labels = list(labels)
        self._output = fetches[0]
        self._k = max(1, min(int(k), len(self._labels)))

    def __call__(self, outputs: Mapping[str, np.ndarray], count: int) -> list[Result]:
        probabilities = np.asarray(outputs[self._output]).reshape(count, -1)
        results = []
        for row in probabilities:
            best = np.argsort(-row, kind="stable")[: self._k]
            results.append([{"class_id": int(i), "label": self._labels[i], "score": float(row[i])}
                            for i in best])
        return results


class Detection:
    """NMS output [M, 6] (class, score, x1, y1, x2, y2) for the whole batch plus the per-image box
    counts [N] -> thresholded, score-sorted boxes per image. The counts, not a LoD, split the batch:
    the exported models carry no LoD (see the field notes)."""

    def __init__(self, labels: Sequence[str], fetches: Sequence[str],
                 score_threshold: float = 0.5):
        self._labels = list(labels)
        self._boxes, self._boxes_num = fetches[0], fetches[1]
        self._threshold = float(score_threshold)

    def __call__(self, outputs: Mapping[str, np.ndarray], count: int) -> list[Result]:
        boxes = np.asarray(outputs[self._boxes], dtype=np.float32).reshape(-1, 6)
        per_image = np.asarray(outputs[self._boxes_num]).reshape(-1).astype(np.int64)
        if per_image.size != count or per_image.sum() > len(boxes):
            raise ValueError(f"detector output inconsistent: {per_image.tolist()} boxes for "
                             f"{count} images, {len(boxes)} rows")
        starts = np.concatenate([[0], np.cumsum(per_image)[:-1]])
        return [self._image_result(boxes[start:start + n]) for start, n in zip(starts, per_image,
                                                                               strict=True)]

    def _image_result(self, rows: np.ndarray) -> Result:
        rows = rows[(rows[:, 1] >= self._threshold) & (rows[:, 0] >= 0)]  # class -1 = padding
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]  # NMS output is grouped by class
        return [{"class_id": int(row[0]), "label": self._label(int(row[0])),
                 "score": float(row[1]), "bbox": [float(v) for v in row[2:6]]} for row in rows]

    def _label(self, class_id: int) -> str:
        return self._labels[class_id] if class_id < len(self._labels) else str(class_id)


POSTPROCESSORS: dict[str, Callable[..., Postprocessor]] = {"TopK": TopK, "Detection": Detection}


def build_postprocessor(kind: str, labels: Sequence[str], fetches: Sequence[str],
                        params: Mapping[str, Any]) -> Postprocessor:
    if kind not in POSTPROCESSORS:
        raise ValueError(f"unknown postprocess type {kind!r}; known: {sorted(POSTPROCESSORS)}")
    return POSTPROCESSORS[kind](labels, fetches, **params)
