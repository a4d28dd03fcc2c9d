"""Synthetic peach-grading dataset in PaddleClas folder/list format (seeded, deterministic).

The real set of the peach tutorial sorts peaches by size and colour into four folders. Here every
image is one peach photographed by a fixed camera at a fixed distance: the frame is always
256 x 256 px, so the apparent size IS the real size, and the serving preprocessing (resize the short
side to 256 = identity, center crop 224) keeps the scale. The whole peach lies inside the central
224 x 224 crop.

The rule (d = horizontal peach diameter in px of the 256 frame; red = fraction of the skin covered
by red blush):

    class  id  size                    colour
    R0     0   large   150 <= d <= 186   ripe red:    0.65 <= red <= 0.95, deep red blush
    B1     1   large   150 <= d <= 186   pale/yellow: 0.00 <= red <= 0.25, cream-yellow skin
    M2     2   medium  108 <= d <= 132   any:         0.00 <= red <= 0.95
    S3     3   small    66 <= d <=  90   any:         0.00 <= red <= 0.95

Decision rule with margins (`label_for`): d < 99 -> S3; d < 141 -> M2; otherwise R0 if red >= 0.45
else B1. The vertical diameter is d x [0.93, 1.05].

Nuisances, all independent of the class: background (plain gradient, wooden crate slats, cloth,
tiles), position inside the crop, light direction, brightness x[0.75, 1.2], colour temperature
+-8 %, sensor noise, Gaussian blur (sigma up to 1.6), JPEG quality 45-95, a soft shadow, the
suture crease and stem cavity, blush texture.

Layout (PaddleClas): <out>/train/R0/00000.jpg ..., train_list.txt / val_list.txt lines
"train/R0/00000.jpg 0", label_list.txt lines "0 R0". Usage: python -m train.peach_data --help
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from train.common import write_contact_sheet

LABELS = ("R0", "B1", "M2", "S3")
FRAME = 256  # fixed camera frame (px); equals the serving resize_short, so no rescaling
CROP = 224  # serving center crop: the peach must lie inside it
DIAMETERS = {"R0": (150, 186), "B1": (150, 186), "M2": (108, 132), "S3": (66, 90)}
RED_COVERAGE = {"R0": (0.65, 0.95), "B1": (0.0, 0.25), "M2": (0.0, 0.95), "S3": (0.0, 0.95)}
SMALL_BELOW, MEDIUM_BELOW, RED_FROM = 99, 141, 0.45
SPLIT_STREAMS = {"train": 0, "val": 1}  # separate random streams per split
TRAIN_IMAGES, VAL_IMAGES = 3000, 200  # default split sizes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeachSpec:
    """What the class depends on (diameter, red) plus class-independent nuisances."""

    diameter: float
    aspect: float  # vertical / horizontal diameter
    center: tuple[float, float]  # (x, y) in the frame
    red_coverage: float


def label_for(spec: PeachSpec) -> str:
    """The grading rule of the module docstring."""
    if spec.diameter < SMALL_BELOW:
        return "S3"
    if spec.diameter < MEDIUM_BELOW:
        return "M2"
    return "R0" if spec.red_coverage >= RED_FROM else "B1"


def sample_spec(label: str, rng: np.random.Generator) -> PeachSpec:
    diameter = rng.uniform(*DIAMETERS[label])
    aspect = rng.uniform(0.93, 1.05)
    reach = max(0.0, (CROP - diameter * max(1.0, aspect)) / 2 - 3)  # stay inside the crop
    center = (FRAME / 2 + rng.uniform(-reach, reach), FRAME / 2 + rng.uniform(-reach, reach))
    return PeachSpec(diameter, aspect, center, rng.uniform(*RED_COVERAGE[label]))


def _smooth_noise(rng: np.random.Generator, cells: int, size: int = FRAME) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(40, 220, 3).astype(np.float32)
    ys, xs = np.mgrid[0:FRAME, 0:FRAME].astype(np.float32) / FRAME
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None] * rng.uniform(-60, 60)
    image = base + gradient
    kind = rng.integers(4)
    if kind == 1:  # wooden crate slats
        period = rng.uniform(25, 60)
        slats = (np.sin(2 * np.pi * ys / (period / FRAME)) > rng.uniform(0.6, 0.9))[..., None]
        grain = _smooth_noise(rng, 40)[..., None] * 30
        image = image * 0.8 + grain - slats * rng.uniform(30, 70)
    elif kind == 2:  # cloth
        image = image + (_smooth_noise(rng, 64)[..., None] - 0.5) * rng.uniform(20, 60)
    elif kind == 3:  # tiles
        tile = rng.integers(32, 80)
        grid = ((np.mgrid[0:FRAME, 0:FRAME] % tile) < 3).any(axis=0)[..., None]
        image = image - grid * rng.uniform(30, 80)
    return image


def _skin_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(pale yellow/cream ground colour, deep red blush colour), RGB float."""
    ground = np.array([rng.uniform(225, 250), rng.uniform(190, 230), rng.uniform(95, 170)])
    red = np.array([rng.uniform(150, 200), rng.uniform(15, 45), rng.uniform(30, 60)])
    return ground, red


