"""Pieces of the detector training recipe, checked against ppdet's real data loader and model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ppdet.core.workspace import create, load_config
from ppdet.data.reader import Compose, TrainReader

from train import detector
from train import traffic_light_data as data


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = data.DatasetSpec(seed=5, train=4, train_easy=4, valid=1)
    return data.generate(tmp_path_factory.mktemp("curriculum"), spec)


def image_sizes(root: Path, list_file: str) -> list[tuple[int, int]]:
    return sorted(cv2.imread(str(root / line.split()[0])).shape[:2]
                  for line in (root / list_file).read_text().splitlines())


def test_curriculum_serves_easy_then_cluttered_epochs_through_ppdet_loader(
        dataset_root: Path) -> None:
    dataset = detector.CurriculumVOCDataSet(
        dataset_dir=str(dataset_root), anno_path="train.txt", easy_anno_path="train_easy.txt",
        easy_epochs=2, label_list="label_list.txt", data_fields=["image", "gt_bbox", "gt_class"])
    reader = TrainReader(sample_transforms=[{"Decode": {}}, {"Permute": {}}], batch_size=1,
                         shuffle=False, drop_last=False)
    loader = reader(dataset, worker_num=1)  # as configured: one loader worker
    seen = []
    for epoch in range(4):  # what ppdet's Trainer.train does per epoch
        dataset.set_epoch(epoch)
        seen.append(sorted(tuple(batch["image"].shape[2:]) for batch in loader))
    easy, hard = image_sizes(dataset_root, "train_easy.txt"), image_sizes(dataset_root, "train.txt")
    assert easy != hard
    assert seen == [easy, easy, hard, hard]


def test_objectness_bias_starts_at_the_prior() -> None:
    load_config(str(detector.DEFAULT_CONFIG))
    model = create("YOLOv3")
    detector.init_objectness_bias(model, prior=0.01)
    head = model.yolo_head
    for conv in head.yolo_outputs:
        bias = conv.bias.numpy().reshape(-1, head.num_classes + 5)
        np.testing.assert_allclose(1 / (1 + np.exp(-bias[:, 4])), 0.01, rtol=1e-4)
        assert (bias[:, 5:] == 0).all() and (bias[:, :4] == 0).all()


def test_training_transforms_keep_lamp_colours(dataset_root: Path) -> None:
    """Colour is the class (red/yellow/green): training must see the colours as drawn (ppdet's
    RandomDistort hue step spins them at random; RandomFlip would swap Left and Right)."""
    cfg = load_config(str(detector.DEFAULT_CONFIG))
    names = [next(iter(step)) for step in cfg["TrainReader"]["sample_transforms"]]
    assert "RandomDistort" not in names and "RandomFlip" not in names
    dataset = detector.CurriculumVOCDataSet(
        dataset_dir=str(dataset_root), anno_path="train.txt", label_list="label_list.txt",
        data_fields=["image", "gt_bbox", "gt_class"])
    dataset.parse_dataset()
    dataset.set_kwargs()  # what ppdet's reader does before reading
    dataset.set_transform(Compose(cfg["TrainReader"]["sample_transforms"], num_classes=8))
    for index in range(len(dataset.roidbs)):
        seen = dataset[index]["image"].transpose(1, 2, 0)
        seen = (seen * [0.229, 0.224, 0.225] + [0.485, 0.456, 0.406]) * 255
        drawn = cv2.cvtColor(cv2.imread(dataset.roidbs[index]["im_file"]), cv2.COLOR_BGR2RGB)
        drawn = cv2.resize(drawn, (320, 320), interpolation=cv2.INTER_CUBIC)
        assert np.abs(seen - drawn).mean() < 1.0
