"""`make train`: regenerate the synthetic datasets and retrain both built-in default models.

Runs the classifier first (minutes), then the detector (the long one), each with its own defaults;
see `python -m train.classifier --help` and `python -m train.detector --help` for their options.
"""

from __future__ import annotations

import argparse
import time

import compat  # noqa: F401  # first: upstream fixes
from train import classifier, detector

TRAINERS = {"peach": classifier.main, "traffic_light": detector.main}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(TRAINERS), help="train just this model")
    args = parser.parse_args(argv)
    for name, train_model in TRAINERS.items():
        if args.only and name != args.only:
            continue
        started = time.monotonic()
        print(f"== training {name} ==", flush=True)
        status = train_model([])
        print(f"== {name}: exit {status} after {(time.monotonic() - started) / 60:.1f} min ==")
        if status:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
