"""Client output without a server: drawings on Pillow 9.5 and 10+, the human-readable lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clients.common import Outcome, collect_images, describe, draw

DETECTIONS = [{"class_id": 3, "label": "Green", "score": 0.91, "bbox": [40.0, 30.0, 70.0, 90.0]},
              {"class_id": 0, "label": "Red", "score": 0.55, "bbox": [120.0, 5.0, 150.0, 60.0]}]
CLASSES = [{"class_id": 2, "label": "M2", "score": 0.8}, {"class_id": 0, "label": "R0",
                                                          "score": 0.15}]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "scene.jpg"
    Image.new("RGB", (200, 120), (128, 128, 128)).save(path)
    return path


@pytest.fixture(autouse=True)
def pillow_10_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow 10 removed ImageDraw.textsize: drawing must not need it."""
    monkeypatch.delattr(ImageDraw.ImageDraw, "textsize", raising=False)


def test_detections_are_drawn_as_boxes_with_labels(photo: Path, tmp_path: Path) -> None:
    out = np.asarray(Image.open(draw(photo, DETECTIONS, tmp_path / "vis")))
    grey = np.array([128, 128, 128])
    assert (out[60, 40] != grey).any() and (out[60, 70] != grey).any()  # box edges
    assert (out[60, 55] == grey).all()  # inside the box is untouched
    assert (out[:30, 40:100] != grey).any(axis=-1).sum() > 50  # label above the box


def test_classification_is_drawn_as_a_corner_label(photo: Path, tmp_path: Path) -> None:
    out = np.asarray(Image.open(draw(photo, CLASSES, tmp_path / "vis")))
    assert (out[:25, :60] != 128).any(axis=-1).sum() > 100
    assert (out[60:, 100:] == 128).all()


def test_human_readable_lines() -> None:
    assert describe(Outcome("a.jpg", True, CLASSES)) == "a.jpg: M2 (0.800)  [R0 0.150]"
    lines = describe(Outcome("b.jpg", True, DETECTIONS)).splitlines()
    assert lines[0] == "b.jpg: 2 found" and "Green" in lines[1]
    assert "40.0 30.0 70.0 90.0" in lines[1]
    assert describe(Outcome("c.jpg", True, [])) == "c.jpg: nothing found"
    assert describe(Outcome("d.jpg", False, err_no=5000, err_msg="bad")) == \
        "d.jpg: FAILED err_no=5000: bad"


def test_folders_expand_to_their_images(tmp_path: Path, photo: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "b.PNG").write_bytes(b"")
    assert collect_images([tmp_path]) == [tmp_path / "b.PNG", photo]
    with pytest.raises(SystemExit, match="no such file"):
        collect_images([tmp_path / "missing.jpg"])
