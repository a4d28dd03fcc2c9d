"""Pieces both trainings share: deterministic seeding and the contact sheet a person looks at."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and paddle so a training run is repeatable on the same machine."""
    import paddle  # imported here: data generation must not pay for paddle

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def write_contact_sheet(tiles: Sequence[np.ndarray], captions: Sequence[str], path: Path,
                        columns: int = 8, tile_size: int = 160) -> Path:
    """Grid of RGB images with a caption strip under each, written as PNG for a human check."""
    caption_height = 22
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (tile_size + caption_height), columns * tile_size, 3), 255, np.uint8)
    for index, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        top = (index // columns) * (tile_size + caption_height)
        left = (index % columns) * tile_size
        sheet[top:top + tile_size, left:left + tile_size] = cv2.resize(tile, (tile_size, tile_size))
        cv2.putText(sheet, caption, (left + 4, top + tile_size + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