def render_peach(spec: PeachSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 frame with one peach, and the boolean peach mask (for checks)."""
    image = _background(rng)
    ys, xs = np.mgrid[0:FRAME, 0:FRAME].astype(np.float32)
    rx, ry = spec.diameter / 2, spec.diameter * spec.aspect / 2
    nx, ny = (xs - spec.center[0]) / rx, (ys - spec.center[1]) / ry
    radius2 = nx**2 + ny**2
    mask = radius2 <= 1.0

    light = rng.normal(size=3) * [1, 1, 0.3] + [0, 0, 1]
    light /= np.linalg.norm(light)
    shadow = np.exp(-(((xs - spec.center[0] + light[0] * rx * 0.3) / (rx * 1.1)) ** 2
                      + ((ys - spec.center[1] + light[1] * ry * 0.3 - ry * 0.15) / (ry * 1.05))
                      ** 2) * 3)
    image *= (1 - 0.45 * shadow)[..., None]

    ground, red = _skin_colours(rng)
    blush_field = _smooth_noise(rng, 5) + 0.8 * (np.cos(rng.uniform(0, 2 * np.pi)) * nx
                                                  + np.sin(rng.uniform(0, 2 * np.pi)) * ny)
    threshold = np.quantile(blush_field[mask], 1 - spec.red_coverage) if spec.red_coverage else 9
    blush = np.clip((blush_field - threshold) * 6 + 0.5, 0, 1)
    blush = np.where(blush_field >= threshold, np.maximum(blush, 0.5), np.minimum(blush, 0.49))
    speckle = _smooth_noise(rng, 48) * 0.25
    skin = ground * (1 - blush[..., None]) + red * blush[..., None]
    skin = skin * (1 - speckle[..., None] * blush[..., None])

    nz = np.sqrt(np.clip(1 - radius2, 0, 1))
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    highlight = lambert**25 * rng.uniform(20, 60)
    crease_x = nx - 0.15 * ny**2 * rng.choice([-1, 1])
    crease = np.exp(-((crease_x - rng.uniform(-0.3, 0.3)) / 0.05) ** 2) * (ny < 0.4)
    stem = np.exp(-((nx / 0.12) ** 2 + ((ny + 0.82) / 0.08) ** 2))
    shade = (0.45 + 0.55 * lambert) * (1 - 0.3 * crease) * (1 - 0.5 * stem)
    peach = skin * shade[..., None] + highlight[..., None]
    edge = np.clip((1 - np.sqrt(radius2)) * spec.diameter / 3, 0, 1)[..., None]  # antialias
    image = image * (1 - edge) + peach * edge
    return _camera(image, rng), mask


def _camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, sensor noise and focus blur."""
    temperature = rng.uniform(-0.08, 0.08)
    image = image * rng.uniform(0.75, 1.2) * np.array([1 + temperature, 1, 1 - temperature])
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.6))
    return image


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


