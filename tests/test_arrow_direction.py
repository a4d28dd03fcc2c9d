"""train.arrow_direction: crops on the lit arrow, a backbone the detector loads whole, the loss."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest
from ppdet.core.workspace import create, load_config

from train import arrow_direction, arrow_probe, detector
from train import traffic_light_data as data


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = data.DatasetSpec(seed=4, train=12, train_easy=1, valid=1)
    return data.generate(tmp_path_factory.mktemp("arrow_direction"), spec)


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(str(detector.DEFAULT_CONFIG))


def spec_of(cfg: dict, **changes: int) -> arrow_direction.ArrowDirectionSpec:
    return dataclasses.replace(arrow_direction.ArrowDirectionSpec(**cfg["ArrowDirection"]),
                               **changes)


def crops_of(scenes: Path, cfg: dict, **changes: int) -> list[tuple[np.ndarray, bool]]:
    spec = spec_of(cfg, **changes)
    return list(arrow_direction.arrow_crops(scenes, "train.txt", spec,
                                          arrow_probe.input_preprocessor(cfg),
                                          np.random.default_rng(0)))


def arrow_lights(scenes: Path) -> list[tuple[data.Light, float]]:
    """Each arrow light of train.txt in file order, with its image's vertical scale to 320."""
    found = []
    for line in (scenes / "train.txt").read_text().splitlines():
        image_file, xml_file = line.split()
        height = cv2.imread(str(scenes / image_file)).shape[0]
        found += [(light, data.NETWORK_SIZE / height)
                  for light in data.read_voc_xml(scenes / xml_file)
                  if light.label.endswith(("Left", "Right"))]
    return found


def test_unjittered_crops_centre_on_the_lit_arrow(scenes: Path, cfg: dict) -> None:
    crops = crops_of(scenes, cfg, jitter_px=0)
    lights = arrow_lights(scenes)
    assert len(crops) == len(lights) > 4
    compared = 0
    for (crop, is_left), (light, scale_y) in zip(crops, lights, strict=True):
        assert crop.shape == (3, 48, 48)
        assert is_left == light.label.endswith("Left")
        brightness = crop.astype(np.float32).max(axis=0)
        lit = data.LIT_LAMPS[light.label][0]
        for unlit in {0, 1, 2} - {lit}:  # the housing's dark lamps, where inside the crop
            offset = (data.lamp_circle(light.box, unlit)[1]
                      - data.lamp_circle(light.box, lit)[1]) * scale_y
            row = round(24 + offset)
            if 1 <= row <= 46:
                assert brightness[23:25, 23:25].mean() > brightness[row - 1:row + 1, 23:25].mean()
                compared += 1
    assert compared > 4
    assert {left for _, left in crops} == {True, False}


def test_pretrained_backbone_loads_whole_into_the_detector(scenes: Path, cfg: dict) -> None:
    spec = spec_of(cfg, iterations=2, batch_size=4)
    paddle.seed(0)
    pretrained = arrow_direction.pretrain_backbone(
        spec, scenes, "train.txt", arrow_probe.input_preprocessor(cfg), seed=0,
        log=lambda line: None)
    model = create("YOLOv3")
    backbone_keys = {f"backbone.{key}" for key in model.backbone.state_dict()}
    assert set(pretrained.state) == backbone_keys
    model.set_state_dict(pretrained.state)
    loaded = model.state_dict()
    for key, value in pretrained.state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy())
    assert 0.0 <= pretrained.held_out_accuracy <= 1.0 and pretrained.crops > 4


def test_no_arrow_lights_is_an_error_that_says_so(scenes: Path, cfg: dict) -> None:
    spec = spec_of(cfg, scenes=0)
    with pytest.raises(ValueError, match="needs arrow lights: 0 in the first 0 scenes"):
        arrow_direction.pretrain_backbone(spec, scenes, "train.txt",
                                        arrow_probe.input_preprocessor(cfg), seed=0)


def lamp_loss(cfg: dict, labels: list[str], evidence_at: list[tuple[float, float]]) -> float:
    """The direction loss for a RedLeft box at x 0.25 and a GreenRight box at x 0.75 (each 0.1
    x 0.3, centred at y 0.5), plus an unlit housing and padding, when the stride-8 map holds
    "left" evidence (channel 0) and "right" evidence (channel 1) around the given points."""
    features = np.zeros((1, 2, 40, 40), np.float32)
    for channel, (x, y) in enumerate(evidence_at):
        features[0, channel, round(y * 40 - 0.5), round(x * 40 - 0.5)] = 25.0
    boxes = np.zeros((1, 4, 4), np.float32)
    boxes[0, :3] = [[0.25, 0.5, 0.1, 0.3], [0.75, 0.5, 0.1, 0.3], [0.5, 0.5, 0.1, 0.3]]
    classes = np.array([[[data.LABELS.index(name)] for name in
                         ("RedLeft", "GreenRight", "off", "Red")]], np.int32)  # Red: padding
    head = paddle.nn.Linear(2, 2)
    head.weight.set_value(np.array([[0.0, 1.0], [1.0, 0.0]], np.float32))  # ch 0 -> "left"
    head.bias.set_value(np.zeros(2, np.float32))
    inputs = {"gt_bbox": paddle.to_tensor(boxes),
              arrow_direction.CLASSES_FIELD: paddle.to_tensor(classes)}
    loss = arrow_direction.direction_loss(
        paddle.to_tensor(features), inputs, head, arrow_direction.arrow_classes(labels),
        spec_of(cfg, loss_weight=1.0, pool_cells=1))
    return float(loss)


def test_direction_loss_reads_each_arrow_at_its_lit_lamp(cfg: dict) -> None:
    labels = list(data.LABELS)
    red_lamp, green_lamp = (0.25, 0.35 + 0.3 / 6), (0.75, 0.35 + 0.3 * 5 / 6)
    assert lamp_loss(cfg, labels, [red_lamp, green_lamp]) < 0.01
    # evidence at the box centres, or the wrong way round: both arrows cost ~ln 2 or more
    assert lamp_loss(cfg, labels, [(0.25, 0.5), (0.75, 0.5)]) > 1.3
    assert lamp_loss(cfg, labels, [green_lamp, red_lamp]) > 10


def test_keep_classes_copies_what_gt2yolotarget_drops() -> None:
    samples = [{"gt_class": np.array([[1], [4]], np.int32)}]
    kept = arrow_direction.KeepClasses()(samples)
    assert kept[0][arrow_direction.CLASSES_FIELD].tolist() == [[1], [4]]
    kept[0]["gt_class"][0, 0] = 7
    assert kept[0][arrow_direction.CLASSES_FIELD][0, 0] == 1


def test_frozen_layers_keep_their_weights_and_statistics(cfg: dict) -> None:
    model = create("YOLOv3")
    arrow_direction.freeze_pretrained_layers(model.backbone, ("conv1", "conv2_1"))
    model.train()
    before = {key: value.numpy().copy() for key, value in model.backbone.state_dict().items()}
    optimizer = paddle.optimizer.SGD(0.1, parameters=model.backbone.parameters())
    images = paddle.to_tensor(np.random.default_rng(0).normal(3, 2, (2, 3, 64, 64)), "float32")
    loss = paddle.add_n([level.mean() for level in model.backbone({"image": images})])
    loss.backward()
    optimizer.step()
    after = model.backbone.state_dict()
    changed = {key for key in before if not np.array_equal(before[key], after[key].numpy())}
    assert changed and not any(key.startswith(("conv1.", "conv2_1.")) for key in changed)
    assert any(key.startswith("conv2_2.") for key in changed)  # the rest trains
