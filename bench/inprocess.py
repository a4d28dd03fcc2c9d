"""The in-process limit: the service's own work (base64 + JPEG decode, preprocessing, Paddle
Inference, postprocessing) run in plain loops, with no transport and no framework.

A strategy spreads the two cores one way: `PxT` = P worker processes with T math threads each,
`bB` = B images per predictor call (e.g. `2x1`, `1x2`, `2x1b4`). Each worker is a subprocess
(`python -m bench.inprocess`) that loads the model, warms up, says "ready" on stdout, and runs a
window on each "go SECONDS WARMUP" line from stdin, so all workers run their loops over the same
wall-clock windows, as many as asked, with the model loaded once.
"""

import argparse
import itertools
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import settings
from model.model import Model
from model.process import configure_process, pin_worker
from model.spec import ModelSpec
from serving.protocol import request_items

_STRATEGY = re.compile(r"^(\d+)x(\d+)(?:b(\d+))?$")
WARMUP_CALLS = 5


@dataclass(frozen=True)
class Strategy:
    processes: int
    threads: int
    batch: int = 1

    @classmethod
    def parse(cls, text: str) -> "Strategy":
        match = _STRATEGY.match(text)
        if not match:
            raise ValueError(f"strategy {text!r}: expected PxT or PxTbB, e.g. 2x1 or 1x2b4")
        processes, threads, batch = (int(g) if g else 1 for g in match.groups())
        if min(processes, threads, batch) < 1:
            raise ValueError(f"strategy {text!r}: every number must be >= 1")
        return cls(processes, threads, batch)

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.threads}" + (f"b{self.batch}" if self.batch > 1 else "")


class Workers:
    """A strategy's worker processes (their stderr goes to `log`), loaded on entry; each
    `window()` runs them together and returns throughput, latency percentiles, CPU and page
    faults per image, and peak RSS per worker."""

    def __init__(self, strategy: Strategy, model_dir: Path, serving_server: Path,
                 images_file: Path, runtime: list[str], log: Path):
        self.strategy, self.log = strategy, log
        self._command = [sys.executable, "-m", "bench.inprocess", "--model-dir", str(model_dir),
                         "--serving-server", str(serving_server), "--images", str(images_file),
                         "--threads", str(strategy.threads), "--batch", str(strategy.batch),
                         "--workers", str(strategy.processes),
                         *(f"--runtime={pair}" for pair in runtime)]
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> "Workers":
        env = {**os.environ, "OMP_NUM_THREADS": str(self.strategy.threads)}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log.open("a", encoding="utf-8") as errors:
                for index in range(self.strategy.processes):
                    self.processes.append(subprocess.Popen(
                        [*self._command, "--worker-index", str(index)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=errors, text=True, env=env))
            for process in self.processes:
                _expect_line(process, "ready", self.log)
        except BaseException:
            self.__exit__()
            raise
        return self

    def window(self, duration_s: float, warmup_s: float) -> dict:
        for process in self.processes:
            process.stdin.write(f"go {duration_s} {warmup_s}\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        reports = [json.loads(_expect_line(process, "{", self.log))
                   for process in self.processes]
        return _summary(self.strategy, reports, duration_s)

    def __exit__(self, *_exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def _summary(strategy: Strategy, reports: list[dict], duration_s: float) -> dict:
    latencies = np.concatenate([r["latencies_ms"] for r in reports])
    per_image = sum(r["images"] for r in reports)
    return {"strategy": strategy.label, "processes": strategy.processes,
            "threads": strategy.threads, "batch": strategy.batch,
            "throughput": round(per_image / duration_s, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p90_ms": round(float(np.percentile(latencies, 90)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "cpu_ms_per_image": round(1000 * sum(r["cpu_s"] for r in reports)
                                      / max(1, per_image), 2),
            "page_faults_per_image": round(sum(r["minor_faults"] for r in reports)
                                           / max(1, per_image), 1),
            "rss_mb_per_process": round(max(r["max_rss_mb"] for r in reports), 1)}


def _expect_line(worker: subprocess.Popen, prefix: str, log: Path) -> str:
    line = worker.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith(prefix):
        worker.wait(timeout=30)
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"in-process worker failed (exit {worker.returncode}), expected "
                           f"{prefix!r}, got {line!r}; last lines of {log}:\n{tail}")
    return line


# --- the worker ---------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    spec = ModelSpec.load(args.model_dir)
    resolved = settings.resolve(spec.runtime, settings.parse_pairs(args.runtime),
                                {"thread_num": args.threads})
    # The service's settings, and cores shared out as among its workers
    configure_process(resolved)
    if resolved.pin_workers:
        pin_worker(args.worker_index, args.workers)
    model = Model(spec, args.serving_server, resolved).load()
    jpegs = json.loads(args.images.read_text())["jpegs_hex"]
    requests = [request_items([bytes.fromhex(jpegs[(i + j) % len(jpegs)])
                               for j in range(args.batch)]) for i in range(len(jpegs))]
    for index in range(WARMUP_CALLS):
        model(requests[index % len(requests)])
    print("ready", flush=True)
    next_requests = itertools.cycle(requests)  # each window goes on where the last stopped
    for line in sys.stdin:  # "go SECONDS WARMUP" per window; EOF ends the worker
        duration_s, warmup_s = (float(word) for word in line.split()[1:3])
        report = _window(model, next_requests, duration_s, warmup_s)
        print(json.dumps({**report, "images": len(report["latencies_ms"]) * args.batch}),
              flush=True)


def _window(serve_one: Callable[[dict[str, str]], object], requests: Iterator[dict[str, str]],
            duration_s: float, warmup_s: float) -> dict:
    """Calls serve_one on the next requests for warmup_s + duration_s; times the calls that
    finish inside the timed part."""
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    latencies, cpu_at_start, faults_at_start = [], None, 0
    while (now := time.perf_counter()) < end:
        if cpu_at_start is None and now >= start:
            cpu_at_start = time.process_time()
            faults_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        serve_one(next(requests))
        finished = time.perf_counter()
        if start <= finished < end:
            latencies.append((finished - now) * 1000)
    cpu_s = time.process_time() - (cpu_at_start or time.process_time())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = usage.ru_minflt - faults_at_start if cpu_at_start is not None else 0
    return {"latencies_ms": latencies, "cpu_s": cpu_s, "minor_faults": faults,
            "max_rss_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="models/<name>")
    parser.add_argument("--serving-server", type=Path, required=True,
                        help="build/.../serving_server folder (model files)")
    parser.add_argument("--images", type=Path, required=True,
                        help='JSON file {"jpegs_hex": [...]} (written by python -m bench)')
    parser.add_argument("--threads", type=int, default=1, help="math threads (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes of the strategy (for the core shares)")
    parser.add_argument("--worker-index", type=int, default=0,
                        help="this worker's index among them (0-based)")
    parser.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                        help="predictor settings, as for python -m serving")
    worker(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
