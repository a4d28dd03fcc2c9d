"""Independent peach evaluation images: the training set's class rule, drawn by other code.

Same grades as train/peach_data.py (README "Peach classes"): d = horizontal diameter measured in
the 256 px reference frame, i.e. relative to the short side of the image (the served
preprocessing resizes the short side to 256 and keeps the centre 224 crop), red = share of the
skin covered by blush:

    R0  150 <= d <= 186, 0.65 <= red <= 0.95      M2  108 <= d <= 132, any red
    B1  150 <= d <= 186, 0.00 <= red <= 0.25      S3   66 <= d <=  90, any red

Everything else is drawn differently from the training generator: frames of 240-1080 px short
side with aspect ratios 1:1 to 16:9 in both orientations; four drawing styles (flat colour,
outlined cartoon, smooth-shaded with a specular spot, and grainy photo-like), none with the
training set's noise-textured blush; blush shapes cut by a straight line, grown from a point,
streaked or spotted; ground colours from greenish to orange yellow and blush hues from orange-red
to crimson and maroon; a silhouette with a cleft and lobes; checkerboard, conveyor belt, paper,
bokeh, plank and plain backgrounds seen under a perspective tilt; coloured light, hard cast
shadows, vignetting; defocus or motion blur, shot noise, colour fringes, and JPEG, PNG or WebP.

Layout (PaddleClas): <out>/images/R0/00000.jpg, val_list.txt lines "images/R0/00000.jpg 0",
label_list.txt, contact_sheet.png. Never used for training. Usage: python -m
evaluation.peach_scenes --help
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from train.common import write_contact_sheet

LABELS = ("R0", "B1", "M2", "S3")
REFERENCE = 256  # the serving resize_short: diameters are given in this frame's pixels
CROP_SHARE = 224 / 256  # the peach lies inside the served centre crop
DIAMETERS = {"R0": (150, 186), "B1": (150, 186), "M2": (108, 132), "S3": (66, 90)}
RED_SHARE = {"R0": (0.65, 0.95), "B1": (0.0, 0.25), "M2": (0.0, 0.95), "S3": (0.0, 0.95)}
SHORT_SIDES = (240, 300, 384, 480, 600, 720, 1080)
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)
LIST_FILE = "val_list.txt"


@dataclass(frozen=True)
class PeachDraw:
    label: str
    diameter_ref: float  # d in the 256 reference frame
    red_share: float
    style: str
    blush_shape: str
    background: str
    size: tuple[int, int]  # (width, height) of the image


def _frame_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.choice(SHORT_SIDES))
    long = round(short * float(rng.choice(ASPECTS)))
    return (long, short) if rng.random() < 0.75 else (short, long)


def _silhouette(rng: np.random.Generator, width: int, height: int, centre: tuple[float, float],
                diameter: float) -> np.ndarray:
    """Float mask (antialiased) of a lobed peach outline whose horizontal extent is `diameter`."""
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = 1 + sum(rng.uniform(0, 0.035) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
                     for k in (2, 3, 5))
    cleft = rng.uniform(0.0, 0.08) * np.exp(-((angles - 1.5 * np.pi) / 0.18) ** 2)  # top notch
    radius = radius - cleft
    stretch = rng.uniform(0.92, 1.08)
    xs, ys = radius * np.cos(angles), radius * np.sin(angles) * stretch
    scale = diameter / (xs.max() - xs.min())
    points = np.stack([centre[0] + xs * scale, centre[1] + ys * scale], axis=1)
    supersample = 4
    canvas = np.zeros((height * supersample, width * supersample), np.uint8)
    cv2.fillPoly(canvas, [np.round(points * supersample).astype(np.int32)], 255)
    mask = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    return mask.astype(np.float32) / 255


def _blush_field(rng: np.random.Generator, shape: str, nx: np.ndarray, ny: np.ndarray
                 ) -> np.ndarray:
    """A scalar field over the peach; the blush is its top `red_share` quantile."""
    if shape == "cut":  # a straight boundary at a random angle
        angle = rng.uniform(0, 2 * np.pi)
        return np.cos(angle) * nx + np.sin(angle) * ny
    if shape == "grown":  # grows from a point near the rim
        angle = rng.uniform(0, 2 * np.pi)
        return -np.hypot(nx - 0.7 * np.cos(angle), ny - 0.7 * np.sin(angle))
    if shape == "streaks":  # meridian streaks
        phase = rng.uniform(0, 2 * np.pi)
        return np.sin(np.arctan2(ny, nx) * rng.integers(5, 11) + phase) + 0.4 * nx
    field = np.zeros_like(nx)  # spots: a few round patches of several sizes
    for _ in range(int(rng.integers(4, 12))):
        cx, cy, size = rng.uniform(-0.9, 0.9), rng.uniform(-0.9, 0.9), rng.uniform(0.15, 0.5)
        field = np.maximum(field, np.exp(-((nx - cx) ** 2 + (ny - cy) ** 2) / size ** 2))
    return field


BLUSH_SHAPES = ("cut", "grown", "streaks", "spots")
STYLES = ("flat", "cartoon", "shaded", "photo")
BACKGROUNDS = ("checker", "conveyor", "paper", "bokeh", "planks", "plain")


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ground, blush) RGB: greenish to orange-yellow grounds, orange-red to maroon blushes."""
    grounds = {"yellow": ([235, 210, 90], 20), "cream": ([240, 225, 170], 15),
               "greenish": ([205, 215, 110], 20), "orange": ([245, 180, 80], 20)}
    blushes = {"crimson": ([190, 20, 50], 20), "scarlet": ([215, 45, 30], 20),
               "maroon": ([125, 20, 35], 15), "orange-red": ([225, 75, 35], 15),
               "pinkish": ([205, 60, 85], 15)}
    pick = lambda table: table[list(table)[rng.integers(len(table))]]  # noqa: E731
    (ground, g_spread), (blush, b_spread) = pick(grounds), pick(blushes)
    return (np.clip(np.array(ground) + rng.uniform(-g_spread, g_spread, 3), 0, 255),
            np.clip(np.array(blush) + rng.uniform(-b_spread, b_spread, 3), 0, 255))


