"""Scores: classifier top-1 and confusion matrix; detector VOC mAP@0.5, recall by housing width,
boxes per image.

Boxes use PaddleDetection's VOC convention (ppdet/metrics/map_utils.py): pixel coordinates with
inclusive corners, so a box's width is x2 - x1 + 1, for ground truth and predictions alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_MATCH = 0.5
# Housing width buckets in original-image pixels: (name, lowest width, first width not in it).
WIDTH_BUCKETS = (("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), (">32", 32.0, float("inf")))

Box = Sequence[float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Truth:
    label: str
    box: Box


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def top1(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / max(1, matrix.sum()))


def iou(a: Box, b: Box) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    inter_h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    area = lambda box: (box[2] - box[0] + 1) * (box[3] - box[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def match(truths: Sequence[Truth], detections: Sequence[Detection], same_label: bool
          ) -> tuple[list[bool], list[bool]]:
    """Greedy VOC matching, best score first: each detection takes the unmatched truth it overlaps
    most (IoU >= 0.5; of its own label when `same_label`). Returns (detection is a true positive,
    truth was found)."""
    found = [False] * len(truths)
    hits = []
    for detection in sorted(detections, key=lambda d: -d.score):
        best, best_iou = -1, IOU_MATCH
        for index, truth in enumerate(truths):
            if found[index] or (same_label and truth.label != detection.label):
                continue
            overlap = iou(detection.box, truth.box)
            if overlap >= best_iou:
                best, best_iou = index, overlap
        if best >= 0:
            found[best] = True
        hits.append(best >= 0)
    return hits, found


def average_precision(scores: Sequence[float], hits: Sequence[bool], positives: int) -> float:
    """Area under the interpolated precision-recall curve (VOC 2010+, ppdet's 'integral')."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    true_pos = np.cumsum(np.asarray(hits, np.float64)[order]) if len(order) else np.zeros(0)
    recall = np.concatenate([[0.0], true_pos / positives, [1.0]])
    precision = np.concatenate([[1.0], true_pos / np.arange(1, len(order) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(images: Sequence[tuple[Sequence[Truth], Sequence[Detection]]],
                           labels: Sequence[str]) -> tuple[float, dict[str, float]]:
    """VOC mAP@0.5 over the classes present in the truth, and each class's AP."""
    per_class: dict[str, float] = {}
    for label in labels:
        scores: list[float] = []
        hits: list[bool] = []
        positives = 0
        for truths, detections in images:
            own_truths = [t for t in truths if t.label == label]
            own = [d for d in detections if d.label == label]
            positives += len(own_truths)
            image_hits, _ = match(own_truths, own, same_label=True)
            scores += [d.score for d in sorted(own, key=lambda d: -d.score)]
            hits += image_hits
        if positives:
            per_class[label] = average_precision(scores, hits, positives)
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return mean, per_class


def width_bucket(box: Box) -> str:
    width = box[2] - box[0] + 1
    return next(name for name, low, high in WIDTH_BUCKETS if low <= width < high)


@dataclass(frozen=True)
class ThresholdScores:
    """What a client sees at a score threshold."""

    threshold: float
    recall: dict[str, float]  # bucket -> share of lights localised (IoU >= 0.5, any class)
    recall_class: dict[str, float]  # bucket -> share found with the right class
    lights: dict[str, int]  # bucket -> lights
    boxes_per_image: float
    lights_per_image: float
    precision: float  # share of the kept boxes on a light, with its class (one box per light)


def threshold_scores(images: Sequence[tuple[Sequence[Truth], Sequence[Detection]]],
                     threshold: float) -> ThresholdScores:
    found: dict[str, list[bool]] = {name: [] for name, _, _ in WIDTH_BUCKETS}
    found_class: dict[str, list[bool]] = {name: [] for name, _, _ in WIDTH_BUCKETS}
    boxes = right_boxes = 0
    for truths, detections in images:
        kept = [d for d in detections if d.score >= threshold]
        boxes += len(kept)
        _, located = match(truths, kept, same_label=False)
        right, classified = match(truths, kept, same_label=True)
        right_boxes += sum(right)
        for truth, hit, right in zip(truths, located, classified, strict=True):
            found[width_bucket(truth.box)].append(hit)
            found_class[width_bucket(truth.box)].append(right)
    share = lambda flags: float(np.mean(flags)) if flags else float("nan")  # noqa: E731
    everything = [flag for flags in found.values() for flag in flags]
    everything_class = [flag for flags in found_class.values() for flag in flags]
    return ThresholdScores(
        threshold=threshold,
        recall={**{k: share(v) for k, v in found.items()}, "all": share(everything)},
        recall_class={**{k: share(v) for k, v in found_class.items()},
                      "all": share(everything_class)},
        lights={k: len(v) for k, v in found.items()},
        boxes_per_image=boxes / max(1, len(images)),
        lights_per_image=sum(len(t) for t, _ in images) / max(1, len(images)),
        precision=right_boxes / boxes if boxes else float("nan"))
