"""Train the built-in traffic-light detector with PaddleDetection's engine, then ship it.

Generates the synthetic dataset (train.traffic_light_data) unless it is already there,
pretrains the backbone on crops of lit arrows and keeps its stem frozen (train.arrow_direction:
trained from scratch, the detector never learns which way an arrow points), trains the
project's YOLOv3 config (easy scenes first, then cluttered ones), evaluates VOC mAP@0.5 on the
validation split every epoch keeping the best checkpoint, exports that checkpoint as the
default inference model and records how it was made in metrics.json beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import paddle
from paddle.base import core
from ppdet.core.workspace import create, load_config
from ppdet.data import source
from ppdet.data.source.voc import VOCDataSet
from ppdet.engine import Trainer
from ppdet.engine.callbacks import Callback

from export.detector_checkpoint import export_inference_model
from train import arrow_direction, arrow_probe, traffic_light_data
from train.common import seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "train" / "configs" / "traffic_light_default.yml"
OBJECTNESS_PRIOR = 0.01  # most anchors see background: start the objectness there


class CurriculumVOCDataSet(VOCDataSet):
    """VOCDataSet that serves `easy_anno_path` for the first `easy_epochs` epochs, then `anno_path`.

    Both lists should hold the same number of images: the batch sampler is sized once.
    ppdet's loader (ppdet/data/reader.py:212-217) starts the next epoch's worker processes, each
    with its own copy of this dataset, as soon as an epoch ends: before the Trainer calls
    set_epoch for it. So set_epoch(n) chooses the records of epoch n + 1 (worker_num >= 1).
    """

    def __init__(self, dataset_dir: str | None = None, anno_path: str | None = None,
                 easy_anno_path: str | None = None, easy_epochs: int = 0,
                 label_list: str | None = None, data_fields: list[str] | None = None,
                 **kwargs: object) -> None:
        super().__init__(dataset_dir=dataset_dir, anno_path=anno_path, label_list=label_list,
                         data_fields=data_fields or ["image"], **kwargs)
        self.hard_anno_path = anno_path
        self.easy_anno_path = easy_anno_path
        self.easy_epochs = easy_epochs
        self._records: dict[str, list[dict]] = {}

    def _records_of(self, anno_path: str) -> list[dict]:
        if anno_path not in self._records:
            self.anno_path = anno_path
            super().parse_dataset()
            self._records[anno_path] = self.roidbs
        return self._records[anno_path]

    def records_for_epoch(self, epoch_id: int) -> list[dict]:
        easy = self.easy_anno_path and epoch_id < self.easy_epochs
        return self._records_of(self.easy_anno_path if easy else self.hard_anno_path)

    def parse_dataset(self) -> None:  # before the first epoch's workers start
        self.roidbs = self.records_for_epoch(0)

    def set_epoch(self, epoch_id: int) -> None:
        super().set_epoch(epoch_id)
        self.roidbs = self.records_for_epoch(epoch_id + 1)


# ppdet looks dataset classes up by name in ppdet.data.source (dataset.py:279)
source.CurriculumVOCDataSet = CurriculumVOCDataSet


class LearningCurve(Callback):
    """Logs and saves validation mAP@0.5 after every evaluation (curve.json in the output)."""

    def __init__(self, trainer: Trainer, path: Path) -> None:
        super().__init__(trainer)
        self.path = path
        self.started = time.monotonic()
        self.points: list[dict[str, float]] = []

    def on_epoch_end(self, status: dict) -> None:
        if status["mode"] != "eval":
            return
        mean_ap = float(self.model._metrics[0].get_results()["bbox"][0])
        self.points.append({"epoch": status["epoch_id"] + 1, "map50": round(mean_ap, 4),
                            "minutes": round((time.monotonic() - self.started) / 60, 2)})
        self.path.write_text(json.dumps(self.points, indent=1))
        print(f"[curve] epoch {status['epoch_id'] + 1}: mAP@0.5 {mean_ap:.3f}", flush=True)


def init_objectness_bias(model: paddle.nn.Layer, prior: float = OBJECTNESS_PRIOR) -> None:
    """Sets each anchor's objectness logit bias to log(p / (1 - p)); ppdet's head leaves it 0,
    which makes the first epochs spend themselves suppressing background."""
    head = model.yolo_head
    for conv in head.yolo_outputs:
        bias = conv.bias.numpy().reshape(-1, head.num_classes + 5)
        bias[:, 4] = float(paddle.log(paddle.to_tensor(prior / (1 - prior))))
        conv.bias.set_value(bias.reshape(-1))


def build_config(config: Path, data_dir: Path, out: Path, epochs: int | None) -> dict:
    cfg = load_config(str(config))
    for split in ("TrainDataset", "EvalDataset"):
        cfg[split]["dataset_dir"] = str(data_dir)
    cfg["TestDataset"]["anno_path"] = str(data_dir / "label_list.txt")
    cfg["save_dir"] = str(out)
    if epochs is not None:
        cfg["epoch"] = epochs
        for scheduler in cfg["LearningRate"]["schedulers"]:
            if scheduler.get("name") == "CosineDecay":
                scheduler["max_epochs"] = epochs
    return cfg


def direction_spec(cfg: dict, pretrain_iterations: int | None
                   ) -> arrow_direction.ArrowDirectionSpec | None:
    """The config's `ArrowDirection` section (None when it has none), iterations overridden."""
    if "ArrowDirection" not in cfg:
        return None
    section = dict(cfg["ArrowDirection"])
    section["frozen_layers"] = tuple(section.get("frozen_layers", ()))
    spec = arrow_direction.ArrowDirectionSpec(**section)
    if pretrain_iterations is None:
        return spec
    return dataclasses.replace(spec, iterations=pretrain_iterations)


