"""Score a built-in model in process on its own validation set and on a freshly drawn independent
set, side by side.

    python -m evaluation peach
    python -m evaluation traffic_light --independent-count 300 --json build/evaluation/tl.json

own-val is the validation split of the model's training generator (train/), regenerated under
build/evaluation/own/ when missing; the independent set is drawn by evaluation/peach_scenes.py or
evaluation/traffic_scenes.py (seed and count are options) under build/evaluation/independent/.
Classifier: top-1 and the confusion matrix. Detector: VOC mAP@0.5 per class, and at the served
score threshold (and a few others) recall by housing width (< 16, 16-32, > 32 px in the original
image), localised at IoU >= 0.5 with any class and with the right class, and boxes per image.
The model runs as it is served: the serving_server/ files and the engine and precision of its
model.yml `runtime:` (the export stage builds what is missing); --runtime changes them.
--preprocess replaces the model's preprocessing steps (a YAML list) for a study of input sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evaluation import peach_scenes, score, traffic_scenes
from evaluation.inference import describe, load_predict
from model import settings

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path("build/evaluation")
log = logging.getLogger("evaluation")


@dataclass(frozen=True)
class Dataset:
    root: Path
    list_file: str


def own_validation(task: str, out: Path) -> Dataset:
    """The validation split of the model's training generator (same seed as `make train`), drawn
    anew each time: a folder left by an earlier version of the generator must not be scored."""
    shutil.rmtree(out, ignore_errors=True)
    if task == "classification":
        from train import peach_data

        peach_data.write_dataset(out, 0, peach_data.VAL_IMAGES, seed=0)
        return Dataset(out, "val_list.txt")
    from train import traffic_light_data

    spec = traffic_light_data.DatasetSpec(train=0, train_easy=0)
    traffic_light_data.generate(out, spec)
    return Dataset(out, "valid.txt")


def independent(task: str, out: Path, count: int, seed: int) -> Dataset:
    writer: Callable[[Path, int, int], Path]
    writer, list_file = ((peach_scenes.write_set, peach_scenes.LIST_FILE)
                         if task == "classification"
                         else (traffic_scenes.write_set, traffic_scenes.LIST_FILE))
    folder = out / f"seed{seed}-n{count}"
    if not (folder / list_file).is_file():
        log.info("drawing %d independent images into %s", count, folder)
        writer(folder, count, seed)
    return Dataset(folder, list_file)


def score_model(model_dir: Path, datasets: dict[str, Dataset], inference_dir: Path | None,
                preprocess: list[dict[str, Any]] | None, runtime: dict[str, str]
                ) -> dict[str, Any]:
    spec = describe(model_dir)
    if spec.task == "classification":
        predict = load_predict(model_dir, inference_dir, preprocess, runtime=runtime)
        return {name: score.score_classifier(predict, data.root, data.list_file, spec.labels)
                for name, data in datasets.items()}
    served = spec.score_threshold
    predict = load_predict(model_dir, inference_dir, preprocess, {"score_threshold": 0.0},
                           runtime)
    return {name: score.score_detector(predict, data.root, data.list_file, spec.labels, served)
            for name, data in datasets.items()}


def summary(task: str, scores: dict[str, Any]) -> str:
    lines = []
    for name, result in scores.items():
        timing = f"{result['timing']['ms_per_image']:.1f} ms/img"
        if task == "classification":
            matrix = result["confusion"]
            rows = "; ".join(f"{label}: {row}" for label, row in
                             zip(matrix["labels"], matrix["rows_true_columns_predicted"],
                                 strict=True))
            lines.append(f"{name:12s} {result['images']:4d} images  top-1 {result['top1']:.4f}  "
                         f"{timing}\n{'':13s}confusion (true: predicted counts) {rows}")
            continue
        served = next(t for t in result["at_threshold"]
                      if t["threshold"] == result["served_threshold"])
        recall = " / ".join(f"{served['recall'][b]:.3f}" for b in ("<16", "16-32", ">32"))
        right = " / ".join(f"{served['recall_class'][b]:.3f}" for b in ("<16", "16-32", ">32"))
        lines.append(
            f"{name:12s} {result['images']:4d} images  mAP@0.5 {result['map50']:.4f}  {timing}\n"
            f"{'':13s}at score >= {served['threshold']}: recall <16 / 16-32 / >32 px "
            f"{recall} (right class {right}), lights {served['lights']}, boxes/img "
            f"{served['boxes_per_image']:.2f} for {served['lights_per_image']:.2f} lights, "
            f"precision {served['precision']:.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder name under --models-dir (peach, "
                                      "traffic_light) or a path to one")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--inference", type=Path,
                        help="score this Paddle inference folder (on Paddle Inference FP32 unless "
                             "--runtime says otherwise) instead of the served model")
    parser.add_argument("--sets", default="own-val,independent",
                        help="comma-separated: own-val, independent (default: %(default)s)")
    parser.add_argument("--independent-count", type=int,
                        help="independent images (default: 400 peaches, 300 scenes)")
    parser.add_argument("--seed", type=int, default=1, help="independent set seed "
                                                            "(default: %(default)s)")
    parser.add_argument("--preprocess", type=Path,
                        help="YAML file with a preprocessing step list replacing the model's")
    parser.add_argument("--threads", type=int, default=1, help="math threads (default: 1)")
    parser.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                        help="runtime settings over the model.yml ones, as for python -m "
                             "serving (e.g. engine=paddle precision=fp32)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--record", action="store_true",
                        help="also record the figures in the model's metrics.json (key "
                             "'evaluation'), as `make train` does for the shipped models")
    return parser.parse_args(argv)


def record(metrics_file: Path, seed: int, datasets: dict[str, Dataset],
           scores: dict[str, Any]) -> None:
    """Adds the figures, with what reproduces them, to a model's metrics.json."""
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics["evaluation"] = {
        "command": f"python -m evaluation {metrics_file.parent.name} --seed {seed} "
                   f"--independent-count {scores['independent']['images']}"
        if "independent" in scores else f"python -m evaluation {metrics_file.parent.name}",
        "date": time.strftime("%Y-%m-%d"), "independent_seed": seed,
        "sets": {name: scores[name] for name in datasets}}
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model_dir = args.model if Path(args.model).is_dir() else args.models_dir / args.model
    spec = describe(model_dir)
    count = args.independent_count or (400 if spec.task == "classification" else 300)
    datasets = {}
    for name in args.sets.split(","):
        if name == "own-val":
            datasets[name] = own_validation(spec.task, BUILD / "own" / spec.name)
        elif name == "independent":
            datasets[name] = independent(spec.task, BUILD / "independent" / spec.name, count,
                                         args.seed)
        else:
            raise SystemExit(f"unknown set {name!r}: use own-val and/or independent")
    preprocess = yaml.safe_load(args.preprocess.read_text()) if args.preprocess else None
    runtime = {"thread_num": str(args.threads), **settings.parse_pairs(args.runtime)}
    scores = score_model(model_dir, datasets, args.inference, preprocess, runtime)
    print(summary(spec.task, scores))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(model_dir), "inference": str(
            args.inference or spec.inference_dir), "preprocess": preprocess, "seed": args.seed,
            "sets": {name: str(data.root) for name, data in datasets.items()},
            "scores": scores}, indent=1))
    if args.record:
        record(model_dir / "metrics.json", args.seed, datasets, scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