@dataclass(frozen=True)
class GeneratedSample:
    relative_path: str
    label: str
    spec: PeachSpec
    jpeg: bytes
    mask: np.ndarray


def generate_samples(split: str, count: int, seed: int) -> Iterator[GeneratedSample]:
    """Image i of a split has class LABELS[i % 4] and its own random stream (seed, split, i)."""
    for index in range(count):
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
        label = LABELS[index % len(LABELS)]
        spec = sample_spec(label, rng)
        rgb, mask = render_peach(spec, rng)
        jpeg = encode_jpeg(rgb, int(rng.integers(45, 96)))
        yield GeneratedSample(f"{split}/{label}/{index:05d}.jpg", label, spec, jpeg, mask)


def validation_jpegs(count: int) -> list[bytes]:
    """The first `count` validation images of the default dataset (seed 0): the sample images
    of models/peach/model.yml."""
    return [sample.jpeg for sample in generate_samples("val", count, seed=0)]


def training_jpegs(count: int) -> list[bytes]:
    """The first `count` training images of the default dataset (seed 0): the INT8 calibration
    images of models/peach/model.yml."""
    return [sample.jpeg for sample in generate_samples("train", count, seed=0)]


def write_dataset(out: Path, train_count: int, val_count: int, seed: int,
                  contact_sheet_count: int = 32) -> Path:
    """Writes the folders, the three list files and contact_sheet.png; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_list.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(LABELS)))
    sheet_tiles: list[np.ndarray] = []
    sheet_captions: list[str] = []
    for split, count in (("train", train_count), ("val", val_count)):
        lines = []
        samples = generate_samples(split, count, seed)
        for sample in tqdm(samples, total=count, desc=f"peach {split}", unit="img"):
            path = out / sample.relative_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample.jpeg)
            lines.append(f"{sample.relative_path} {LABELS.index(sample.label)}\n")
            shown = split == "train" or train_count == 0  # a validation-only set shows its own
            if shown and len(sheet_tiles) < contact_sheet_count:
                sheet_tiles.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
                sheet_captions.append(f"{sample.label} d={sample.spec.diameter:.0f} "
                                      f"r={sample.spec.red_coverage:.2f}")
        (out / f"{split}_list.txt").write_text("".join(lines))
    write_contact_sheet(sheet_tiles, sheet_captions, out / "contact_sheet.png")
    log.info("wrote %d train + %d val images to %s", train_count, val_count, out)
    return out


def read_label_list(path: Path) -> list[str]:
    """PaddleClas label_list.txt ("id name" lines, ids 0..n-1 in order) -> names by id."""
    names = []
    for number, line in enumerate(path.read_text().splitlines()):
        class_id, name = line.split(maxsplit=1)
        if int(class_id) != number:
            raise ValueError(f"{path}:{number + 1}: expected id {number}, got {class_id}")
        names.append(name.strip())
    return names


def read_class_list(root: Path, list_name: str) -> list[tuple[Path, int]]:
    """PaddleClas list file ("relative/path label" lines) -> (absolute path, label id) pairs."""
    samples = []
    for number, line in enumerate((root / list_name).read_text().splitlines(), start=1):
        relative, label = line.rsplit(maxsplit=1)
        if not (root / relative).is_file():
            raise FileNotFoundError(f"{root / list_name}:{number}: missing image {relative}")
        samples.append((root / relative, int(label)))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.peach_data",
        description="Generate the synthetic peach dataset (4 grades by size and colour; the rule "
                    "is in this module's docstring).")
    parser.add_argument("--out", type=Path, default=Path("data/peach"), help="dataset folder")
    parser.add_argument("--train", type=int, default=TRAIN_IMAGES, help="training images")
    parser.add_argument("--val", type=int, default=VAL_IMAGES, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    write_dataset(args.out, args.train, args.val, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