def _perspective(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The table seen at a tilt: a random homography of the background plane."""
    h, w = image.shape[:2]
    source = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    squeeze = rng.uniform(0, 0.25) * w
    target = np.float32([[squeeze, 0], [w - squeeze, 0], [w, h], [0, h]])
    big = np.float32([[-squeeze, -0.1 * h], [w + squeeze, -0.1 * h], [w, h], [0, h]])
    matrix = cv2.getPerspectiveTransform(source, big if rng.random() < 0.5 else target)
    return cv2.warpPerspective(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def _background(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.uniform(30, 230, 3).astype(np.float32)
    other = rng.uniform(30, 230, 3).astype(np.float32)
    if kind == "checker":
        cell = rng.uniform(0.04, 0.15) * min(width, height)
        on = ((xs // cell + ys // cell) % 2)[..., None]
        image = colour * on + other * (1 - on)
    elif kind == "conveyor":
        belt = np.array([60, 62, 65], np.float32) * rng.uniform(0.6, 1.4)
        ridges = (np.sin(ys / (rng.uniform(0.01, 0.03) * height) * 2 * np.pi) > 0.7)[..., None]
        image = belt + ridges * rng.uniform(10, 30)
    elif kind == "paper":
        image = np.full((height, width, 3), rng.uniform(200, 250), np.float32) * [1, 1, 0.97]
        fibres = cv2.GaussianBlur(rng.normal(0, 8, (height, width)).astype(np.float32), (0, 0), 2)
        image = image + fibres[..., None]
    elif kind == "bokeh":
        image = np.broadcast_to(colour * 0.5, (height, width, 3)).copy()
        for _ in range(int(rng.integers(10, 30))):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            radius = int(rng.uniform(0.02, 0.1) * min(width, height))
            cv2.circle(image, centre, radius, rng.uniform(60, 255, 3).tolist(), -1, cv2.LINE_AA)
        image = cv2.GaussianBlur(image, (0, 0), max(1.0, 0.01 * min(width, height)))
    elif kind == "planks":
        plank = rng.uniform(0.08, 0.2) * width
        wood = np.array([150, 105, 65], np.float32) * rng.uniform(0.6, 1.3)
        rings = np.sin((xs % plank) / plank * rng.uniform(6, 20) + ys / height * 3)[..., None]
        seams = ((xs % plank) < max(2, plank * 0.03))[..., None]
        image = wood * (1 + 0.12 * rings) * (1 - 0.5 * seams)
    else:
        image = np.broadcast_to(colour, (height, width, 3)).copy()
    return _perspective(rng, np.clip(image, 0, 255).astype(np.float32))


def _skin(rng: np.random.Generator, style: str, ground: np.ndarray, blush: np.ndarray,
          blush_mask: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
    skin = ground * (1 - blush_mask[..., None]) + blush * blush_mask[..., None]
    if style == "flat":
        return skin
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.3), 1.0])
    light /= np.linalg.norm(light)
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    if style == "cartoon":  # two tones
        return skin * np.where(lambert > 0.45, 1.0, 0.72)[..., None]
    shaded = skin * (0.35 + 0.65 * lambert)[..., None]
    spot = np.clip(lambert, 0, 1) ** rng.uniform(30, 80) * rng.uniform(40, 110)
    if style == "photo":  # fine grain in the skin
        grain = rng.normal(0, rng.uniform(3, 9), skin.shape[:2])[..., None]
        return shaded + grain + spot[..., None] * 0.5
    return shaded + spot[..., None]


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    tint = rng.uniform(0.85, 1.15, 3)
    image = image * tint * rng.uniform(0.6, 1.3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1 - rng.uniform(0, 0.35) * (((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2) * 2
    image = image * vignette[..., None]
    scale = min(w, h) / REFERENCE
    if rng.random() < 0.5:  # defocus: a disc kernel
        radius = max(1, round(rng.uniform(0.5, 2.0) * scale))
        kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
        cv2.circle(kernel, (radius, radius), radius, 1.0, -1)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    elif rng.random() < 0.5:  # motion blur along a random direction
        length = max(2, round(rng.uniform(1, 4) * scale))
        kernel = np.zeros((length, length), np.float32)
        angle = rng.uniform(0, 180)
        centre = (length - 1) / 2
        end = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))]) * centre
        cv2.line(kernel, (round(centre - end[0]), round(centre - end[1])),
                 (round(centre + end[0]), round(centre + end[1])), 1.0, 1)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    image = np.clip(image, 0, 255)
    image = rng.poisson(image * rng.uniform(0.5, 4)) / rng.uniform(0.5, 4) if rng.random() < 0.5 \
        else image + rng.normal(0, rng.uniform(0, 5), image.shape)
    if rng.random() < 0.3:  # colour fringes: red and blue planes shifted
        shift = max(1, round(scale))
        image[..., 0] = np.roll(image[..., 0], shift, axis=1)
        image[..., 2] = np.roll(image[..., 2], -shift, axis=1)
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Rendered:
    rgb: np.ndarray  # HWC uint8
    mask: np.ndarray  # float coverage of the peach, antialiased
    blush: np.ndarray  # blush weight in [0, 1]


def render(draw: PeachDraw, rng: np.random.Generator) -> Rendered:
    """The drawn peach: the image, and where the peach and its blush are (for checks)."""
    width, height = draw.size
    short = min(width, height)
    diameter = draw.diameter_ref * short / REFERENCE
    reach = max(0.0, (CROP_SHARE * short - diameter * 1.12) / 2)
    centre = (width / 2 + rng.uniform(-reach, reach), height / 2 + rng.uniform(-reach, reach))
    image = _background(rng, draw.background, width, height)
    shadow_offset = rng.uniform(-0.15, 0.15, 2) * diameter
    shadow = _silhouette(rng, width, height, (centre[0] + shadow_offset[0],
                                              centre[1] + abs(shadow_offset[1])), diameter)
    image = image * (1 - rng.uniform(0.2, 0.5) * shadow)[..., None]
    mask = _silhouette(rng, width, height, centre, diameter)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    nx, ny = (xs - centre[0]) / (diameter / 2), (ys - centre[1]) / (diameter / 2)
    inside = mask > 0.5
    field = _blush_field(rng, draw.blush_shape, nx, ny)
    if draw.red_share > 0:
        threshold = np.quantile(field[inside], 1 - draw.red_share)
        softness = rng.choice([0.0, 0.05]) * (field[inside].std() + 1e-6)
        blush = (field >= threshold).astype(np.float32) if softness == 0 else \
            np.clip((field - threshold) / softness + 0.5, 0, 1)
    else:
        blush = np.zeros_like(field)
    ground, red = _colours(rng)
    skin = _skin(rng, draw.style, ground, red, blush, nx, ny)
    if draw.style == "cartoon":  # a dark outline around the fruit
        edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                                np.ones((3, 3), np.uint8)).astype(bool)
        skin[edge] = skin[edge] * 0.25
    image = image * (1 - mask[..., None]) + skin * mask[..., None]
    stem_top = (round(centre[0]), round(centre[1] - diameter * 0.5))
    cv2.line(image, stem_top, (stem_top[0] + round(diameter * 0.03),
                               stem_top[1] - round(diameter * 0.06)), (70, 50, 30),
             max(1, round(diameter * 0.03)), cv2.LINE_AA)
    return Rendered(_camera(rng, image), mask, blush)


def encode(rng: np.random.Generator, rgb: np.ndarray) -> tuple[bytes, str]:
    """JPEG (quality 40-95), PNG or WebP bytes and the file suffix."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    kind = rng.choice(["jpg", "jpg", "png", "webp"])
    params = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))],
              "webp": [cv2.IMWRITE_WEBP_QUALITY, int(rng.integers(50, 96))], "png": []}[kind]
    ok, data = cv2.imencode(f".{kind}", bgr, params)
    if not ok:
        raise RuntimeError(f"{kind} encoding failed")
    return data.tobytes(), str(kind)


