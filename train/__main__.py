"""`make train`: regenerate the synthetic datasets and retrain both built-in default models.

The two trainings run side by side, one per core: each uses a single math thread, which trains
fastest on this 2-core machine, so running them one after the other would leave a core idle.
Each writes its full output to <log-dir>/<model>.log; a status line every minute shows the latest
progress of both. See `python -m train.classifier --help` and `python -m train.detector --help`
for their options (each also runs alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TRAINERS = {"peach": "train.classifier", "traffic_light": "train.detector"}
TRAIN_DIR = Path("build/train")  # each trainer's default --out is TRAIN_DIR / <model>
# What each trainer's metrics.json (in its default --out) reports, and the target it should reach.
RESULTS = {"peach": ("val_top1", "validation top-1", 0.95),
           "traffic_light": ("valid_map50", "validation mAP@0.5", 0.80)}
STATUS_EVERY_S = 60.0


def launch(module: str, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", module], stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def last_line(log: Path, tail_bytes: int = 4096) -> str:
    """The latest progress line (progress bars redraw with carriage returns)."""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - tail_bytes))
        text = handle.read().decode(errors="replace")
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1][:160] if lines else "(no output yet)"


def wait_all(running: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
             started: float) -> dict[str, int]:
    statuses: dict[str, int] = {}
    while len(statuses) < len(running):
        deadline = time.monotonic() + STATUS_EVERY_S
        while time.monotonic() < deadline and len(statuses) < len(running):
            for name, process in running.items():
                if name not in statuses and process.poll() is not None:
                    statuses[name] = process.returncode
                    minutes = (time.monotonic() - started) / 60
                    print(f"== {name}: exit {process.returncode} after {minutes:.1f} min "
                          f"({logs[name]}) ==", flush=True)
            time.sleep(1.0)
        for name in running.keys() - statuses.keys():
            print(f"[{(time.monotonic() - started) / 60:5.1f} min] {name}: "
                  f"{last_line(logs[name])}", flush=True)
    return statuses


def result_line(name: str, metrics_file: Path) -> str:
    key, what, target = RESULTS[name]
    value = json.loads(metrics_file.read_text()).get(key) if metrics_file.is_file() else None
    if value is None:
        return f"{name}: no {what} in {metrics_file}"
    verdict = "meets" if value >= target else "BELOW"
    return f"{name}: {what} {value:.3f} ({verdict} the target {target:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(TRAINERS), help="train just this model")
    parser.add_argument("--log-dir", type=Path, default=TRAIN_DIR,
                        help="where <model>.log goes (default: %(default)s)")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(TRAINERS)
    logs = {name: args.log_dir / f"{name}.log" for name in names}
    started = time.monotonic()
    running = {name: launch(TRAINERS[name], logs[name]) for name in names}
    for name in names:
        print(f"== training {name}: python -m {TRAINERS[name]}, log {logs[name]} ==", flush=True)
    try:
        statuses = wait_all(running, logs, started)
    except KeyboardInterrupt:
        for process in running.values():
            process.terminate()
        raise
    for name, status in statuses.items():
        if status:
            print(f"{name} failed; end of {logs[name]}:\n{logs[name].read_text()[-3000:]}",
                  file=sys.stderr)
        else:
            print(result_line(name, TRAIN_DIR / name / "metrics.json"), flush=True)
    return next((status for status in statuses.values() if status), 0)


if __name__ == "__main__":
    raise SystemExit(main())