def pretrain(cfg: dict, spec: arrow_direction.ArrowDirectionSpec, data_dir: Path, out: Path,
             seed: int) -> arrow_direction.Pretrained:
    """train.arrow_direction's pretraining on the training list; the backbone is saved beside
    the checkpoints."""
    pretrained = arrow_direction.pretrain_backbone(
        spec, data_dir, Path(cfg["TrainDataset"]["anno_path"]).name,
        arrow_probe.input_preprocessor(cfg), seed)
    paddle.save(pretrained.state, str(out / "arrow_direction_backbone.pdparams"))
    return pretrained


def train(cfg: dict, out: Path, pretrained: arrow_direction.Pretrained | None,
          frozen_layers: tuple[str, ...] = ()) -> tuple[Path, list[dict[str, float]]]:
    """Trains with validation, from the arrow-direction backbone with `frozen_layers` kept as
    pretrained when given; returns the best checkpoint and the learning curve."""
    model = create(cfg["architecture"])
    if pretrained is not None:
        model.set_state_dict(pretrained.state)
        arrow_direction.freeze_pretrained_layers(model.backbone, frozen_layers)
    init_objectness_bias(model)
    cfg["model"] = model  # Trainer takes a prebuilt model from cfg.model
    try:
        trainer = Trainer(cfg, mode="train")
    finally:  # load_config returns ppdet's process-wide config: later loads must build anew
        del cfg["model"]
    curve = LearningCurve(trainer, out / "curve.json")
    trainer.register_callbacks([curve])
    trainer.train(validate=True)
    return out / cfg["filename"] / "best_model.pdparams", curve.points


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.detector", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/traffic_light"),
                        help="dataset root, generated when missing (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("build/train/traffic_light"),
                        help="checkpoints, logs and curve.json (default: %(default)s)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="PaddleDetection YAML (default: the project's default detector)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the config's)")
    parser.add_argument("--pretrain-iterations", type=int, default=None,
                        help="iterations of the lamp pretraining (default: the config's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the data and the training (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=traffic_light_data.DatasetSpec.train,
                        help="images per training list, easy and cluttered (default: %(default)s)")
    parser.add_argument("--valid-images", type=int, default=traffic_light_data.DatasetSpec.valid,
                        help="validation images (default: %(default)s)")
    parser.add_argument("--export-to", type=Path, default=Path("models/traffic_light/inference"),
                        help="where the best checkpoint is exported, metrics.json goes to its "
                             "parent; empty string to skip (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    core.set_num_threads(1)  # one math thread trains fastest; the other core loads data
    paddle.set_device("cpu")
    started = time.monotonic()
    spec = traffic_light_data.DatasetSpec(seed=args.seed, train=args.train_images,
                                          train_easy=args.train_images, valid=args.valid_images)
    traffic_light_data.generate(args.data_dir, spec)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = build_config(args.config, args.data_dir, args.out, args.epochs)
    seed_everything(args.seed)
    direction = direction_spec(cfg, args.pretrain_iterations)
    pretrained = direction and pretrain(cfg, direction, args.data_dir, args.out, args.seed)
    best, curve = train(cfg, args.out, pretrained,
                        direction.frozen_layers if direction else ())
    trained_minutes = (time.monotonic() - started) / 60
    metrics = {
        "command": shlex.join([Path(sys.executable).name, "-m", "train.detector",
                               *(sys.argv[1:] if argv is None else argv)]),
        "config": os.path.relpath(args.config.resolve(), ROOT),
        "seed": args.seed,
        "dataset": {"train_images": spec.train, "train_easy_images": spec.train_easy,
                    "valid_images": spec.valid},
        "epochs": cfg["epoch"],
        "iterations": cfg["epoch"] * (spec.train // cfg["TrainReader"]["batch_size"]),
        "training_minutes": round(trained_minutes, 1),
        "valid_map50": max((point["map50"] for point in curve), default=None),
        "map_type": cfg["map_type"],
        "arrow_direction": direction and {
            **dataclasses.asdict(direction), "pretrain_crops": pretrained.crops,
            "pretrain_held_out_accuracy": round(pretrained.held_out_accuracy, 4)},
        "curve": curve,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"best validation mAP@0.5 {metrics['valid_map50']} after {trained_minutes:.1f} min")
    if str(args.export_to) not in ("", "."):
        export_inference_model(args.config, best, args.export_to)
        (args.export_to.parent / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(f"exported {best} -> {args.export_to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
