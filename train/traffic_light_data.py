"""Synthetic traffic-light scenes in PaddleDetection's VOC layout (seeded, deterministic).

A box is one vertical three-lamp housing (red on top, yellow, green at the bottom). Its class is
the lit lamp: a full disc (Red, Yellow, Green), a left/right arrow on the red or green position
(RedLeft, RedRight, GreenLeft, GreenRight), or "off" when no lamp is lit.

Layout under the dataset root (paths in the lists are relative to it, as in the tutorial):
    label_list.txt                      the class names, one per line
    train.txt, train_easy.txt, valid.txt  "images/x.jpg annotations/xmls/x.xml" per line
    <split>/images/*.jpg, <split>/annotations/xmls/*.xml
    contact_sheet.png                   samples with their boxes, for a person to look at
    dataset.json                        the parameters it was generated with
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from train import common

ROOT = Path(__file__).resolve().parents[1]
LABELS: tuple[str, ...] = tuple(
    (ROOT / "models" / "traffic_light" / "label_list.txt").read_text().split())
NETWORK_SIZE = 320  # light sizes are drawn in network-input pixels so every light stays legible

# label -> (lamp position 0 red / 1 yellow / 2 green, lit shape); "off" lights nothing
LIT_LAMPS: dict[str, tuple[int, str]] = {
    "Red": (0, "disc"), "RedLeft": (0, "left"), "RedRight": (0, "right"),
    "Yellow": (1, "disc"),
    "Green": (2, "disc"), "GreenLeft": (2, "left"), "GreenRight": (2, "right"),
}
LAMP_COLOURS = np.array([[235, 40, 35], [245, 190, 30], [40, 220, 110]], np.float32)  # RGB


@dataclass(frozen=True)
class Difficulty:
    """How hard the scenes of a split are."""

    lights: tuple[int, int]       # lights per image, inclusive range
    width_px: tuple[float, float]  # housing width at the network input size
    clutter: tuple[int, int]      # background shapes per image
    decoys: tuple[int, int]       # lone coloured discs that are not traffic lights


EASY = Difficulty(lights=(1, 2), width_px=(18, 34), clutter=(0, 6), decoys=(0, 0))
# Narrowest housing 15 px at the network input: lamps of ~9 px, where a left and a right arrow
# still differ by more than the blur (at 11 px by 1-2 px; a run on that set: arrow AP 0.11-0.21).
HARD = Difficulty(lights=(2, 5), width_px=(15, 34), clutter=(8, 30), decoys=(0, 3))


@dataclass(frozen=True)
class SplitSpec:
    name: str
    count: int
    difficulty: Difficulty


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines the generated files."""

    seed: int = 0
    train: int = 4000
    train_easy: int = 4000
    valid: int = 200

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec("train", self.train, HARD),
                SplitSpec("train_easy", self.train_easy, EASY),
                SplitSpec("valid", self.valid, HARD)]


