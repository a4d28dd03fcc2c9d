"""train.arrow_direction: crops on the lit arrow, a backbone the detector loads whole, frozen
layers that stay as pretrained."""

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
    spec = detector.direction_spec(cfg, pretrain_iterations=None)
    assert spec is not None, "the default config has an ArrowDirection section"
    return dataclasses.replace(spec, **changes)


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
