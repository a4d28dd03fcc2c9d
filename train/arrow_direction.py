"""Teach the detector which way arrows point: pretrain its stem on lamp crops, then freeze it.

Trained from scratch inside the detector, the x0.25 MobileNetV1 learns lamp colours but never
which way an arrow points (train.arrow_probe: Left/Right at chance at every level). Measured on
crops (docs/models.md): the same backbone learns direction in a few hundred iterations when the task
is only Left vs Right on a crop around the lit lamp, placed up to `jitter_px` off-centre so the
features do not depend on where the lamp sits. It stays at chance on whole-housing crops, with
the 8 classes at once (colour is learnt first), and with heads on the deeper levels as well
(their gradients drown the stride-8 one), so the one head reads the stride-8 output.

Detection training washes that feature out again within an epoch or two (probe at the lamp
0.88 -> 0.55; 0.62 with the backbone's learning rate at 0.2; an auxiliary Left/Right loss at
the lamps did not hold it either). So the detector keeps the pretrained layers up to stride 8
as they are (`frozen_layers`: weights and batch-norm statistics) and trains the rest.
Both steps are configured in the detector config's `ArrowDirection` section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import paddle
from ppdet.core.workspace import create

from model.preprocess import Preprocessor
from train.arrow_probe import arrow_scenes

LOG = partial(print, flush=True)


@dataclass(frozen=True)
class ArrowDirectionSpec:
    """The `ArrowDirection` section of a detector config."""

    scenes: int = 2000           # pretraining: first scenes of the training list to crop
    iterations: int = 1500
    batch_size: int = 32
    base_lr: float = 0.01
    crop_px: int = 48            # square crop at the network input
    jitter_px: int = 12          # the lamp lands up to this far from the crop's centre
    holdout: float = 0.1         # share of crops kept aside to report accuracy
    frozen_layers: tuple[str, ...] = ()  # detection: backbone sublayers kept as pretrained


def arrow_crops(root: Path, list_file: str, spec: ArrowDirectionSpec, preprocessor: Preprocessor,
                rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    """(CHW float16 crop at the network input, points left) for every arrow light of the first
    scenes (the probe's arrow_scenes); the lit lamp lands up to `jitter_px` from the centre."""
    half, margin = spec.crop_px // 2, spec.crop_px
    for image, lights in arrow_scenes(root, list_file, spec.scenes, preprocessor):
        padded = np.pad(image, ((0, 0), (margin, margin), (margin, margin)))
        for is_left, (lamp_x, lamp_y), _centre, _radius in lights:
            shift_x, shift_y = rng.uniform(-spec.jitter_px, spec.jitter_px, 2)
            x = round(lamp_x + shift_x) + margin
            y = round(lamp_y + shift_y) + margin
            crop = padded[:, y - half:y + half, x - half:x + half]
            yield crop.astype(np.float16), is_left


class DirectionClassifier(paddle.nn.Layer):
    """The detector's backbone with a pooled Left/Right head on its finest output (stride 8)."""

    def __init__(self, backbone: paddle.nn.Layer) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = paddle.nn.Linear(backbone.out_shape[0].channels, 2)

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        finest = self.backbone({"image": images})[0]
        return self.head(finest.mean(axis=[2, 3]))


def accuracy(model: DirectionClassifier, crops: np.ndarray, is_left: np.ndarray) -> float:
    model.eval()
    with paddle.no_grad():
        predicted = np.concatenate(
            [model(paddle.to_tensor(crops[i:i + 256].astype(np.float32))).numpy().argmax(1)
             for i in range(0, len(crops), 256)])
    model.train()
    return float((predicted == is_left).mean())


@dataclass(frozen=True)
class Pretrained:
    state: dict[str, paddle.Tensor]  # the detector's parameter names (`backbone.` prefix)
    crops: int
    held_out_accuracy: float         # Left/Right on the held-out crops, after the last iteration


def pretrain_backbone(spec: ArrowDirectionSpec, root: Path, list_file: str,
                      preprocessor: Preprocessor, seed: int,
                      log: Callable[[str], None] = LOG) -> Pretrained:
    """Trains a fresh backbone (ppdet's configured one) to tell left from right arrows."""
    rng = np.random.default_rng(seed)
    pairs = list(arrow_crops(root, list_file, spec, preprocessor, rng))
    if len(pairs) < 2:
        raise ValueError(f"the lamp pretraining needs arrow lights: {len(pairs)} in the first "
                         f"{spec.scenes} scenes of {root / list_file}")
    crops = np.stack([crop for crop, _ in pairs])
    is_left = np.array([left for _, left in pairs], np.int64)
    kept = len(crops) - max(1, int(len(crops) * spec.holdout))
    log(f"[arrow-direction] {len(crops)} arrow crops from {spec.scenes} scenes, "
        f"{spec.iterations} iterations")
    model = DirectionClassifier(create("MobileNet"))
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(spec.base_lr, spec.iterations)
    optimizer = paddle.optimizer.Momentum(schedule, momentum=0.9, weight_decay=5e-4,
                                          parameters=model.parameters())
    for iteration in range(1, spec.iterations + 1):
        batch = rng.integers(0, kept, spec.batch_size)
        target = paddle.to_tensor(is_left[batch])
        logits = model(paddle.to_tensor(crops[batch].astype(np.float32)))
        loss = paddle.nn.functional.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        if iteration % 250 == 0 or iteration == spec.iterations:
            held_out = accuracy(model, crops[kept:], is_left[kept:])
            log(f"[arrow-direction] iteration {iteration}: loss {float(loss):.3f}, held-out "
                f"Left/Right accuracy {held_out:.3f}")
    state = {f"backbone.{name}": value for name, value in model.backbone.state_dict().items()}
    return Pretrained(state, len(crops), held_out)


def freeze_pretrained_layers(backbone: paddle.nn.Layer, names: tuple[str, ...]) -> None:
    """Keeps the named backbone sublayers as pretrained: no gradient, and batch norm with the
    pretraining's running statistics (detection batches would shift them)."""
    for name in names:
        layer = getattr(backbone, name)
        for parameter in layer.parameters():
            parameter.stop_gradient = True
        for sublayer in layer.sublayers(include_self=True):
            if isinstance(sublayer, paddle.nn.BatchNorm2D):
                sublayer._use_global_stats = True  # paddle's switch (nn/layer/norm.py)
