"""Fit YOLOv3 anchors to a VOC dataset: k-means of the box sizes at the network input, with
1 - IoU as the distance (the measure the anchor assignment uses), as the YOLO papers do.

The default detector's anchors (train/configs/traffic_light_default.yml, YOLOv3Head and
Gt2YoloTarget) come from this on the generated training list; refit them when you swap in a real
dataset, whose boxes will have other sizes and shapes:

    python -m train.anchors --data-dir data/traffic_light --list train.txt
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from train.traffic_light_data import NETWORK_SIZE, read_voc_xml


def box_sizes(data_dir: Path, list_file: str, input_size: int = NETWORK_SIZE) -> np.ndarray:
    """[N, 2] (width, height) of every box of the list, scaled to the square network input
    (the training Resize does not keep the aspect ratio)."""
    sizes = []
    for line in (data_dir / list_file).read_text().splitlines():
        if not line.strip():
            continue
        xml = data_dir / line.split()[1]
        size = ET.parse(xml).find("size")
        if size is None:
            raise ValueError(f"{xml}: no <size> element (width and height of the image)")
        width, height = (float(size.findtext(tag, "0")) for tag in ("width", "height"))
        for obj in read_voc_xml(xml):
            x1, y1, x2, y2 = obj.box
            sizes.append(((x2 - x1 + 1) * input_size / width, (y2 - y1 + 1) * input_size / height))
    if not sizes:
        raise ValueError(f"{data_dir / list_file}: no boxes")
    return np.array(sizes, dtype=np.float64)


def shape_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[N, K] IoU of boxes and anchors placed at the same centre (sizes only)."""
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0])
             * np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    return inter / (boxes.prod(axis=1)[:, None] + anchors.prod(axis=1)[None, :] - inter)


def fit_anchors(sizes: np.ndarray, count: int = 9, seed: int = 0, restarts: int = 5
                ) -> tuple[np.ndarray, float]:
    """k-means (median update) under 1 - IoU; returns the anchors sorted by area and the mean
    best IoU of the boxes with them (the fit's quality)."""
    if len(sizes) < count:
        raise ValueError(f"{len(sizes)} boxes cannot fit {count} anchors")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, float] | None = None
    for _ in range(restarts):
        anchors = sizes[rng.choice(len(sizes), count, replace=False)]
        for _ in range(300):
            nearest = shape_iou(sizes, anchors).argmax(axis=1)
            updated = np.array([np.median(sizes[nearest == k], axis=0) if (nearest == k).any()
                                else anchors[k] for k in range(count)])
            if np.allclose(updated, anchors):
                break
            anchors = updated
        quality = float(shape_iou(sizes, anchors).max(axis=1).mean())
        if best is None or quality > best[1]:
            best = (anchors, quality)
    assert best is not None
    anchors, quality = best
    return anchors[np.argsort(anchors.prod(axis=1))], quality


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.anchors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/traffic_light"),
                        help="VOC dataset root (default: %(default)s)")
    parser.add_argument("--list", default="train.txt",
                        help="'image xml' list inside it (default: %(default)s)")
    parser.add_argument("--size", type=int, default=NETWORK_SIZE,
                        help="square network input size (default: %(default)s)")
    parser.add_argument("--count", type=int, default=9, help="anchors (default: %(default)s)")
    args = parser.parse_args(argv)
    sizes = box_sizes(args.data_dir, args.list, args.size)
    anchors, quality = fit_anchors(sizes, args.count)
    rounded = [[round(w), round(h)] for w, h in anchors.tolist()]
    print(f"{len(sizes)} boxes, mean best IoU {quality:.3f}\nanchors: {rounded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
