"""Does a detector checkpoint see which way an arrow points? Linear probes on the arrow lights.

For every arrow light (RedLeft, RedRight, GreenLeft, GreenRight) of the first scenes of a list,
a logistic regression (4-fold cross-validation) predicts Left vs Right from
  - the raw lit lamp: its grey pixels at the network input, resized to 12 x 12;
  - the checkpoint's feature vector at the lamp's cell and at the box centre's cell, for each
    backbone output and each neck output (the neck outputs are what the YOLO head reads).
Accuracy near 1.0 on the raw pixels and near 0.5 on the features means the data shows the
direction and the network has not learned it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import paddle
from paddle.base import core
from ppdet.core.workspace import create, load_config
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from model.preprocess import Preprocessor
from train import traffic_light_data as data

CROP_PX = 12
Light = tuple[bool, tuple[float, float], tuple[float, float], float]


def input_preprocessor(cfg: dict) -> Preprocessor:
    """A detector config's TestReader steps (what its export writes to infer_cfg.yml), run by
    the services' preprocessing code: the network input the probes and crops are cut from."""
    steps = [{"type": name, **(params or {})} for step in cfg["TestReader"]["sample_transforms"]
             for name, params in step.items() if name != "Decode"]
    return Preprocessor(steps)


def arrow_scenes(root: Path, list_file: str, scenes: int, preprocessor: Preprocessor
                 ) -> Iterator[tuple[np.ndarray, list[Light]]]:
    """(network input CHW, [(is_left, lamp xy, centre xy, lamp radius)]) for each scene with at
    least one arrow light; coordinates at the network input."""
    for line in (root / list_file).read_text().splitlines()[:scenes]:
        image_file, xml_file = line.split()
        arrows = [light for light in data.read_voc_xml(root / xml_file)
                  if light.label.endswith(("Left", "Right"))]
        if not arrows:
            continue
        sample = preprocessor((root / image_file).read_bytes())
        scale_y, scale_x = sample.scale_factor
        lights = []
        for light in arrows:
            x1, y1, x2, y2 = light.box
            lamp_x, lamp_y, radius = data.lamp_circle(light.box, data.LIT_LAMPS[light.label][0])
            lights.append((light.label.endswith("Left"), (lamp_x * scale_x, lamp_y * scale_y),
                           ((x1 + x2 + 1) / 2 * scale_x, (y1 + y2 + 1) / 2 * scale_y),
                           radius * scale_x))
        yield sample.image, lights


def raw_lamp(image: np.ndarray, lamp: tuple[float, float], radius: float) -> np.ndarray:
    """The lamp's grey pixels (channel mean of the network input), resized to CROP_PX square."""
    half = radius * 1.25
    x, y = lamp
    crop = image[:, max(0, round(y - half)):round(y + half) + 1,
                 max(0, round(x - half)):round(x + half) + 1].mean(axis=0)
    return cv2.resize(crop.astype(np.float32), (CROP_PX, CROP_PX),
                      interpolation=cv2.INTER_AREA).ravel()


def feature_maps(model: paddle.nn.Layer, image: np.ndarray) -> dict[str, np.ndarray]:
    """Backbone and neck outputs (CHW) named by level and stride."""
    with paddle.no_grad():
        backbone = model.backbone({"image": paddle.to_tensor(image[None].astype(np.float32))})
        neck = model.neck(backbone)
    height = image.shape[1]
    maps = {f"backbone/{height // out.shape[2]}": out.numpy()[0] for out in backbone}
    maps.update({f"neck/{height // out.shape[2]}": out.numpy()[0] for out in neck})
    return maps


def at(feature: np.ndarray, point: tuple[float, float], input_height: int) -> np.ndarray:
    stride = input_height / feature.shape[1]
    row = min(feature.shape[1] - 1, int(point[1] / stride))
    column = min(feature.shape[2] - 1, int(point[0] / stride))
    return feature[:, row, column]


def probe_accuracy(vectors: list[np.ndarray], is_left: list[bool]) -> float:
    features = np.array(vectors)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    classifier = LogisticRegression(max_iter=3000)
    return float(cross_val_score(classifier, features, np.array(is_left), cv=4).mean())


def probe(model: paddle.nn.Layer, preprocessor: Preprocessor, root: Path, list_file: str,
          scenes: int) -> dict[str, float]:
    """Left/Right accuracy per input: "raw lamp pixels", "<level>/<stride> @ lamp|centre"."""
    vectors: dict[str, list[np.ndarray]] = {}
    is_left: list[bool] = []
    for image, lights in arrow_scenes(root, list_file, scenes, preprocessor):
        maps = feature_maps(model, image)
        for left, lamp, centre, radius in lights:
            is_left.append(left)
            vectors.setdefault("raw lamp pixels", []).append(raw_lamp(image, lamp, radius))
            for name, feature in maps.items():
                for where, point in (("lamp", lamp), ("centre", centre)):
                    vectors.setdefault(f"{name} @ {where}", []).append(
                        at(feature, point, image.shape[1]))
    if min(sum(is_left), len(is_left) - sum(is_left)) < 4:
        raise ValueError(f"too few arrow lights in the first {scenes} scenes of {list_file}: "
                         f"{len(is_left)}; use more scenes")
    return {name: probe_accuracy(found, is_left) for name, found in vectors.items()}


def load_checkpoint(config: Path, weights: Path | None
                    ) -> tuple[paddle.nn.Layer, Preprocessor]:
    """The model (random weights when `weights` is None) and its input preprocessing."""
    cfg = load_config(str(config))
    model = create("YOLOv3")
    if weights is not None:
        model.set_state_dict(paddle.load(str(weights)))
    model.eval()
    return model, input_preprocessor(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.arrow_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the checkpoint's ppdet YAML")
    parser.add_argument("--weights", type=Path, required=True, help="a .pdparams checkpoint")
    parser.add_argument("--data-dir", type=Path, default=Path("data/traffic_light"),
                        help="VOC dataset root (default: %(default)s)")
    parser.add_argument("--list", default="train.txt", help="image list (default: %(default)s)")
    parser.add_argument("--scenes", type=int, default=700,
                        help="first scenes of the list to read (default: %(default)s)")
    args = parser.parse_args(argv)
    core.set_num_threads(1)
    paddle.set_device("cpu")
    model, preprocessor = load_checkpoint(args.config, args.weights)
    accuracies = probe(model, preprocessor, args.data_dir, args.list, args.scenes)
    for name, accuracy in sorted(accuracies.items()):
        print(f"{name:28s} Left/Right accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
