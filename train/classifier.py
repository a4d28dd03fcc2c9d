"""Train the built-in peach classifier (PP-LCNetV2_base, 4 grades) from scratch, then export it.

The paddleclas wheel ships only the architectures, so this is a small plain-paddle loop:
AdamW (no weight decay on BN scales/shifts and biases), gradient clipping, a long linear warmup
then cosine, one math thread (faster than two on this 2-core machine), validation every
`eval_interval` iterations, best checkpoint kept, early stop once the validation top-1 has held a
target for a few evaluations. Training sees exactly the serving preprocessing of
models/peach/model.yml (same resize, same center crop: no scale jitter and no crop offsets, because
the apparent size is what separates the grades and an offset crop could cut a peach), plus
horizontal flips and mild colour jitter.

    python -m train.classifier --help
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import yaml
from tqdm import tqdm

from export.classifier_checkpoint import build_classifier, export_inference_model, load_config
from model.preprocess import Preprocessor, decode_image
from train import peach_data
from train.common import seed_everything
from train.peach_data import read_class_list, read_label_list, write_dataset

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "train/configs/pplcnetv2_base_peach.yml"
MODEL_YML = ROOT / "models/peach/model.yml"
BEST_WEIGHTS = "best.pdparams"

log = logging.getLogger("train.classifier")


@dataclass
class TrainAugmentation:
    """Serving steps up to the center crop, then flip and colour jitter, then the other steps."""

    up_to_crop: Preprocessor
    after_crop: Preprocessor

    @classmethod
    def from_serving_steps(cls, steps: Sequence[Mapping[str, Any]]) -> TrainAugmentation:
        crop_at = next(i for i, step in enumerate(steps) if step["type"] == "CropImage")
        return cls(Preprocessor(steps[:crop_at + 1]), Preprocessor(steps[crop_at + 1:]))

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = self.up_to_crop.from_array(rgb).image
        if rng.random() < 0.5:
            image = image[:, ::-1]  # keeps the horizontal diameter, which the rule reads
        gain = rng.uniform(0.85, 1.15)  # brightness
        contrast = rng.uniform(0.85, 1.15)
        grey = image.mean(axis=2, keepdims=True)
        saturation = rng.uniform(0.9, 1.1)
        jittered = (grey + (image - grey) * saturation - 128) * contrast + 128
        image = np.clip(jittered * gain, 0, 255).astype(np.uint8)
        return self.after_crop.from_array(np.ascontiguousarray(image)).image


def serving_steps() -> list[dict[str, Any]]:
    return yaml.safe_load(MODEL_YML.read_text())["preprocess"]


def evaluation_batch(paths: Sequence[Path], preprocessor: Preprocessor) -> np.ndarray:
    return np.stack([preprocessor(path.read_bytes()).image for path in paths])


def top1(model: paddle.nn.Layer, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    model.eval()
    correct = 0
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(paddle.to_tensor(images[start:start + batch_size]))
            predicted = logits.argmax(axis=1).numpy()
            correct += int((predicted == labels[start:start + batch_size]).sum())
    model.train()
    return correct / len(images)


def learning_rate(config: dict[str, Any], iterations: int) -> paddle.optimizer.lr.LRScheduler:
    settings = config["Optimizer"]["lr"]
    peak, warmup = float(settings["learning_rate"]), min(int(settings["warmup_iters"]), iterations)
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(peak, T_max=max(1, iterations - warmup))
    return paddle.optimizer.lr.LinearWarmup(cosine, warmup, start_lr=peak / 20, end_lr=peak)


def optimizer_for(config: dict[str, Any], model: paddle.nn.Layer,
                  schedule: paddle.optimizer.lr.LRScheduler | float) -> paddle.optimizer.AdamW:
    """AdamW decaying only conv/linear kernels, with the global gradient norm clipped.

    1-D parameters are the BN scales/shifts and the biases: decaying them only fights BN.
    """
    settings = config["Optimizer"]
    kernels = {param.name for param in model.parameters() if param.ndim > 1}
    return paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=model.parameters(),
        weight_decay=float(settings["weight_decay"]),
        apply_decay_param_fun=lambda name: name in kernels,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(float(settings["clip_grad_norm"])))


@dataclass
class EarlyStop:
    """Stop once the validation top-1 has been >= `top1` on `evaluations` evaluations in a row."""

    top1: float
    evaluations: int
    held: int = 0

    def should_stop(self, accuracy: float) -> bool:
        self.held = self.held + 1 if accuracy >= self.top1 else 0
        return self.held >= self.evaluations


@dataclass
class TrainResult:
    best_top1: float
    best_iteration: int
    seconds: float
    weights: Path
    iterations_run: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (iteration, val top-1)


def train(config: dict[str, Any], data_dir: Path, out: Path, iterations: int, seed: int,
          batch_size: int) -> TrainResult:
    seed_everything(seed)
    train_samples = read_class_list(data_dir, "train_list.txt")
    val_samples = read_class_list(data_dir, "val_list.txt")
    steps = serving_steps()
    augment = TrainAugmentation.from_serving_steps(steps)
    val_images = evaluation_batch([path for path, _ in val_samples], Preprocessor(steps))
    val_labels = np.array([label for _, label in val_samples])
    train_jpegs = [path.read_bytes() for path, _ in train_samples]
    train_labels = np.array([label for _, label in train_samples])

    model = build_classifier(config)
    schedule = learning_rate(config, iterations)
    optimizer = optimizer_for(config, model, schedule)
    stop = EarlyStop(**config["Global"]["early_stop"])
    eval_interval = int(config["Global"]["eval_interval"])
    eval_batch = int(config["DataLoader"]["Eval"]["batch_size"])
    out.mkdir(parents=True, exist_ok=True)
    best = TrainResult(-1.0, 0, 0.0, out / BEST_WEIGHTS)
    order = np.random.default_rng(seed).permutation(len(train_jpegs))
    cursor, started = 0, time.perf_counter()
    model.train()
    progress = tqdm(range(1, iterations + 1), desc="peach classifier", unit="it")
    for iteration in progress:
        if cursor + batch_size > len(order):  # next epoch, reshuffled deterministically
            order, cursor = np.random.default_rng([seed, iteration]).permutation(len(order)), 0
        indices = order[cursor:cursor + batch_size]
        cursor += batch_size
        rng = np.random.default_rng([seed, 1, iteration])
        images = np.stack([augment(decode_image(train_jpegs[i]), rng) for i in indices])
        loss = paddle.nn.functional.cross_entropy(
            model(paddle.to_tensor(images)), paddle.to_tensor(train_labels[indices]))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        progress.set_postfix(loss=f"{float(loss):.3f}", lr=f"{schedule.get_lr():.1e}")
        if iteration % eval_interval == 0 or iteration == iterations:
            accuracy = top1(model, val_images, val_labels, eval_batch)
            log.info("iteration %d: loss %.4f, val top-1 %.4f", iteration, float(loss), accuracy)
            best.curve.append((iteration, accuracy))
            if accuracy > best.best_top1:
                best.best_top1, best.best_iteration = accuracy, iteration
                paddle.save(model.state_dict(), str(best.weights))
            if stop.should_stop(accuracy):
                log.info("early stop: val top-1 >= %.2f on %d evaluations in a row",
                         stop.top1, stop.evaluations)
                break
    best.seconds = time.perf_counter() - started
    best.iterations_run = iteration
    return best


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.classifier",
        description="Generate the synthetic peach set if missing, train PP-LCNetV2_base from "
                    "scratch at the serving resolution, keep the best checkpoint, export it.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="PaddleClas-style YAML")
    parser.add_argument("--data-dir", type=Path, default=Path("data/peach"),
                        help="dataset (generated here if it has no label_list.txt)")
    parser.add_argument("--out", type=Path, default=Path("build/train/peach"),
                        help="checkpoints and metrics.json")
    parser.add_argument("--iters", type=int, help="iterations (default: config Global.iterations)")
    parser.add_argument("--seed", type=int, help="training seed (default: config Global.seed)")
    parser.add_argument("--batch-size", type=int, help="default: config DataLoader.Train")
    parser.add_argument("--train-images", type=int, default=peach_data.TRAIN_IMAGES,
                        help="when generating the set")
    parser.add_argument("--val-images", type=int, default=peach_data.VAL_IMAGES,
                        help="when generating the set")
    parser.add_argument("--data-seed", type=int, default=0, help="when generating the set")
    parser.add_argument("--export-to", type=Path, default=Path("models/peach/inference"),
                        help="inference model folder; metrics.json goes beside it")
    parser.add_argument("--no-export", action="store_true", help="train only")
    parser.add_argument("--threads", type=int, default=1, help="math threads (1 is fastest here)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)  # dygraph math threads (MKL/oneDNN)
    config = load_config(args.config)
    iterations = args.iters or int(config["Global"]["iterations"])
    seed = int(config["Global"]["seed"]) if args.seed is None else args.seed
    batch_size = args.batch_size or int(config["DataLoader"]["Train"]["batch_size"])
    if not (args.data_dir / "label_list.txt").is_file():
        write_dataset(args.data_dir, args.train_images, args.val_images, args.data_seed)
    read_label_list(args.data_dir / "label_list.txt")  # fail early on a malformed set
    result = train(config, args.data_dir, args.out, iterations, seed, batch_size)
    log.info("best val top-1 %.4f at iteration %d (%.0f s)", result.best_top1,
             result.best_iteration, result.seconds)
    metrics = {
        "command": shlex.join([Path(sys.executable).name, "-m", "train.classifier",
                               *(sys.argv[1:] if argv is None else argv)]),
        "config": os.path.relpath(args.config, ROOT),
        "seed": seed, "iterations": iterations, "iterations_run": result.iterations_run,
        "batch_size": batch_size,
        "best_iteration": result.best_iteration, "val_top1": round(result.best_top1, 4),
        "val_curve": [[step, round(top1, 4)] for step, top1 in result.curve],
        "val_images": len(read_class_list(args.data_dir, "val_list.txt")),
        "training_seconds": round(result.seconds, 1), "paddle": paddle.__version__,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if not args.no_export:
        export_inference_model(args.config, result.weights, args.export_to)
        (args.export_to.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.info("exported %s", args.export_to)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
