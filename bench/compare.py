"""python -m bench.compare: HTTP throughput of services that are already running, side by side.

Compares what `python -m bench` cannot start itself: two checkouts of the project, a container
against a local service, one replica against several behind a load balancer. Each round loads
every target once (one window of `--window` seconds at `--concurrency` closed-loop clients, the
model's sample images, one per request), in an order that rotates from round to round; the report
gives each target's median req/s and the median of its per-round ratios to the first target, with
their min-max. The targets of a round run seconds apart, so the machine's drift cancels in the
ratios, not in the figures.

    python -m bench.compare peach before=127.0.0.1:28180 after=127.0.0.1:28280 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engines import paired
from bench.loadgen import run_http
from bench.payloads import encode_payloads
from model.spec import ModelSpec
from serving.control.layout import ROOT

WARMUP_S = 1.0


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        """NAME=HOST:PORT"""
        name, sep, address = text.partition("=")
        host, colon, port = address.rpartition(":")
        if not (sep and name and colon and host and port.isdigit()):
            raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
        return cls(name, host, int(port))


class TargetFailed(RuntimeError):
    """A target answered errors: a comparison with failing requests would mean nothing."""


def compare(spec: ModelSpec, targets: list[Target], rounds: int, window_s: float,
            concurrency: int, images: int) -> dict[str, dict[str, Any]]:
    payloads = encode_payloads(spec.sample_images(images))
    by_name = {target.name: target for target in targets}

    def requests_per_second(name: str) -> float:
        target = by_name[name]
        requests = payloads.http_requests(target.host, target.port, spec.service.name)
        result = run_http(target.host, target.port, requests, concurrency, window_s, WARMUP_S)
        if result.errors or not result.latencies_ms:
            raise TargetFailed(f"{name} ({target.host}:{target.port}): {result.errors} errors, "
                               f"{len(result.latencies_ms)} answers in {window_s} s; first error: "
                               f"{result.first_error or 'none'}")
        return result.throughput

    return paired(requests_per_second, list(by_name), rounds, higher_is_faster=True)


def table(results: dict[str, dict[str, Any]]) -> str:
    reference = next(iter(results))
    width = max(len("target"), *map(len, results))
    lines = [f"{'target':<{width}}  {'req/s':>7}  {'min-max':<13}  x {reference}  min-max"]
    for name, entry in results.items():
        figure, ratio = entry["figure"], entry["speedup"]
        lines.append(f"{name:<{width}}  {figure['median']:>7.1f}  "
                     f"{figure['min']:.1f}-{figure['max']:<7.1f}  {ratio['median']:.3f}  "
                     f"{ratio['min']:.3f}-{ratio['max']:.3f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="Example: python -m bench.compare peach before=127.0.0.1:28180 "
               "after=127.0.0.1:28280 --rounds 8")
    parser.add_argument("model", help="model name (its description gives the service path and "
                                      "the sample images)")
    parser.add_argument("targets", nargs="+", type=Target.parse, metavar="NAME=HOST:PORT",
                        help="HTTP ports of running services; ratios are to the first")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models",
                        help="folder of model descriptions (default: models/)")
    parser.add_argument("--rounds", type=int, default=8, help="paired rounds (default 8)")
    parser.add_argument("--window", type=float, default=6.0,
                        help="timed seconds per target per round, after 1 s of warm-up (default 6)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="closed-loop clients (default 8)")
    parser.add_argument("--images", type=int, default=32,
                        help="distinct sample images the requests cycle through (default 32)")
    parser.add_argument("--json", type=Path, help="also write the figures and rounds here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    names = [target.name for target in args.targets]
    if len(set(names)) != len(names):
        parser.error(f"target names must differ: {names}")
    spec = ModelSpec.load(args.models_dir / args.model)
    try:
        results = compare(spec, args.targets, args.rounds, args.window, args.concurrency,
                          args.images)
    except (TargetFailed, OSError) as error:
        print(f"bench.compare: {error}", file=sys.stderr)
        return 1
    print(f"{args.model}: HTTP at {args.concurrency} clients, {args.rounds} paired rounds of "
          f"{args.window} s per target")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "concurrency": args.concurrency,
                                         "rounds": args.rounds, "window_s": args.window,
                                         "targets": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
