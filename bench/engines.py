"""python -m bench.engines: the engines and precisions of each model side by side, in one run:
file size, in-process ms per image (batch 1, one thread), in-process limit (both cores), served
req/s at 8 HTTP clients, and accuracy (top-1 or mAP@0.5 on the validation set and on fresh
images). Every speed is a paired figure against Paddle Inference FP32 (the first variant): the
variants take turns within each round (A B C ..., the order rotating from round to round), each
round gives each variant's ratio to the reference, and the medians of those ratios over the
rounds are reported with their spread (min-max). Outputs: a Markdown table on stdout and in
<out>/engines.md, every figure in <out>/engines.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from bench import accuracy, inprocess, services
from bench.__main__ import machine, measure_served, parse_variant
from bench.payloads import encode_payloads
from export.onnx_models import image_feeds
from model import settings
from model.engine import ONNX_FILES, program_files
from model.model import Model
from serving.control.layout import ROOT, Layout
from serving.control.prepare import INPUTS_FILE, ensure_serving_folder_for

log = logging.getLogger("bench.engines")

VARIANTS = ("paddle:engine=paddle,precision=fp32",  # the reference: first
            "onnxruntime:engine=onnxruntime,precision=fp32",
            "onnxruntime-int8:engine=onnxruntime,precision=int8",
            "openvino:engine=openvino,precision=fp32",
            "openvino-int8:engine=openvino,precision=int8")
LIMIT_STRATEGY = "2x1b4"  # the in-process limit's strategy in `make bench` (docs/benchmarks.md)
SERVED_CLIENTS = 8
WARMUP_S = 1.0
SMOKE = {"rounds": 1, "calls": 2, "window": 0.5, "accuracy_scale": 0.02, "images": 4}
EPILOG = """\
examples:
  python -m bench.engines                      # both models, every engine (~30 min)
  python -m bench.engines traffic_light --variant paddle:engine=paddle \\
      --variant ort-b1:engine=onnxruntime,batch_size=1   # any --runtime settings
  python -m bench.engines --smoke              # seconds: does it work?

