"""Independent traffic-light evaluation scenes: the training set's class rule, drawn by other code.

Same rule as train/traffic_light_data.py (README "Traffic lights"): one box per vertical
three-lamp housing (red on top, yellow, green at the bottom), its class the lit lamp (Red, Yellow,
Green discs; RedLeft, RedRight, GreenLeft, GreenRight arrows) or `off`.

Drawn differently: the frame sizes users send (640x360 to 1920x1080, 16:9, 4:3 and square);
housings 8-60 px wide in image pixels, log-uniform so that small lights are as common as in
street photos; rounded housings in black, dark green, yellow or grey, with lamp visors; lamps with
a glow, LED-dot faces, other arrow glyphs (a chevron head on a shaft); street scenes with a sky,
buildings with lit windows, trees, a road in perspective, poles and sagging wires, cars with red
tail lights and white or amber street lamps (colour alone never makes a light); day, dusk and night
exposure; defocus, motion blur, shot noise, vignetting and JPEG quality 60-95.

Layout (PaddleDetection VOC, as the tutorial): <out>/images/*.jpg, <out>/annotations/xmls/*.xml,
valid.txt lines "images/x.jpg annotations/xmls/x.xml", label_list.txt, contact_sheet.png. Never
used for training. Usage: python -m evaluation.traffic_scenes --help
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from train import common
from train.traffic_light_data import LABELS, Light, read_voc_xml, voc_xml, write_contact_sheet

FRAME_SIZES = ((640, 360), (640, 480), (800, 450), (800, 600), (960, 540), (1024, 576),
               (1024, 768), (1080, 1080), (1280, 720), (1280, 960), (1600, 900), (1920, 1080))
HOUSING_WIDTH = (8.0, 60.0)  # px in the image, log-uniform
LIST_FILE = "valid.txt"
LIT = {"Red": (0, "disc"), "RedLeft": (0, "left"), "RedRight": (0, "right"),
       "Yellow": (1, "disc"), "Green": (2, "disc"), "GreenLeft": (2, "left"),
       "GreenRight": (2, "right")}
STREAM = 2121  # keeps these random streams apart from any other generator's seeds


@dataclass(frozen=True)
class Lighting:
    name: str  # day, dusk, night
    exposure: float
    sky_top: tuple[float, float, float]
    sky_bottom: tuple[float, float, float]


def _lighting(rng: np.random.Generator) -> Lighting:
    name = str(rng.choice(["day", "day", "dusk", "night"]))
    skies = {"day": ((70, 130, 210), (190, 215, 235)), "dusk": ((60, 50, 110), (240, 150, 90)),
             "night": ((5, 8, 25), (30, 35, 60))}
    top, bottom = (tuple(np.clip(np.array(c) + rng.uniform(-25, 25, 3), 0, 255))
                   for c in skies[name])
    exposure = {"day": rng.uniform(0.8, 1.15), "dusk": rng.uniform(0.7, 1.0),
                "night": rng.uniform(0.8, 1.1)}[name]
    return Lighting(name, float(exposure), top, bottom)  # type: ignore[arg-type]


def _street(rng: np.random.Generator, width: int, height: int, light: Lighting) -> np.ndarray:
    """Sky, buildings, trees, road, poles, wires, cars and street lamps; RGB float32."""
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.array(light.sky_top, np.float32) * (1 - ramp) + np.array(light.sky_bottom) * ramp
    image = np.ascontiguousarray(np.broadcast_to(image, (height, width, 3)), np.float32)
    dark = 0.35 if light.name == "night" else 1.0
    horizon = int(height * rng.uniform(0.45, 0.75))
    for _ in range(int(rng.integers(3, 10))):  # buildings with windows
        left = int(rng.integers(-width // 10, width))
        right = left + int(rng.uniform(0.08, 0.3) * width)
        top = int(horizon - rng.uniform(0.1, 0.6) * height)
        facade = rng.uniform(50, 200, 3) * dark
        cv2.rectangle(image, (left, top), (right, horizon), facade.tolist(), -1)
        step = max(4, int(rng.uniform(0.015, 0.04) * width))
        lit_share = 0.4 if light.name == "night" else 0.0
        for wy in range(top + step // 2, horizon - step, step):
            for wx in range(left + step // 2, right - step, step):
                glow = rng.random() < lit_share
                colour = [230, 200, 120] if glow else (facade * 0.6).tolist()
                cv2.rectangle(image, (wx, wy), (wx + step // 2, wy + step // 2), colour, -1)
    for _ in range(int(rng.integers(0, 6))):  # trees
        centre = (int(rng.integers(width)), int(horizon - rng.uniform(0, 0.2) * height))
        axes = (int(rng.uniform(0.03, 0.1) * width), int(rng.uniform(0.05, 0.15) * height))
        green = np.array([40, 110, 40]) * rng.uniform(0.5, 1.3) * dark
        cv2.ellipse(image, centre, axes, 0, 0, 360, green.tolist(), -1, cv2.LINE_AA)
    road = np.array([[0, height], [width, height], [int(width * rng.uniform(0.55, 0.7)), horizon],
                     [int(width * rng.uniform(0.3, 0.45)), horizon]], np.int32)
    cv2.fillPoly(image, [road], (np.array([70, 70, 75]) * rng.uniform(0.6, 1.3) * dark).tolist())
    for t in np.linspace(0.1, 0.9, int(rng.integers(3, 8))):  # lane marks in perspective
        y = int(horizon + (height - horizon) * t)
        cv2.line(image, (width // 2, y), (width // 2, int(y + (height - horizon) * 0.04)),
                 [220, 220, 210], max(1, int(t * width * 0.01)))
    for _ in range(int(rng.integers(1, 5))):  # poles and wires
        x = int(rng.integers(width))
        cv2.line(image, (x, int(rng.uniform(0, 0.3) * height)), (x, height),
                 (rng.uniform(40, 120, 3) * dark).tolist(), max(2, width // 200))
    for _ in range(int(rng.integers(0, 4))):
        y0, y1 = rng.uniform(0, 0.4 * height, 2)
        xs = np.linspace(0, width, 40)
        ys = y0 + (y1 - y0) * xs / width + rng.uniform(5, 40) * np.sin(np.pi * xs / width)
        cv2.polylines(image, [np.stack([xs, ys], 1).astype(np.int32)], False, (20, 20, 20), 1,
                      cv2.LINE_AA)
    _cars_and_lamps(rng, image, horizon, dark)
    return image


def _cars_and_lamps(rng: np.random.Generator, image: np.ndarray, horizon: int, dark: float
                    ) -> None:
    """Decoys: cars with red tail lights, white/amber street lamps."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(0, 6))):
        depth = rng.uniform(0.1, 1.0)
        car_w = int(width * 0.25 * depth) + 6
        car_h = int(car_w * rng.uniform(0.4, 0.6))
        x = int(rng.integers(0, width))
        y = int(horizon + (height - horizon) * depth * 0.9) - car_h
        body = (rng.uniform(20, 230, 3) * dark).tolist()
        cv2.rectangle(image, (x, y), (x + car_w, y + car_h), body, -1)
        lamp = max(1, car_w // 12)
        for lx in (x + lamp * 2, x + car_w - lamp * 2):
            cv2.circle(image, (lx, y + car_h // 2), lamp, [250, 30, 30], -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 5))):
        centre = (int(rng.integers(width)), int(rng.uniform(0.05, 0.6) * height))
        colour = [255, 250, 230] if rng.random() < 0.5 else [255, 180, 60]
        cv2.circle(image, centre, int(rng.uniform(2, 12)), colour, -1, cv2.LINE_AA)


def _arrow(cx: float, cy: float, r: float, direction: str) -> list[np.ndarray]:
    """A chevron head on a thin shaft (the training glyph is a block arrow)."""
    sign = -1.0 if direction == "left" else 1.0
    head = [(0.8, 0.0), (0.1, 0.7), (0.1, -0.7)]
    shaft = [(0.15, 0.14), (-0.8, 0.14), (-0.8, -0.14), (0.15, -0.14)]
    return [np.array([(cx + sign * x * r, cy + y * r) for x, y in part], np.float32)
            for part in (head, shaft)]


def _glow(canvas: np.ndarray, centre: tuple[float, float], radius: float, colour: np.ndarray,
          strength: float) -> None:
    """An additive halo around a lit lamp."""
    h, w = canvas.shape[:2]
    reach = int(radius * 3) + 2
    x0, x1 = max(0, int(centre[0]) - reach), min(w, int(centre[0]) + reach + 1)
    y0, y1 = max(0, int(centre[1]) - reach), min(h, int(centre[1]) + reach + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    falloff = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * (radius * 1.3) ** 2))
    canvas[y0:y1, x0:x1] += falloff[..., None] * colour * strength


SUPERSAMPLE = 4


def _draw_housing(rng: np.random.Generator, image: np.ndarray, light: Light, night: bool) -> None:
    """Draws one light, supersampled in a patch so that 8 px housings stay crisp."""
    x1, y1, x2, y2 = light.box
    margin = (x2 - x1 + 1)  # room for visors' shadow and glow
    px0, py0 = max(0, x1 - margin), max(0, y1 - margin)
    px1, py1 = min(image.shape[1], x2 + margin + 1), min(image.shape[0], y2 + margin + 1)
    patch = cv2.resize(image[py0:py1, px0:px1], None, fx=SUPERSAMPLE, fy=SUPERSAMPLE,
                       interpolation=cv2.INTER_LINEAR)
    s = SUPERSAMPLE
    bx1, by1 = (x1 - px0) * s, (y1 - py0) * s
    bw, bh = (x2 - x1 + 1) * s, (y2 - y1 + 1) * s
    body = {"black": [20, 20, 22], "green": [25, 60, 35], "yellow": [220, 180, 30],
            "grey": [110, 110, 105]}[str(rng.choice(["black", "black", "green", "yellow", "grey"]))]
    corner = int(bw * rng.uniform(0.05, 0.3))
    _rounded_rect(patch, bx1, by1, bx1 + bw - 1, by1 + bh - 1, corner,
                  (np.array(body) * rng.uniform(0.8, 1.2)).tolist())
    lit = LIT.get(light.label)
    led = rng.random() < 0.35
    lamp_colours = np.array([[255, rng.uniform(20, 70), rng.uniform(10, 50)],
                             [255, rng.uniform(150, 200), rng.uniform(0, 40)],
                             [rng.uniform(0, 70), 255, rng.uniform(120, 210)]], np.float32)
    radius = bw * rng.uniform(0.3, 0.4)
    for position in range(3):
        cx, cy = bx1 + bw / 2, by1 + bh * (2 * position + 1) / 6
        colour = lamp_colours[position]
        on = lit is not None and lit[0] == position
        face = colour * rng.uniform(0.85, 1.0) if on else colour * rng.uniform(0.08, 0.2) + 15
        cv2.circle(patch, (round(cx), round(cy)), round(radius), [12, 12, 12], -1, cv2.LINE_AA)
        if on and lit[1] != "disc":
            for part in _arrow(cx, cy, radius, lit[1]):
                cv2.fillPoly(patch, [np.round(part).astype(np.int32)], face.tolist(), cv2.LINE_AA)
        else:
            cv2.circle(patch, (round(cx), round(cy)), round(radius * 0.95), face.tolist(), -1,
                       cv2.LINE_AA)
        if led and on:  # LED faces: a grid of dark gaps over the lit glyph
            pitch = max(3, int(radius / 3))
            rows = slice(int(cy - radius), int(cy + radius), pitch)
            patch[rows, int(cx - radius):int(cx + radius)] *= 0.55
        visor = (np.array(body) * 0.7).tolist()
        cv2.ellipse(patch, (round(cx), round(cy)), (round(radius * 1.1), round(radius * 1.1)),
                    0, 200, 340, visor, max(1, round(radius * 0.18)), cv2.LINE_AA)
        if on:
            _glow(patch, (cx, cy), radius, colour, 0.5 if night else 0.3)
    small = cv2.resize(patch, (px1 - px0, py1 - py0), interpolation=cv2.INTER_AREA)
    image[py0:py1, px0:px1] = small


def _rounded_rect(image: np.ndarray, x1: int, y1: int, x2: int, y2: int, radius: int,
                  colour: list[float]) -> None:
    radius = max(0, min(radius, (x2 - x1) // 2, (y2 - y1) // 2))
    cv2.rectangle(image, (x1 + radius, y1), (x2 - radius, y2), colour, -1)
    cv2.rectangle(image, (x1, y1 + radius), (x2, y2 - radius), colour, -1)
    for cx, cy in ((x1 + radius, y1 + radius), (x2 - radius, y1 + radius),
                   (x1 + radius, y2 - radius), (x2 - radius, y2 - radius)):
        cv2.circle(image, (cx, cy), radius, colour, -1, cv2.LINE_AA)


def _place(rng: np.random.Generator, width: int, height: int) -> list[Light]:
    """1-6 lights, housings 8-60 px wide (log-uniform), not overlapping, with their own pole."""
    lights: list[Light] = []
    wanted = int(rng.integers(1, 7))
    low, high = np.log(HOUSING_WIDTH[0]), np.log(HOUSING_WIDTH[1])
    for _ in range(wanted * 30):
        if len(lights) == wanted:
            break
        box_w = round(float(np.exp(rng.uniform(low, high))))
        box_h = round(box_w * rng.uniform(2.5, 3.0))
        x1 = int(rng.integers(2, width - box_w - 2))
        y1 = int(rng.integers(2, max(3, int(height * 0.8) - box_h)))
        box = (x1, y1, x1 + box_w - 1, y1 + box_h - 1)
        gap = max(box_w, 6)
        if all(_apart(box, other.box, gap) for other in lights):
            lights.append(Light(str(rng.choice(LABELS)), box))
    return lights


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def _camera(rng: np.random.Generator, image: np.ndarray, light: Lighting) -> np.ndarray:
    h, w = image.shape[:2]
    image = image * light.exposure * rng.uniform(0.9, 1.1, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    image *= (1 - rng.uniform(0, 0.4) * (((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2)
              * 2)[..., None]
    blur = rng.random()
    if blur < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    elif blur < 0.45:
        length = int(rng.integers(2, 4))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length  # horizontal pan
        image = cv2.filter2D(image, -1, kernel)
    image = np.clip(image, 0, 255)
    gain = rng.uniform(1, 6) if light.name == "night" else rng.uniform(4, 20)
    image = rng.poisson(image * gain / 10) * 10 / gain
    return np.clip(image, 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, size: tuple[int, int] | None = None
           ) -> tuple[np.ndarray, list[Light]]:
    """One RGB uint8 street scene and its lights; `size` (width, height) or one of FRAME_SIZES."""
    drawn = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    width, height = size or drawn
    light = _lighting(rng)
    image = _street(rng, width, height, light)
    lights = _place(rng, width, height)
    for item in lights:
        x = (item.box[0] + item.box[2]) // 2
        pole_w = max(1, (item.box[2] - item.box[0]) // 6)
        cv2.line(image, (x, item.box[3]), (x, height - 1), [60, 60, 60], pole_w)
    for item in lights:
        _draw_housing(rng, image, item, light.name == "night")
    return _camera(rng, image, light), lights


def write_set(out: Path, count: int, seed: int, sheet_count: int = 12) -> Path:
    """Writes `count` scenes, label_list.txt, valid.txt and contact_sheet.png; returns `out`."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
    (out / "label_list.txt").write_text("".join(f"{label}\n" for label in LABELS))
    lines = []
    for index in range(count):
        rng = np.random.default_rng([STREAM, seed, index])
        image, lights = render(rng)
        stem = f"{index:06d}"
        cv2.imwrite(str(out / "images" / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
        voc_xml(f"{stem}.jpg", image.shape[1], image.shape[0], lights).write(
            out / "annotations" / "xmls" / f"{stem}.xml")
        lines.append(f"images/{stem}.jpg annotations/xmls/{stem}.xml\n")
    (out / LIST_FILE).write_text("".join(lines))
    write_contact_sheet(out, LIST_FILE, out / "contact_sheet.png", count=sheet_count)
    write_light_sheet(out, lines[:sheet_count * 2], out / "contact_sheet_lights.png")
    return out


def write_light_sheet(out: Path, lines: list[str], path: Path, count: int = 48) -> Path:
    """The lights themselves, cut out with a margin and enlarged: at full-frame scale the small
    ones are a few pixels of the scene sheet."""
    tiles, captions = [], []
    for line in lines:
        image_rel, xml_rel = line.split()
        image = cv2.cvtColor(cv2.imread(str(out / image_rel)), cv2.COLOR_BGR2RGB)
        for item in read_voc_xml(out / xml_rel):
            x1, y1, x2, y2 = item.box
            side = max(x2 - x1, y2 - y1) * 0.7
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            top, left = max(0, int(cy - side)), max(0, int(cx - side))
            tiles.append(cv2.resize(image[top:int(cy + side) + 1, left:int(cx + side) + 1],
                                    (160, 160), interpolation=cv2.INTER_NEAREST))
            captions.append(f"{item.label} {x2 - x1 + 1}px")
    return common.write_contact_sheet(tiles[:count], captions[:count], path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.traffic_scenes",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/evaluation/traffic_light"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--count", type=int, default=200, help="scenes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    print(write_set(args.out, args.count, args.seed) / LIST_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
