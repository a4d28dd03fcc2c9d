"""evaluation.metrics on hand-made cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import (
    Detection,
    Truth,
    average_precision,
    confusion_matrix,
    iou,
    match,
    mean_average_precision,
    threshold_scores,
    top1,
    width_bucket,
)


def test_confusion_matrix_rows_are_truth_and_top1_is_its_trace() -> None:
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert top1(matrix) == pytest.approx(4 / 6)


def test_iou_uses_inclusive_pixel_corners() -> None:
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0  # touching, no shared pixel
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)


def test_match_is_one_to_one_best_score_first() -> None:
    truths = [Truth("Red", (0, 0, 9, 29)), Truth("Green", (50, 0, 59, 29))]
    detections = [Detection("Red", 0.9, (0, 0, 9, 29)), Detection("Red", 0.8, (1, 0, 10, 29)),
                  Detection("Red", 0.7, (50, 0, 59, 29))]
    hits, found = match(truths, detections, same_label=False)
    assert hits == [True, False, True] and found == [True, True]
    hits, found = match(truths, detections, same_label=True)
    assert hits == [True, False, False] and found == [True, False]


def test_average_precision_of_perfect_and_half_right_rankings() -> None:
    assert average_precision([0.9, 0.8], [True, True], positives=2) == pytest.approx(1.0)
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1
    assert average_precision([0.9, 0.8, 0.7], [False, True, True], 2) == pytest.approx(2 / 3)
    assert average_precision([0.9], [True], positives=4) == pytest.approx(0.25)
    assert average_precision([], [], positives=3) == 0.0
    assert math.isnan(average_precision([0.5], [False], positives=0))


def test_map_averages_the_classes_present_in_the_truth() -> None:
    images = [([Truth("Red", (0, 0, 9, 29)), Truth("Green", (50, 0, 59, 29))],
               [Detection("Red", 0.9, (0, 0, 9, 29)), Detection("Yellow", 0.8, (50, 0, 59, 29))])]
    mean, per_class = mean_average_precision(images, ["Red", "Green", "Yellow"])
    assert per_class == {"Red": 1.0, "Green": 0.0}
    assert mean == pytest.approx(0.5)


def test_recall_by_width_bucket_at_a_threshold() -> None:
    small, medium, large = (0, 0, 9, 27), (100, 0, 119, 55), (200, 0, 239, 111)
    truths = [Truth("Red", small), Truth("Green", medium), Truth("off", large)]
    detections = [Detection("Red", 0.9, small), Detection("Red", 0.6, medium),
                  Detection("off", 0.2, large)]
    assert [width_bucket(box) for box in (small, medium, large)] == ["<16", "16-32", ">32"]
    scores = threshold_scores([(truths, detections)], threshold=0.5)
    assert scores.recall == {"<16": 1.0, "16-32": 1.0, ">32": 0.0, "all": pytest.approx(2 / 3)}
    assert scores.recall_class["16-32"] == 0.0  # found, wrong class
    assert scores.boxes_per_image == 2 and scores.lights_per_image == 3
    assert scores.precision == 0.5  # the Red box on the Green light has the wrong class
    assert scores.lights == {"<16": 1, "16-32": 1, ">32": 1}
    assert np.isnan(threshold_scores([([], [])], 0.5).recall["<16"])
