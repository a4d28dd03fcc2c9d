"""The independent evaluation generators follow the training sets' class rules, in the tutorials'
on-disk formats, and share no drawing code with train/."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluation import peach_scenes, score, traffic_scenes
from train import traffic_light_data

ROOT = Path(__file__).resolve().parents[1]


def test_the_generators_import_no_training_renderer_and_training_never_imports_them() -> None:
    """Only formats and the contact sheet are shared (own-val, in evaluation/__main__.py, is the
    training generator's on purpose)."""
    allowed = {("train.common", "write_contact_sheet"), ("train", "common")}
    allowed |= {("train.traffic_light_data", name) for name in
                ("LABELS", "Light", "read_voc_xml", "voc_xml", "write_contact_sheet")}
    for path in (ROOT / "evaluation" / f"{name}.py" for name in ("peach_scenes", "traffic_scenes")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("train"):
                for alias in node.names:
                    assert (node.module, alias.name) in allowed, f"{path.name}: {alias.name}"
    for path in (ROOT / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                    alias.name for alias in node.names]
                assert not any(m.startswith("evaluation") for m in modules), path


@pytest.mark.parametrize("index", range(12))
def test_peach_size_and_blush_follow_the_rule(index: int) -> None:
    rng = np.random.default_rng([peach_scenes.STREAM, 5, index])
    draw = peach_scenes.sample_draw(index, rng)
    rendered = peach_scenes.render(draw, rng)
    height, width = rendered.rgb.shape[:2]
    assert (width, height) == draw.size
    short = min(width, height)
    assert short in peach_scenes.SHORT_SIDES
    inside = rendered.mask > 0.5
    columns = np.flatnonzero(inside.any(axis=0))
    rows = np.flatnonzero(inside.any(axis=1))
    diameter_ref = columns.size * peach_scenes.REFERENCE / short  # in the 256 reference frame
    assert abs(diameter_ref - draw.diameter_ref) <= 2 * peach_scenes.REFERENCE / short + 1
    low, high = peach_scenes.DIAMETERS[draw.label]
    assert low <= draw.diameter_ref <= high
    crop = short * peach_scenes.CROP_SHARE  # the served centre crop holds the whole peach
    assert columns[0] >= (width - crop) / 2 - 1 and columns[-1] <= (width + crop) / 2 + 1
    assert rows[0] >= (height - crop) / 2 - 1 and rows[-1] <= (height + crop) / 2 + 1
    share = float((rendered.blush[inside] >= 0.5).mean())
    assert abs(share - draw.red_share) < 0.03
    red_low, red_high = peach_scenes.RED_SHARE[draw.label]
    assert red_low <= draw.red_share <= red_high


def test_peach_set_layout_and_determinism(tmp_path: Path) -> None:
    first = peach_scenes.write_set(tmp_path / "a", 8, seed=3, sheet_count=8)
    again = peach_scenes.write_set(tmp_path / "b", 8, seed=3, sheet_count=8)
    samples = score.read_class_list(first, peach_scenes.LIST_FILE)
    assert [label for _, label in samples] == [0, 1, 2, 3] * 2
    for path, label in samples:
        assert path.parent.name == peach_scenes.LABELS[label]
        assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR) \
            is not None
        assert path.read_bytes() == (again / path.relative_to(first)).read_bytes()
    assert (first / "label_list.txt").read_text() == (
        ROOT / "models/peach/label_list.txt").read_text()
    assert cv2.imread(str(first / "contact_sheet.png")) is not None


def test_traffic_scenes_follow_the_rule(tmp_path: Path) -> None:
    root = traffic_scenes.write_set(tmp_path, 16, seed=4, sheet_count=4)
    samples = score.read_voc_list(root, traffic_scenes.LIST_FILE)
    widths, labels, sizes = [], set(), set()
    for path, truths in samples:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        height, width = image.shape[:2]
        sizes.add((width, height))
        assert (width, height) in traffic_scenes.FRAME_SIZES
        assert 1 <= len(truths) <= 6
        for truth in truths:
            x1, y1, x2, y2 = (int(v) for v in truth.box)
            assert 0 <= x1 < x2 < width and 0 <= y1 < y2 < height
            box_w, box_h = x2 - x1 + 1, y2 - y1 + 1
            assert 2.4 * box_w <= box_h <= 3.1 * box_w  # a vertical three-lamp housing
            widths.append(box_w)
            labels.add(truth.label)
            if truth.label != "off" and box_w >= 20:  # the lit lamp is the brightest third
                thirds = [image[y1 + i * box_h // 3:y1 + (i + 1) * box_h // 3, x1:x2 + 1]
                          for i in range(3)]
                brightest = int(np.argmax([t.max(axis=2).mean() for t in thirds]))
                assert brightest == traffic_scenes.LIT[truth.label][0], (path, truth)
    assert min(widths) >= 8 and max(widths) <= 60
    assert np.mean(np.array(widths) < 16) > 0.2  # log-uniform: many small lights
    assert len(sizes) > 5 and labels <= set(traffic_light_data.LABELS)
    assert (root / "contact_sheet.png").is_file()
    assert (root / "contact_sheet_lights.png").is_file()
