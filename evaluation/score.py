"""Score a model folder on an on-disk dataset: a PaddleClas list for classifiers, a VOC list for
detectors. Both read the data the way the tutorials lay it out, so a user's own set scores too."""

from __future__ import annotations

import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluation import metrics
from evaluation.inference import Predict

CLASSIFIER_BATCH = 8


@dataclass(frozen=True)
class Timing:
    """Wall time of the predict calls (decode + preprocess + predictor + postprocess)."""

    ms_per_image: float  # median over calls, per image
    ms_min: float
    ms_max: float


def _timed_calls(predict: Predict, batches: Iterator[list[bytes]]
                 ) -> tuple[list[list[dict[str, Any]]], Timing]:
    results: list[list[dict[str, Any]]] = []
    per_image: list[float] = []
    for batch in batches:
        started = time.perf_counter()
        results += predict(batch)
        per_image.append((time.perf_counter() - started) * 1000 / len(batch))
    return results, Timing(statistics.median(per_image), min(per_image), max(per_image))


def read_class_list(root: Path, list_file: str) -> list[tuple[Path, int]]:
    """PaddleClas list ("relative/path label" lines) -> (path, label id)."""
    pairs = []
    for line in (root / list_file).read_text().splitlines():
        if line.strip():
            relative, label = line.rsplit(maxsplit=1)
            pairs.append((root / relative, int(label)))
    return pairs


def score_classifier(predict: Predict, root: Path, list_file: str, labels: Sequence[str]
                     ) -> dict[str, Any]:
    samples = read_class_list(root, list_file)
    batches = (
        [path.read_bytes() for path, _ in samples[start:start + CLASSIFIER_BATCH]]
        for start in range(0, len(samples), CLASSIFIER_BATCH))
    results, timing = _timed_calls(predict, batches)
    predicted = [result[0]["class_id"] for result in results]
    matrix = metrics.confusion_matrix([label for _, label in samples], predicted, len(labels))
    return {"images": len(samples), "top1": round(metrics.top1(matrix), 4),
            "confusion": {"labels": list(labels), "rows_true_columns_predicted": matrix.tolist()},
            "timing": asdict(timing)}


def read_voc_list(root: Path, list_file: str) -> list[tuple[Path, list[metrics.Truth]]]:
    """VOC list ("image xml" lines) -> (image path, its boxes)."""
    samples = []
    for line in (root / list_file).read_text().splitlines():
        if not line.strip():
            continue
        image, xml = line.split()
        truths = []
        for obj in ET.parse(root / xml).findall("object"):
            box = obj.find("bndbox")
            assert box is not None, f"{root / xml}: object without bndbox"
            truths.append(metrics.Truth(obj.findtext("name", ""), tuple(
                float(box.findtext(tag, "nan")) for tag in ("xmin", "ymin", "xmax", "ymax"))))
        samples.append((root / image, truths))
    return samples


DETECTOR_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)


def score_detector(predict: Predict, root: Path, list_file: str, labels: Sequence[str],
                   served_threshold: float) -> dict[str, Any]:
    """`predict` must return every box the model keeps (score threshold 0): mAP needs them all;
    the served view is then taken at `served_threshold` and at DETECTOR_THRESHOLDS."""
    samples = read_voc_list(root, list_file)
    results, timing = _timed_calls(predict, ([path.read_bytes()] for path, _ in samples))
    images = [(truths, [metrics.Detection(box["label"], box["score"], box["bbox"])
                        for box in result]) for (_, truths), result in zip(samples, results,
                                                                            strict=True)]
    mean_ap, per_class = metrics.mean_average_precision(images, labels)
    thresholds = sorted({*DETECTOR_THRESHOLDS, served_threshold})
    return {"images": len(samples), "map50": round(mean_ap, 4),
            "ap50": {k: round(v, 4) for k, v in per_class.items()},
            "served_threshold": served_threshold,
            "at_threshold": [_rounded(asdict(metrics.threshold_scores(images, t)))
                             for t in thresholds],
            "timing": asdict(timing)}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