A variant is NAME:key=value,... of `python -m serving --runtime` settings; the first one is the
reference every ratio is taken against."""


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """One order per round, each starting one name further on."""
    return [[*names[i % len(names):], *names[:i % len(names)]] for i in range(rounds)]


def paired(measure: Callable[[str], float], names: Sequence[str], rounds: int,
           higher_is_faster: bool) -> dict[str, dict[str, Any]]:
    """Each round measures every variant once (rotated order); per variant: the median figure
    and the median speed ratio to names[0] over the rounds, with their min-max."""
    figures: dict[str, list[float]] = {name: [] for name in names}
    for order in rotations(names, rounds):
        for name in order:
            figures[name].append(measure(name))
    reference = figures[names[0]]
    result = {}
    for name in names:
        ratios = [(own / ref) if higher_is_faster else (ref / own)
                  for own, ref in zip(figures[name], reference, strict=True)]
        result[name] = {"figure": spread(figures[name]), "speedup": spread(ratios),
                        "rounds": figures[name]}
    return result


def file_mb(folder: Path, runtime: Mapping[str, str], spec_runtime: Mapping[str, Any]) -> float:
    resolved = settings.resolve(spec_runtime, runtime)
    if resolved.engine == "paddle":
        files = program_files(folder)
    else:
        files = (folder / ONNX_FILES[resolved.precision],)
    return round(sum(path.stat().st_size for path in files) / 1e6, 2)


def single_thread_ms(models: Mapping[str, Model], jpegs: Sequence[bytes], rounds: int,
                     calls: int) -> dict[str, dict[str, Any]]:
    """ms per image of the engine call at batch 1 on one thread; a round is `calls` passes,
    each pass one call of every variant (rotated), so load from other processes hits all."""
    names = list(models)
    feeds = image_feeds(next(iter(models.values())), jpegs, per_call=1)
    for model in models.values():  # warm-up: the first calls build kernels and caches
        for feed in feeds[:3]:
            model.engine.run(feed)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for order in rotations(names, rounds):
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for index in range(calls):
            for name in order[index % len(names):] + order[:index % len(names)]:
                started = time.perf_counter()
                models[name].engine.run(feeds[index % len(feeds)])
                seconds[name].append(time.perf_counter() - started)
        for name in names:
            figures[name].append(1000 * statistics.median(seconds[name]))
    return {name: {"figure": spread(figures[name]),
                   "speedup": spread([ref / own for own, ref in
                                      zip(figures[name], figures[names[0]], strict=True)]),
                   "rounds": figures[name]} for name in names}


def variant_layouts(layout: Layout, name: str, variants: Mapping[str, dict[str, str]]
                    ) -> dict[str, Layout]:
    """A build folder per variant (each service keeps its run records there), each holding a
    copy of the one serving folder, exported once with every model file."""
    source = layout.serving_dir(name)
    layouts = {}
    for variant in variants:
        own = Layout(models_dir=layout.models_dir, build_dir=layout.build_dir / variant)
        target = own.serving_dir(name)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for part in ("serving_server", "serving_client"):
            shutil.copytree(source / part, target / part)
        shutil.copy(source / INPUTS_FILE, target / INPUTS_FILE)
        layouts[variant] = own
    return layouts


def bench_model(args: argparse.Namespace, layout: Layout, name: str,
                variants: dict[str, dict[str, str]]) -> dict[str, Any]:
    spec = layout.spec(name)
    ensure_serving_folder_for(layout, spec, list(variants.values()))
    folder = layout.serving_server(name)
    jpegs = spec.sample_images(args.images)
    names = list(variants)
    resolved = {v: settings.resolve(spec.runtime, runtime, {"thread_num": 1})
                for v, runtime in variants.items()}
    rows: dict[str, dict[str, Any]] = {
        v: {"engine": resolved[v].engine, "precision": resolved[v].precision,
            "runtime": variants[v], "file_mb": file_mb(folder, variants[v], spec.runtime)}
        for v in names}

    log.info("[%s] accuracy", name)
    sets = accuracy.labelled_sets(spec.task, args.accuracy_scale)
    models = {v: Model(spec, folder, resolved[v]).load() for v in names}
    for v, model in models.items():
        rows[v]["accuracy"] = {kind: round(accuracy.accuracy(model, images), 4)
                               for kind, images in sets.items()}
        log.info("[%s] %s %s %s", name, v, accuracy.METRIC[spec.task], rows[v]["accuracy"])

    log.info("[%s] in-process, batch 1, one thread", name)
    for v, figures in single_thread_ms(models, jpegs, args.rounds, args.calls).items():
        rows[v]["ms_per_image"] = figures
    del models

    images_file = args.out / f"{name}-images.json"
    images_file.write_text(json.dumps({"jpegs_hex": [jpeg.hex() for jpeg in jpegs]}))
    strategy = inprocess.Strategy.parse(LIMIT_STRATEGY)
    log.info("[%s] in-process limit (%s)", name, strategy.label)
    with ExitStack() as stack:
        pools = {v: stack.enter_context(inprocess.Workers(
            strategy, layout.models_dir / name, folder, images_file,
            [f"{k}={value}" for k, value in variants[v].items()],
            args.out / "logs" / f"{name}-{v}-inprocess.log")) for v in names}
        limits = paired(lambda v: pools[v].window(args.window, WARMUP_S)["throughput"],
                        names, args.rounds, higher_is_faster=True)
    for v in names:
        rows[v]["limit_img_s"] = limits[v]

    log.info("[%s] served, HTTP at %d clients", name, SERVED_CLIENTS)
    payloads = encode_payloads(jpegs)
    layouts = variant_layouts(layout, name, variants)
    running: dict[str, services.RunningService] = {}
    try:
        for v in names:
            running[v] = services.start(layout.models_dir, layouts[v].build_dir, name,
                                        variants[v])

        def served(v: str) -> float:
            run, _ = measure_served(args, running[v], payloads, "http", SERVED_CLIENTS,
                                    (args.window, WARMUP_S), stage_means=False)
            if run["errors"]:
                raise services.BenchError(f"[{name}] {v}: {run['errors']} errors, first: "
                                          f"{run['first_error']}")
            return run["throughput"]

        served_figures = paired(served, names, args.rounds, higher_is_faster=True)
    finally:
        for v, service in running.items():
            services.stop(layout.models_dir, layouts[v].build_dir, service)
    for v in names:
        rows[v]["served_req_s"] = served_figures[v]
    return {"task": spec.task, "metric": accuracy.METRIC[spec.task],
            "sets": {kind: len(images) for kind, images in sets.items()}, "variants": rows}


def _cell(entry: Mapping[str, Any], digits: int) -> str:
    figure, ratio = entry["figure"], entry["speedup"]
    return (f"{figure['median']:.{digits}f} **{ratio['median']:.2f}x** "
            f"({ratio['min']:.2f}-{ratio['max']:.2f})")


def markdown(results: Mapping[str, Any]) -> str:
    lines = ["| model | engine | precision | file MB | ms/img, batch 1, 1 thread | "
             "in-process limit img/s | served req/s, 8 HTTP clients | accuracy: val / fresh |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for name, model in results["models"].items():
        sets = model["sets"]
        for row in model["variants"].values():
            acc = row["accuracy"]
            others = [f"{k}={v}" for k, v in row["runtime"].items()
                      if k not in ("engine", "precision")]
            engine = ", ".join([row["engine"], *others])
            lines.append(
                f"| {name} | {engine} | {row['precision']} | {row['file_mb']:.2f} | "
                f"{_cell(row['ms_per_image'], 1)} | {_cell(row['limit_img_s'], 1)} | "
                f"{_cell(row['served_req_s'], 1)} | {model['metric']} {acc['val']:.4f} / "
                f"{acc['fresh']:.4f} ({sets['val']} / {sets['fresh']} images) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.out / "build")
    variants = dict(parse_variant(text) for text in args.variant or VARIANTS)
    results: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv),
                               "settings": {k: str(v) for k, v in vars(args).items()},
                               "models": {}}
    try:
        for name in args.models or layout.model_names():
            results["models"][name] = bench_model(args, layout, name, variants)
    except (services.BenchError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = markdown(results)
    header = (f"{results['machine']['summary']}; vector extensions "
              f"{' '.join(results['machine']['vector_extensions'])}; {args.rounds} paired "
              f"rounds; cells: median **ratio to {next(iter(variants))}** (min-max)")
    print(f"{header}\n\n{table}")
    (args.out / "engines.md").write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    (args.out / "engines.json").write_text(json.dumps(results, indent=1, default=_json))
    print(f"\nwrote {args.out / 'engines.json'}, engines.md")
    return 0


def _json(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: every models/*/)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models",
                        help="folder of model descriptions (default: models/)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-engines",
                        help="output folder (default build/bench-engines)")
    parser.add_argument("--variant", action="append", metavar="NAME:k=v,...",
                        help="engine configuration (repeatable; default: paddle fp32, "
                             "onnxruntime fp32 and int8, openvino fp32 and int8)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="paired rounds of each speed figure (default 10)")
    parser.add_argument("--calls", type=int, default=20,
                        help="engine calls per variant per round, batch 1 (default 20)")
    parser.add_argument("--window", type=float, default=4.0,
                        help=f"timed seconds of each limit and served window, after "
                             f"{WARMUP_S:g} s of warm-up (default 4)")
    parser.add_argument("--images", type=int, default=32,
                        help="distinct sample images the speed figures cycle through "
                             "(default 32)")
    parser.add_argument("--accuracy-scale", type=float, default=1.0,
                        help="fraction of each accuracy set to use (default 1: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run (seconds per variant) to check the harness; figures "
                             "mean nothing")
    return parser


if __name__ == "__main__":
    sys.exit(main())
