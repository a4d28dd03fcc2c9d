"""The synthetic traffic-light dataset: deterministic, VOC layout paddledet reads, sane boxes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from ppdet.data.source.voc import VOCDataSet

from train import traffic_light_data as data

ROOT = Path(__file__).resolve().parents[1]
SMALL = data.DatasetSpec(seed=3, train=8, train_easy=8, valid=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.generate(tmp_path_factory.mktemp("traffic_light"), SMALL)


def digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "contact_sheet.png")
    sha = hashlib.sha256()
    for path in files:
        sha.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()


def test_same_seed_same_files_other_seed_other_files(dataset: Path, tmp_path: Path) -> None:
    assert digest(data.generate(tmp_path / "again", SMALL)) == digest(dataset)
    other = data.DatasetSpec(seed=4, train=8, train_easy=8, valid=4)
    assert digest(data.generate(tmp_path / "other", other)) != digest(dataset)


def test_label_list_matches_the_shipped_model(dataset: Path) -> None:
    shipped = (ROOT / "models" / "traffic_light" / "label_list.txt").read_text().split()
    assert (dataset / "label_list.txt").read_text().split() == shipped
    assert shipped == ["Red", "RedLeft", "RedRight", "Green", "GreenLeft", "GreenRight",
                       "Yellow", "off"]


@pytest.mark.parametrize(("split", "count"), [("train", 8), ("train_easy", 8), ("valid", 4)])
def test_paddledet_vocdataset_reads_every_split(dataset: Path, split: str, count: int) -> None:
    voc = VOCDataSet(dataset_dir=str(dataset), anno_path=f"{split}.txt",
                     label_list="label_list.txt",
                     data_fields=["image", "gt_bbox", "gt_class", "difficult"])
    voc.parse_dataset()
    assert len(voc.roidbs) == count
    for record in voc.roidbs:
        image = cv2.imread(record["im_file"])
        assert image.shape[:2] == (record["h"], record["w"])
        boxes = record["gt_bbox"]
        assert len(boxes) >= 1
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] < record["w"]).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] < record["h"]).all()
        heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
        assert (heights > 2 * widths).all()  # vertical three-lamp housings
        assert set(record["gt_class"].ravel()) <= set(range(len(data.LABELS)))


def test_list_lines_are_relative_image_xml_pairs(dataset: Path) -> None:
    for line in (dataset / "train.txt").read_text().splitlines():
        image, xml = line.split()
        assert image.startswith("train/images/") and xml.startswith("train/annotations/xmls/")
        assert (dataset / image).is_file() and (dataset / xml).is_file()


def test_scenes_vary_in_size_and_hold_several_lights() -> None:
    sizes, counts, labels = set(), [], set()
    for index in range(30):
        image, lights = data.render_scene(np.random.default_rng(index), data.HARD)
        sizes.add(image.shape[:2])
        counts.append(len(lights))
        labels |= {light.label for light in lights}
    assert len(sizes) > 10 and any(h != w for h, w in sizes)
    assert max(counts) >= 4 and min(counts) >= 1
    assert labels == set(data.LABELS)


def test_lit_lamp_is_where_the_label_says() -> None:
    """The class is visible: the lit position is the brightest of the three lamps."""
    x1, y1, x2, y2 = 20, 20, 59, 127
    lamp_height = (y2 - y1 + 1) / 3
    for label, (position, shape) in data.LIT_LAMPS.items():
        image = np.zeros((200, 100, 3), np.float32)
        data._draw_light(np.random.default_rng(0), image, data.Light(label, (x1, y1, x2, y2)))
        lamps = [image[round(y1 + i * lamp_height):round(y1 + (i + 1) * lamp_height), x1:x2]
                 for i in range(3)]
        assert int(np.argmax([lamp.max(axis=2).mean() for lamp in lamps])) == position, label
        lit = lamps[position].max(axis=2) > 150  # the lit shape, not the dark disc around it
        columns = lit.any(axis=0).nonzero()[0]
        left_end, right_end = lit[:, columns[0]].sum(), lit[:, columns[-1]].sum()
        if shape != "disc":  # the pointed end is thinner than the shaft's end
            assert (left_end < right_end) == (shape == "left"), label


def test_contact_sheet_is_written(dataset: Path) -> None:
    sheet = cv2.imread(str(dataset / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 400
