"""Accuracy of a loaded model on generated labelled images, per task: top-1 for classifiers,
VOC mAP@0.5 for detectors (ppdet's DetectionMAP, integral, as training evaluates).

Each task has two sets: its validation split as the shipped model's training run generated it
(seed 0), and fresh images from a seed no shipped model was trained or validated on (the
project's tests draw their fresh images from the same seeds).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model.model import Model

FRESH_SEED = {"classification": 2024, "detection": 1000}
SET_SIZES = {"classification": {"val": 200, "fresh": 500},  # images per set
             "detection": {"val": 200, "fresh": 100}}
METRIC = {"classification": "top-1", "detection": "mAP@0.5"}


@dataclass(frozen=True)
class Labelled:
    jpeg: bytes
    label: int = -1  # classifier: the class index
    boxes: np.ndarray | None = None  # detector: [K, 4] x1 y1 x2 y2
    classes: np.ndarray | None = None  # detector: [K] class indices


def peach_images(kind: str, count: int) -> Iterator[Labelled]:
    from train.peach_data import LABELS, generate_samples

    seed = 0 if kind == "val" else FRESH_SEED["classification"]
    for sample in generate_samples("val", count, seed):
        yield Labelled(sample.jpeg, label=LABELS.index(sample.label))


def traffic_light_images(kind: str, count: int) -> Iterator[Labelled]:
    from train import traffic_light_data as data

    seed = 0 if kind == "val" else FRESH_SEED["detection"]
    valid = next(split for split in data.DatasetSpec().splits() if split.name == "valid")
    for index in range(count):
        jpeg, _, lights = data.split_sample(seed, valid, index)
        yield Labelled(jpeg, boxes=np.array([light.box for light in lights], np.float32),
                       classes=np.array([data.LABELS.index(light.label) for light in lights]))


IMAGES = {"classification": peach_images, "detection": traffic_light_images}


def labelled_sets(task: str, scale: float = 1.0) -> dict[str, list[Labelled]]:
    """{"val": [...], "fresh": [...]}; scale < 1 takes a prefix of each (smoke runs)."""
    return {kind: list(IMAGES[task](kind, max(1, int(size * scale))))
            for kind, size in SET_SIZES[task].items()}


def _outputs(model: Model, jpeg: bytes) -> list[np.ndarray]:
    prepared = model.preprocess({"image": base64.b64encode(jpeg).decode()})
    return model.engine.run(model.feed(prepared.samples))


def top1(model: Model, images: list[Labelled]) -> float:
    correct = sum(int(_outputs(model, image.jpeg)[0].argmax()) == image.label
                  for image in images)
    return correct / len(images)


def map50(model: Model, images: list[Labelled]) -> float:
    from ppdet.metrics.map_utils import DetectionMAP

    metric = DetectionMAP(class_num=len(model.spec.labels), overlap_thresh=0.5,
                          map_type="integral", catid2name=dict(enumerate(model.spec.labels)))
    for image in images:
        rows, counts = _outputs(model, image.jpeg)[:2]
        found = rows[: int(counts[0])]
        metric.update(found[:, 2:], found[:, 1], found[:, 0], image.boxes,
                      image.classes.reshape(-1, 1))
    metric.accumulate()
    return float(metric.get_map())


def accuracy(model: Model, images: list[Labelled]) -> float:
    return (top1 if model.spec.task == "classification" else map50)(model, images)
