"""Detector input size study: recall by housing width and mAP@0.5 against in-process ms/img, for
several preprocessing variants of one exported detector (the network is fully convolutional, so
one model runs at every input size).

    python -m evaluation.input_sizes --inference build/train/traffic_light/inference

Variants: `squash320` (every frame resized to 320 x 320, the previous default), `fitS` (the long
side scaled to S keeping the aspect ratio, PaddleDetection's Resize keep_ratio, then padded to a
multiple of 32), `native` (frames at their own scale, padded to a multiple of 32). Accuracy is
scored on the independent evaluation set; speed in paired interleaved rounds over the same images
(each round runs every variant once, in rotated order), reported as the median ms/img with its
min-max over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from evaluation import score, traffic_scenes
from evaluation.inference import PADDLE_FP32, describe, load_predict

ROOT = Path(__file__).resolve().parents[1]
NORMALIZE = {"type": "NormalizeImage", "mean": [0.485, 0.456, 0.406],
             "std": [0.229, 0.224, 0.225], "is_scale": True}
TAIL = [NORMALIZE, {"type": "Permute"}, {"type": "PadStride", "stride": 32}]


def variant_steps(name: str) -> list[dict[str, Any]]:
    """The preprocessing steps of a variant name: squash320, fit<S>, native."""
    if name == "squash320":
        return [{"type": "Resize", "target_size": [320, 320], "keep_ratio": False, "interp": 2},
                NORMALIZE, {"type": "Permute"}]
    if name.startswith("fit"):
        side = int(name[3:])
        return [{"type": "Resize", "target_size": [side, side], "keep_ratio": True, "interp": 2},
                *TAIL]
    if name == "native":
        return list(TAIL)
    raise ValueError(f"unknown variant {name!r}: squash320, fit<S> or native")


def paired_rounds(predicts: dict[str, Any], images: list[bytes], rounds: int
                  ) -> dict[str, dict[str, float]]:
    """ms/img per variant: each round runs every variant over `images`, rotating the order."""
    names = list(predicts)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for predict in predicts.values():  # warm-up: the first calls pay for oneDNN's kernels
        for image in images[:3]:
            predict([image])
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            started = time.perf_counter()
            for image in images:
                predicts[name]([image])
            samples[name].append((time.perf_counter() - started) * 1000 / len(images))
    return {name: {"median": statistics.median(values), "min": min(values), "max": max(values)}
            for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.input_sizes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "traffic_light")
    parser.add_argument("--inference", type=Path, help="exported detector (default: shipped)")
    parser.add_argument("--variants", default="squash320,fit320,fit416,fit512,fit608,fit960,"
                                              "fit1280,native")
    parser.add_argument("--count", type=int, default=300, help="independent scenes")
    parser.add_argument("--seed", type=int, default=1, help="independent set seed")
    parser.add_argument("--threshold", type=float, help="score threshold of the recall "
                                                        "(default: the served one)")
    parser.add_argument("--timing-images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    info = describe(args.model_dir)
    threshold = info.score_threshold if args.threshold is None else args.threshold
    folder = Path("build/evaluation/independent/traffic_light") / f"seed{args.seed}-n{args.count}"
    if not (folder / traffic_scenes.LIST_FILE).is_file():
        traffic_scenes.write_set(folder, args.count, args.seed)
    names = args.variants.split(",")
    predicts = {name: load_predict(args.model_dir, args.inference, variant_steps(name),
                                   {"score_threshold": 0.0}, {**PADDLE_FP32, "thread_num": 1})
                for name in names}
    rows = {}
    for name, predict in predicts.items():
        result = score.score_detector(predict, folder, traffic_scenes.LIST_FILE, info.labels,
                                      threshold)
        at = next(t for t in result["at_threshold"] if t["threshold"] == threshold)
        rows[name] = {"map50": result["map50"], "recall": at["recall"],
                      "recall_class": at["recall_class"], "boxes_per_image":
                      at["boxes_per_image"], "lights_per_image": at["lights_per_image"]}
        print(f"{name}: mAP@0.5 {result['map50']:.3f} recall {at['recall']}", flush=True)
    lines = (folder / traffic_scenes.LIST_FILE).read_text().splitlines()
    step = max(1, len(lines) // args.timing_images)
    images = [(folder / line.split()[0]).read_bytes() for line in lines[::step]]
    timing = paired_rounds(predicts, images[:args.timing_images], args.rounds)
    print(f"\n{len(images[:args.timing_images])} images x {args.rounds} paired rounds, 1 thread; "
          f"recall at score >= {threshold}, IoU >= 0.5, any class (right class in brackets)\n")
    print("| input | ms/img median (min-max) | recall <16 px | 16-32 px | >32 px | mAP@0.5 |")
    print("|---|---|---|---|---|---|")
    for name in names:
        row, t = rows[name], timing[name]
        cells = [f"{row['recall'][b]:.3f} ({row['recall_class'][b]:.3f})"
                 for b in ("<16", "16-32", ">32")]
        print(f"| {name} | {t['median']:.1f} ({t['min']:.1f}-{t['max']:.1f}) | "
              f"{' | '.join(cells)} | {row['map50']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"inference": str(args.inference or info.inference_dir),
                                         "set": str(folder), "threshold": threshold,
                                         "accuracy": rows, "ms_per_image": timing}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
