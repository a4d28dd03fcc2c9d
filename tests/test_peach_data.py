"""The synthetic peach set: PaddleClas layout, read by the project's reader, true to its rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.preprocess import decode_image
from train.peach_data import (
    CROP,
    FRAME,
    LABELS,
    generate_samples,
    label_for,
    read_class_list,
    read_label_list,
    write_dataset,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("peach"), train_count=24, val_count=8, seed=3)


def test_layout_parses_with_the_classification_reader(dataset: Path) -> None:
    assert read_label_list(dataset / "label_list.txt") == list(LABELS)
    assert (dataset / "label_list.txt").read_text() == (
        ROOT / "models/peach/label_list.txt").read_text()
    train = read_class_list(dataset, "train_list.txt")
    val = read_class_list(dataset, "val_list.txt")
    assert (len(train), len(val)) == (24, 8)
    for path, label in train + val:
        assert path.parent.name == LABELS[label]  # folder per class, as in the tutorial's set
        assert decode_image(path.read_bytes()).shape == (FRAME, FRAME, 3)
    assert (dataset / "contact_sheet.png").stat().st_size > 10_000


def test_reader_rejects_a_list_naming_a_missing_image(dataset: Path) -> None:
    (dataset / "broken_list.txt").write_text("train/R0/missing.jpg 0\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        read_class_list(dataset, "broken_list.txt")


def _red_fraction(rgb: np.ndarray, mask: np.ndarray) -> float:
    red, green = rgb[..., 0].astype(float), rgb[..., 1].astype(float)
    return float((red[mask] > 1.8 * green[mask]).mean())


def test_images_follow_the_size_and_colour_rule() -> None:
    for sample in generate_samples("val", 40, seed=11):
        assert label_for(sample.spec) == sample.label
        rgb, mask = decode_image(sample.jpeg), sample.mask
        columns = np.flatnonzero(mask.any(axis=0))
        assert abs(columns.size - sample.spec.diameter) <= 2  # drawn at the declared size
        rows = np.flatnonzero(mask.any(axis=1))
        margin = (FRAME - CROP) // 2  # the whole peach lies inside the serving center crop
        assert min(columns[0], rows[0]) >= margin and max(columns[-1], rows[-1]) < FRAME - margin
        inner = mask & np.roll(mask, 6, 0) & np.roll(mask, -6, 0) & np.roll(mask, 6, 1)
        measured = _red_fraction(rgb, inner)
        assert abs(measured - sample.spec.red_coverage) < 0.15, sample.relative_path


def test_generation_is_deterministic_per_seed() -> None:
    first = [s.jpeg for s in generate_samples("train", 4, seed=5)]
    assert first == [s.jpeg for s in generate_samples("train", 4, seed=5)]
    assert first != [s.jpeg for s in generate_samples("train", 4, seed=6)]
    assert first != [s.jpeg for s in generate_samples("val", 4, seed=5)]
