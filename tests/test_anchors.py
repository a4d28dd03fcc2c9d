"""Anchor fitting (train.anchors): box sizes read from VOC at the network scale, k-means under
1 - IoU, and the default config's anchors matching the generated lights' shape."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from train import anchors
from train import traffic_light_data as data

ROOT = Path(__file__).resolve().parents[1]


def test_fit_recovers_three_box_shapes() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 30.0], [20.0, 60.0], [30.0, 120.0]])
    sizes = np.concatenate([centre * rng.uniform(0.95, 1.05, (200, 2)) for centre in centres])
    fitted, quality = anchors.fit_anchors(sizes, count=3)
    np.testing.assert_allclose(fitted, centres, rtol=0.05)
    assert quality > 0.9


def test_fit_refuses_fewer_boxes_than_anchors() -> None:
    with pytest.raises(ValueError, match="2 boxes cannot fit 9 anchors"):
        anchors.fit_anchors(np.ones((2, 2)), count=9)


def test_box_sizes_are_scaled_to_the_square_input(tmp_path: Path) -> None:
    root = data.generate(tmp_path, data.DatasetSpec(seed=1, train=3, train_easy=3, valid=2))
    sizes = anchors.box_sizes(root, "train.txt", input_size=320)
    expected = []
    for line in (root / "train.txt").read_text().splitlines():
        image, xml = line.split()
        height, width = cv2.imread(str(root / image)).shape[:2]
        for light in data.read_voc_xml(root / xml):
            x1, y1, x2, y2 = light.box
            expected.append(((x2 - x1 + 1) * 320 / width, (y2 - y1 + 1) * 320 / height))
    np.testing.assert_allclose(sizes, expected)
    # the generator draws housings 15-34 px wide at the network input (rounded in the image)
    assert sizes[:, 0].min() >= 13 and sizes[:, 0].max() <= 36


def test_default_config_anchors_are_tall_sorted_and_shared_with_the_target() -> None:
    config = yaml.safe_load((ROOT / "train/configs/traffic_light_default.yml").read_text())
    head = np.array(config["YOLOv3Head"]["anchors"], dtype=float)
    target = next(step["Gt2YoloTarget"] for step in config["TrainReader"]["batch_transforms"]
                  if "Gt2YoloTarget" in step)
    assert np.array_equal(head, np.array(target["anchors"], dtype=float))
    assert (np.diff(head.prod(axis=1)) >= 0).all()  # small to large: masks [6,7,8] are largest
    assert (head[:, 1] > 2 * head[:, 0]).all()  # housings about 2.7x as tall as wide


def test_cli_prints_the_anchors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = data.generate(tmp_path, data.DatasetSpec(seed=2, train=6, train_easy=6, valid=2))
    assert anchors.main(["--data-dir", str(root), "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "mean best IoU" in out
    fitted = yaml.safe_load(out.split("anchors: ", 1)[1])
    assert len(fitted) == 3 and all(h > w for w, h in fitted)
