"""serving.process: the settings each worker process applies before it loads its model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.options import resolve_options

ROOT = Path(__file__).resolve().parents[1]

# Builds the shipped peach classifier (a PIR program) as a service worker does, after
# configure_process with the given free_intermediate_tensors, and runs 10 predictor calls.
# Prints the wake-ups per call of every thread but this one, and the outputs.
PROBE = """
import compat
import json, os, sys, threading
from pathlib import Path
import numpy as np
from serving.config import resolve_runtime
from serving.model_spec import ModelSpec
from serving.options import resolve_options
from serving.predictor import InProcessPredictor
from serving.process import configure_process

spec = ModelSpec.load(Path("models/peach"))
model = Path("models/peach/inference")
runtime = resolve_runtime(spec, model, {})
configure_process(runtime, resolve_options({}, {"free_intermediate_tensors": sys.argv[1]}))
predictor = InProcessPredictor(model, spec.fetches, runtime)
image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
predictor({"x": image})  # the first call builds the kernels

def others_wakeups():
    me, total = str(threading.get_native_id()), 0
    for tid in os.listdir("/proc/self/task"):
        if tid != me:
            status = Path(f"/proc/self/task/{tid}/status").read_text()
            total += int(status.split("\\nvoluntary_ctxt_switches:")[1].split()[0])
    return total

before = others_wakeups()
outputs = [predictor({"x": image})["prediction"].tolist() for _ in range(10)]
print(json.dumps({"wakeups_per_call": (others_wakeups() - before) / 10, "outputs": outputs}))
"""


def run_probe(free_intermediate_tensors: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, free_intermediate_tensors], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kept_tensors_leave_the_executor_helper_thread_asleep_with_the_same_answers() -> None:
    freed, kept = run_probe("true"), run_probe("false")
    # Paddle's defaults: a spinning garbage-collector thread wakes for every freed tensor
    assert freed["wakeups_per_call"] > 20, f"probe no longer sees the helper thread: {freed}"
    assert kept["wakeups_per_call"] < 1, f"{kept['wakeups_per_call']} wake-ups per call kept"
    np.testing.assert_allclose(kept["outputs"], freed["outputs"], rtol=1e-5, atol=1e-6)


def test_free_intermediate_tensors_defaults_off_and_parses_as_a_bool() -> None:
    assert resolve_options({}).free_intermediate_tensors is False
    assert resolve_options({}, {"free_intermediate_tensors": "yes"}).free_intermediate_tensors
    with pytest.raises(ValueError, match="free_intermediate_tensors: expected true/false"):
        resolve_options({}, {"free_intermediate_tensors": "sometimes"})
