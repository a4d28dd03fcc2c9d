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

import compat  # noqa: F401  # first: upstream fixes

# isort: split
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

from train import traffic_light_data as data

SIZE = data.NETWORK_SIZE
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # the detector's NormalizeImage
STD = np.array([0.229, 0.224, 0.225], np.float32)
CROP_PX = 12


def arrow_scenes(root: Path, list_file: str, scenes: int
                 ) -> Iterator[tuple[np.ndarray, list[tuple[bool, tuple[float, float],
                                                          tuple[float, float], float]]]]:
    """(RGB scene resized to the network input, [(is_left, lamp xy, centre xy, lamp radius)])
    for each scene with at least one arrow light; coordinates at the network input."""
    for line in (root / list_file).read_text().splitlines()[:scenes]:
        image_file, xml_file = line.split()
        arrows = [light for light in data.read_voc_xml(root / xml_file)
                  if light.label.endswith(("Left", "Right"))]
        if not arrows:
            continue
        image = cv2.cvtColor(cv2.imread(str(root / image_file)), cv2.COLOR_BGR2RGB)
        scale_y, scale_x = SIZE / image.shape[0], SIZE / image.shape[1]
        lights = []
        for light in arrows:
            x1, y1, x2, y2 = light.box
            lamp_x, lamp_y, radius = data.lamp_circle(light.box, data.LIT_LAMPS[light.label][0])
            lights.append((light.label.endswith("Left"), (lamp_x * scale_x, lamp_y * scale_y),
                           ((x1 + x2 + 1) / 2 * scale_x, (y1 + y2 + 1) / 2 * scale_y),
                           radius * scale_x))
        yield cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC), lights


def raw_lamp(image: np.ndarray, lamp: tuple[float, float], radius: float) -> np.ndarray:
    half = radius * 1.25
    x, y = lamp
    crop = image[max(0, round(y - half)):round(y + half) + 1,
                 max(0, round(x - half)):round(x + half) + 1].mean(axis=2)
    return cv2.resize(crop.astype(np.float32), (CROP_PX, CROP_PX),
                      interpolation=cv2.INTER_AREA).ravel()


def feature_maps(model: paddle.nn.Layer, image: np.ndarray) -> dict[str, np.ndarray]:
    """Backbone and neck outputs (CHW) named by level and stride."""
    tensor = paddle.to_tensor(((image / 255 - MEAN) / STD).transpose(2, 0, 1)[None]
                              .astype(np.float32))
    with paddle.no_grad():
        backbone = model.backbone({"image": tensor})
        neck = model.neck(backbone)
    maps = {f"backbone/{SIZE // out.shape[2]}": out.numpy()[0] for out in backbone}
    maps.update({f"neck/{SIZE // out.shape[2]}": out.numpy()[0] for out in neck})
    return maps


def at(feature: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    stride = SIZE / feature.shape[1]
    row = min(feature.shape[1] - 1, int(point[1] / stride))
    column = min(feature.shape[2] - 1, int(point[0] / stride))
    return feature[:, row, column]


def probe_accuracy(vectors: list[np.ndarray], is_left: list[bool]) -> float:
    features = np.array(vectors)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    classifier = LogisticRegression(max_iter=3000)
    return float(cross_val_score(classifier, features, np.array(is_left), cv=4).mean())


def probe(model: paddle.nn.Layer, root: Path, list_file: str, scenes: int) -> dict[str, float]:
    """Left/Right accuracy per input: "raw lamp pixels", "<level>/<stride> @ lamp|centre"."""
    vectors: dict[str, list[np.ndarray]] = {}
    is_left: list[bool] = []
    for image, lights in arrow_scenes(root, list_file, scenes):
        maps = feature_maps(model, image)
        for left, lamp, centre, radius in lights:
            is_left.append(left)
            vectors.setdefault("raw lamp pixels", []).append(raw_lamp(image, lamp, radius))
            for name, feature in maps.items():
                vectors.setdefault(f"{name} @ lamp", []).append(at(feature, lamp))
                vectors.setdefault(f"{name} @ centre", []).append(at(feature, centre))
    if min(sum(is_left), len(is_left) - sum(is_left)) < 4:
        raise ValueError(f"too few arrow lights in the first {scenes} scenes of {list_file}: "
                         f"{len(is_left)}; use more scenes")
    return {name: probe_accuracy(found, is_left) for name, found in vectors.items()}


def load_model(config: Path, weights: Path | None) -> paddle.nn.Layer:
    load_config(str(config))
    model = create("YOLOv3")
    if weights is not None:
        model.set_state_dict(paddle.load(str(weights)))
    model.eval()
    return model


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
    accuracies = probe(load_model(args.config, args.weights), args.data_dir, args.list,
                       args.scenes)
    for name, accuracy in sorted(accuracies.items()):
        print(f"{name:28s} Left/Right accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
