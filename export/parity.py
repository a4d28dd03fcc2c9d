"""Do two engines compute the same thing? Classifier: max abs difference of the probabilities.
Detector: the same boxes per image, matched one to one within a class (NMS output is grouped by
class and equal scores may swap, so rows are matched, not compared by position); a pair is the
same box when its IoU >= MIN_IOU, or, for boxes under a pixel wide (random-init detectors emit
boxes 0.03 px wide, where 0.0005 px moves the IoU to 0.996), when no coordinate differs by more
than COORD_TOLERANCE pixels; scores differ by <= SCORE_TOLERANCE."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from model.engine import Engine

CLASSIFIER_TOLERANCE = 1e-5
MIN_IOU = 0.999
SCORE_TOLERANCE = 1e-4
COORD_TOLERANCE = 0.01  # pixels


@dataclass
class ClassifierParity:
    images: int = 0
    max_abs_diff: float = 0.0
    top1_disagreements: int = 0

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.max_abs_diff <= CLASSIFIER_TOLERANCE

    def add(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> None:
        want, got = reference[0], candidate[0]
        if want.shape != got.shape:
            raise ValueError(f"output shapes differ: {want.shape} vs {got.shape}")
        self.images += len(want)
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(want - got).max()))
        self.top1_disagreements += int((want.argmax(1) != got.argmax(1)).sum())


@dataclass
class DetectorParity:
    """Over the whole NMS output of each image (every row the program returns)."""

    images: int = 0
    boxes: int = 0
    unmatched: int = 0  # rows of either side without a partner
    min_iou: float = 1.0
    max_score_diff: float = 0.0
    max_coord_diff: float = 0.0
    different_boxes: int = 0  # pairs with IoU < MIN_IOU and a coordinate off by > tolerance
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.unmatched == 0 and self.different_boxes == 0 and \
            self.max_score_diff <= SCORE_TOLERANCE

    def add(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> None:
        for want, got in zip(per_image(reference), per_image(candidate), strict=True):
            self._add_image(want, got)

    def _add_image(self, want: np.ndarray, got: np.ndarray) -> None:
        index = self.images
        self.images += 1
        self.boxes += len(want)
        free = np.ones(len(got), bool)
        for row in want:
            candidates = np.flatnonzero(free & (got[:, 0] == row[0]))
            if candidates.size == 0:
                self.unmatched += 1
                self.failures.append(f"image {index}: {row.tolist()} has no partner")
                continue
            ious = iou(row[2:], got[candidates, 2:])
            best = candidates[int(np.argmax(ious - np.abs(got[candidates, 1] - row[1])))]
            free[best] = False
            pair_iou = float(iou(row[2:], got[best:best + 1, 2:])[0])
            coord_diff = float(np.abs(got[best, 2:] - row[2:]).max())
            self.min_iou = min(self.min_iou, pair_iou)
            self.max_score_diff = max(self.max_score_diff, abs(float(got[best, 1] - row[1])))
            self.max_coord_diff = max(self.max_coord_diff, coord_diff)
            if pair_iou < MIN_IOU and coord_diff > COORD_TOLERANCE:
                self.different_boxes += 1
                self.failures.append(f"image {index}: {row.tolist()} vs {got[best].tolist()}")
        if free.any():
            self.unmatched += int(free.sum())
            self.failures.append(f"image {index}: {int(free.sum())} extra row(s)")


def per_image(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """[M, 6] boxes + [N] counts -> N arrays of rows."""
    boxes = np.asarray(outputs[0], np.float32).reshape(-1, 6)
    counts = np.asarray(outputs[1]).reshape(-1).astype(np.int64)
    if counts.sum() > len(boxes):
        raise ValueError(f"{counts.sum()} boxes counted, {len(boxes)} rows")
    return np.split(boxes[: counts.sum()], np.cumsum(counts)[:-1])


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1 y1 x2 y2 box with each row of boxes (continuous coordinates, as
    multiclass_nms3 with normalized=true computes it)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), float(area == 0))


def check_parity(reference: Engine, candidate: Engine, feeds: Iterable[Mapping[str, np.ndarray]],
                 task: str) -> ClassifierParity | DetectorParity:
    """Runs both engines on every feed and accumulates the comparison."""
    report = ClassifierParity() if task == "classification" else DetectorParity()
    for feed in feeds:
        report.add(reference.run(feed), candidate.run(feed))
    return report