@dataclass
class Light:
    label: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (inclusive pixels)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    width = int(rng.integers(360, 801))
    aspect = float(rng.choice([0.5, 0.5625, 0.75, 1.0, 1.333]))
    return width, int(np.clip(width * aspect, 240, 720))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    top, bottom = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = top * (1 - ramp) + bottom * ramp
    return np.broadcast_to(image, (height, width, 3)).copy()


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    height, width = image.shape[:2]
    for _ in range(count):
        colour = rng.uniform(0, 255, 3).tolist()
        kind = rng.integers(4)
        x, y = int(rng.integers(width)), int(rng.integers(height))
        size = int(rng.integers(8, max(9, min(width, height) // 3)))
        if kind == 0:  # buildings, signs, cars
            bottom = y + int(size * rng.uniform(0.3, 2))
            cv2.rectangle(image, (x, y), (x + size, bottom), colour, -1)
        elif kind == 1:  # wires, poles, road markings
            end = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        elif kind == 2:
            cv2.circle(image, (x, y), size // 2, colour, -1, cv2.LINE_AA)
        else:  # dark vertical boxes without lamps look like housings at a glance
            dark = rng.uniform(10, 70, 3).tolist()
            cv2.rectangle(image, (x, y), (x + size // 3, y + size), dark, -1)


def _draw_decoys(rng: np.random.Generator, image: np.ndarray, count: int, radius: float) -> None:
    """Bright lamp-coloured discs outside any housing: colour alone must not make a light."""
    height, width = image.shape[:2]
    for _ in range(count):
        colour = LAMP_COLOURS[rng.integers(3)] * rng.uniform(0.7, 1.0)
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(image, centre, max(2, int(radius * rng.uniform(0.6, 1.5))), colour.tolist(), -1,
                   cv2.LINE_AA)


LAMP_RADIUS = 0.36  # of the housing width


def lamp_circle(box: tuple[float, float, float, float], position: int
                ) -> tuple[float, float, float]:
    """(cx, cy, radius) of lamp `position` (0 top ... 2 bottom) in a housing box (inclusive)."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1 + 1, y2 - y1 + 1
    return x1 + width / 2, y1 + height * (2 * position + 1) / 6, LAMP_RADIUS * width


def _arrow_polygon(cx: float, cy: float, r: float, direction: str) -> np.ndarray:
    sign = -1.0 if direction == "left" else 1.0
    points = [(0.85, 0.0), (0.05, 0.62), (0.05, 0.22), (-0.75, 0.22),
              (-0.75, -0.22), (0.05, -0.22), (0.05, -0.62)]
    return np.array([(cx + sign * px * r, cy + py * r) for px, py in points], np.int32)


def _draw_light(rng: np.random.Generator, image: np.ndarray, light: Light) -> None:
    x1, y1, x2, y2 = light.box
    width = x2 - x1 + 1
    housing = rng.uniform(15, 60) * rng.uniform(0.8, 1.2, 3)
    if rng.random() < 0.3:  # a pole above or below the housing
        pole_x = (x1 + x2) // 2
        end_y = 0 if rng.random() < 0.5 else image.shape[0] - 1
        cv2.line(image, (pole_x, y1 if end_y == 0 else y2), (pole_x, end_y),
                 rng.uniform(60, 140, 3).tolist(), max(2, width // 5))
    cv2.rectangle(image, (x1, y1), (x2, y2), housing.tolist(), -1)
    border = rng.uniform(0, 90, 3).tolist()
    cv2.rectangle(image, (x1, y1), (x2, y2), border, max(1, width // 14))
    lit = LIT_LAMPS.get(light.label)
    brightness = rng.uniform(0.75, 1.0)
    for position in range(3):
        cx, cy, radius = lamp_circle(light.box, position)
        colour = LAMP_COLOURS[position]
        unlit = (colour * rng.uniform(0.12, 0.3) + housing * 0.3).tolist()
        centre = (round(cx), round(cy))
        cv2.circle(image, centre, round(radius), unlit, -1, cv2.LINE_AA)
        if lit is None or lit[0] != position:
            continue
        bright = np.minimum(colour * brightness + rng.uniform(0, 40), 255)
        if lit[1] == "disc":
            cv2.circle(image, centre, round(radius), bright.tolist(), -1, cv2.LINE_AA)
            core = (bright + (255 - bright) * 0.5).tolist()
            cv2.circle(image, centre, max(1, round(radius * 0.35)), core, -1, cv2.LINE_AA)
        else:
            cv2.fillPoly(image, [_arrow_polygon(cx, cy, radius, lit[1])], bright.tolist(),
                         cv2.LINE_AA)


def _place_lights(rng: np.random.Generator, width: int, height: int,
                  difficulty: Difficulty) -> list[Light]:
    lights: list[Light] = []
    wanted = int(rng.integers(difficulty.lights[0], difficulty.lights[1] + 1))
    scale_x = width / NETWORK_SIZE
    for _ in range(wanted * 20):  # rejection sampling: lights do not overlap
        if len(lights) == wanted:
            break
        box_w = max(6, round(rng.uniform(*difficulty.width_px) * scale_x))
        box_h = round(box_w * rng.uniform(2.5, 2.9))
        if box_w >= width - 2 or box_h >= height - 2:
            continue
        x1, y1 = int(rng.integers(1, width - box_w)), int(rng.integers(1, height - box_h))
        box = (x1, y1, x1 + box_w - 1, y1 + box_h - 1)
        if all(_apart(box, other.box, margin=box_w // 2) for other in lights):
            lights.append(Light(str(rng.choice(LABELS)), box))
    return lights


def _apart(a: tuple[int, ...], b: tuple[int, ...], margin: int) -> bool:
    return (a[2] + margin < b[0] or b[2] + margin < a[0]
            or a[3] + margin < b[1] or b[3] + margin < a[1])


def render_scene(rng: np.random.Generator,
                 difficulty: Difficulty) -> tuple[np.ndarray, list[Light]]:
    """One RGB uint8 scene and its lights."""
    width, height = _image_size(rng)
    image = _background(rng, width, height)
    _draw_clutter(rng, image, int(rng.integers(difficulty.clutter[0], difficulty.clutter[1] + 1)))
    lights = _place_lights(rng, width, height, difficulty)
    decoy_radius = LAMP_RADIUS * np.mean(difficulty.width_px) * width / NETWORK_SIZE
    _draw_decoys(rng, image, int(rng.integers(difficulty.decoys[0], difficulty.decoys[1] + 1)),
                 decoy_radius)
    for light in lights:
        _draw_light(rng, image, light)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image += rng.normal(0, rng.uniform(1, 8), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), lights


def voc_xml(filename: str, width: int, height: int, lights: list[Light]) -> ET.ElementTree:
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "filename").text = filename
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for light in lights:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = light.label
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), light.box, strict=True):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(annotation)
    return ET.ElementTree(annotation)


def read_voc_xml(path: Path) -> list[Light]:
    lights = []
    for obj in ET.parse(path).findall("object"):
        bndbox = obj.find("bndbox")
        box = tuple(int(float(bndbox.find(tag).text)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        lights.append(Light(obj.find("name").text, box))  # type: ignore[arg-type]
    return lights


def _write_split(root: Path, split: SplitSpec, seed: int) -> list[str]:
    """Writes one split's images and XML files; returns its list lines."""
    (root / split.name / "images").mkdir(parents=True, exist_ok=True)
    (root / split.name / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in tqdm(range(split.count), desc=f"traffic lights {split.name}", unit="img"):
        jpeg, (width, height), lights = split_sample(seed, split, index)
        stem = f"{index:06d}"
        image_rel = f"{split.name}/images/{stem}.jpg"
        xml_rel = f"{split.name}/annotations/xmls/{stem}.xml"
        (root / image_rel).write_bytes(jpeg)
        voc_xml(f"{stem}.jpg", width, height, lights).write(root / xml_rel)
        lines.append(f"{image_rel} {xml_rel}\n")
    return lines


def split_sample(seed: int, split: SplitSpec, index: int
                 ) -> tuple[bytes, tuple[int, int], list[Light]]:
    """Image `index` of a split: (JPEG bytes, (width, height), lights), from its own random
    stream (independent per split and per image)."""
    rng = np.random.default_rng([seed, sum(map(ord, split.name)), index])
    image, lights = render_scene(rng, split.difficulty)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes(), (image.shape[1], image.shape[0]), lights


def validation_jpegs(count: int) -> list[bytes]:
    """The first `count` images of the default dataset's `valid` split, byte for byte as its
    files hold them: the sample images of models/traffic_light/model.yml."""
    spec = DatasetSpec()
    valid = next(split for split in spec.splits() if split.name == "valid")
    return [split_sample(spec.seed, valid, index)[0] for index in range(count)]


def draw_boxes(image: np.ndarray, lights: list[Light]) -> np.ndarray:
    """RGB copy with each light's box and label drawn (white label on the box colour)."""
    out = image.copy()
    for light in lights:
        x1, y1, x2, y2 = light.box
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 0, 255), 2)
        (text_w, text_h), _ = cv2.getTextSize(light.label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(0, y1 - text_h - 4)
        cv2.rectangle(out, (x1, top), (x1 + text_w + 2, top + text_h + 4), (255, 0, 255), -1)
        cv2.putText(out, light.label, (x1 + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_contact_sheet(root: Path, list_file: str, out: Path, count: int = 12) -> Path:
    """The first `count` samples of `list_file` with boxes and labels drawn, in a grid."""
    tiles, captions = [], []
    for line in (root / list_file).read_text().splitlines()[:count]:
        image_rel, xml_rel = line.split()
        image = cv2.cvtColor(cv2.imread(str(root / image_rel)), cv2.COLOR_BGR2RGB)
        lights = read_voc_xml(root / xml_rel)
        drawn = draw_boxes(image, lights)
        side = max(drawn.shape[:2])  # letterbox: the sheet's square tiles keep the aspect ratio
        tile = np.full((side, side, 3), 255, np.uint8)
        tile[:drawn.shape[0], :drawn.shape[1]] = drawn
        tiles.append(tile)
        captions.append(f"{Path(image_rel).name} {image.shape[1]}x{image.shape[0]}, "
                        f"{len(lights)} lights")
    return common.write_contact_sheet(tiles, captions, out, columns=4, tile_size=400)


def generate(root: Path, spec: DatasetSpec) -> Path:
    """Writes the dataset under `root` unless the same spec is already there; returns root."""
    manifest = root / "dataset.json"
    if manifest.exists() and json.loads(manifest.read_text()) == asdict(spec):
        return root
    root.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)  # an interrupted run must not look complete
    (root / "label_list.txt").write_text("".join(f"{label}\n" for label in LABELS))
    for split in spec.splits():
        (root / f"{split.name}.txt").write_text("".join(_write_split(root, split, spec.seed)))
    shown = next(split.name for split in spec.splits() if split.count)
    write_contact_sheet(root, f"{shown}.txt", root / "contact_sheet.png")
    manifest.write_text(json.dumps(asdict(spec), indent=2))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.traffic_light_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/traffic_light"),
                        help="dataset root (default: %(default)s)")
    defaults = DatasetSpec()
    helps = {"seed": "random seed", "train": "cluttered training images",
             "train_easy": "easy training images", "valid": "validation images"}
    for name, text in helps.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name), help=f"{text} (default: %(default)s)")
    args = parser.parse_args(argv)
    spec = DatasetSpec(seed=args.seed, train=args.train, train_easy=args.train_easy,
                       valid=args.valid)
    root = generate(args.out, spec)
    print(f"dataset ready: {root} (contact sheet: {root / 'contact_sheet.png'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