def sample_draw(index: int, rng: np.random.Generator) -> PeachDraw:
    """Image `index` has class LABELS[index % 4]; the rest is drawn from `rng`."""
    label = LABELS[index % len(LABELS)]
    choose: Callable[[tuple[str, ...]], str] = lambda options: str(rng.choice(options))  # noqa: E731
    return PeachDraw(label=label, diameter_ref=float(rng.uniform(*DIAMETERS[label])),
                     red_share=float(rng.uniform(*RED_SHARE[label])), style=choose(STYLES),
                     blush_shape=choose(BLUSH_SHAPES), background=choose(BACKGROUNDS),
                     size=_frame_size(rng))


STREAM = 21  # keeps these random streams apart from any other generator's seeds


def write_set(out: Path, count: int, seed: int, sheet_count: int = 32) -> Path:
    """Writes `count` images, label_list.txt, val_list.txt and contact_sheet.png; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_list.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(LABELS)))
    lines, tiles, captions = [], [], []
    for index in range(count):
        rng = np.random.default_rng([STREAM, seed, index])
        draw = sample_draw(index, rng)
        rgb = render(draw, rng).rgb
        data, suffix = encode(rng, rgb)
        relative = f"images/{draw.label}/{index:05d}.{suffix}"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
        lines.append(f"{relative} {LABELS.index(draw.label)}\n")
        if len(tiles) < sheet_count:
            short = min(rgb.shape[:2])
            top, left = (rgb.shape[0] - short) // 2, (rgb.shape[1] - short) // 2
            tiles.append(rgb[top:top + short, left:left + short])
            captions.append(f"{draw.label} d={draw.diameter_ref:.0f} r={draw.red_share:.2f}")
    (out / LIST_FILE).write_text("".join(lines))
    write_contact_sheet(tiles, captions, out / "contact_sheet.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.peach_scenes",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/evaluation/peach"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--count", type=int, default=400, help="images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    print(write_set(args.out, args.count, args.seed) / LIST_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
