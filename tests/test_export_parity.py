"""export.parity decides pass or fail on crafted outputs: the same rows in another order pass,
a moved box, a missing row, a shifted score or probability fail."""

from __future__ import annotations

import numpy as np

from export.parity import CLASSIFIER_TOLERANCE, ClassifierParity, DetectorParity

ROWS = np.array([[0, 0.9, 10, 10, 50, 90], [3, 0.5, 100, 20, 130, 80]], np.float32)
COUNT = np.array([2], np.int32)


def detector_report(candidate: np.ndarray, count: np.ndarray = COUNT) -> DetectorParity:
    report = DetectorParity()
    report.add([ROWS, COUNT], [candidate, count])
    return report


def test_detector_rows_are_matched_not_compared_by_position() -> None:
    report = detector_report(ROWS[::-1].copy())
    assert report.passed and report.boxes == 2 and report.min_iou == 1.0


def test_a_moved_box_a_missing_row_or_a_shifted_score_fails() -> None:
    moved = ROWS.copy()
    moved[1, 2:] += 2.0
    assert detector_report(moved).different_boxes == 1 and not detector_report(moved).passed
    missing = detector_report(ROWS[:1].copy(), np.array([1], np.int32))
    assert missing.unmatched == 1 and not missing.passed
    shifted = ROWS.copy()
    shifted[0, 1] += 1e-3
    assert not detector_report(shifted).passed


def test_classifier_probabilities_within_the_tolerance_pass() -> None:
    probabilities = np.array([[0.7, 0.2, 0.05, 0.05]], np.float32)
    close, far = ClassifierParity(), ClassifierParity()
    close.add([probabilities], [probabilities + CLASSIFIER_TOLERANCE / 2])
    far.add([probabilities], [probabilities + CLASSIFIER_TOLERANCE * 4])
    assert close.passed and not far.passed and far.top1_disagreements == 0
