"""train.arrow_probe: the instrument that showed the detector blind to arrow direction."""

from __future__ import annotations

from pathlib import Path

import paddle
import pytest

from train import arrow_probe, detector
from train import traffic_light_data as data

pytestmark = pytest.mark.integration  # a child interpreter or a real model each


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = data.DatasetSpec(seed=3, train=2, train_easy=2, valid=60)
    return data.generate(tmp_path_factory.mktemp("arrows"), spec)


def test_lamp_pixels_tell_left_from_right_and_features_are_probed_per_level(
        scenes: Path) -> None:
    paddle.seed(0)
    model, preprocessor = arrow_probe.load_checkpoint(detector.DEFAULT_CONFIG, weights=None)
    accuracies = arrow_probe.probe(model, preprocessor, scenes, "valid.txt", scenes=60)
    # The crop must sit on the lit lamp: anywhere else Left and Right look alike (~0.5).
    assert accuracies["raw lamp pixels"] >= 0.9
    levels = {"backbone/8", "backbone/16", "backbone/32", "neck/8", "neck/16", "neck/32"}
    assert set(accuracies) == {"raw lamp pixels"} | {f"{level} @ {where}" for level in levels
                                                     for where in ("lamp", "centre")}
    assert all(0.0 <= value <= 1.0 for value in accuracies.values())


def test_too_few_arrows_is_an_error_that_says_so(scenes: Path) -> None:
    model, preprocessor = arrow_probe.load_checkpoint(detector.DEFAULT_CONFIG, weights=None)
    with pytest.raises(ValueError, match="too few arrow lights"):
        arrow_probe.probe(model, preprocessor, scenes, "valid.txt", scenes=1)
