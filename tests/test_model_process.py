"""model.process: what each worker process applies before it loads its model (a service's workers
and the benchmark's in-process workers alike): the heap settings, Paddle's intermediate tensors,
and each worker's share of the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.process import core_share

ROOT = Path(__file__).resolve().parents[1]

# What one traffic-light request allocates (decoded scene, float32 copy, CHW copy), from a fresh
# thread each time as the service's thread pools do. Prints minor page faults per request.
HEAP_PROBE = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "reuse":
    from model.process import reuse_freed_memory
    assert reuse_freed_memory()

def request():
    image = np.ones((600, 800, 3), np.uint8)
    normalized = image.astype(np.float32) * 0.5
    np.ascontiguousarray(normalized.transpose(2, 0, 1))

def in_fresh_threads(count):
    for _ in range(count):
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()

in_fresh_threads(10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
in_fresh_threads(50)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""


def faults_per_request(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    return float(done.stdout.strip())


@pytest.mark.integration
def test_reused_heap_removes_the_page_faults_of_image_buffers() -> None:
    default, reused = faults_per_request("default"), faults_per_request("reuse")
    # 2 x 1.4 MB + 2 x 5.8 MB per request = ~3,500 pages; glibc's defaults fault in most of them
    assert default > 500, f"the probe no longer reproduces the faults ({default}/request)"
    assert reused < default / 20, f"{reused} faults per request with reuse, {default} without"


# Builds the shipped peach classifier (a PIR program) as a service worker does, after
# configure_process with the given free_intermediate_tensors, and runs 10 engine calls.
# Prints the wake-ups per call of every thread but this one, and the outputs.
TENSOR_PROBE = """
import json, os, sys, threading
from pathlib import Path
import numpy as np
from model import settings
from model.engine import PaddleEngine
from model.process import configure_process

resolved = settings.resolve({"free_intermediate_tensors": sys.argv[1]})
configure_process(resolved)
engine = PaddleEngine(Path("models/peach/inference"), resolved)
image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
engine.run({"x": image})  # the first call builds the kernels

def others_wakeups():
    me, total = str(threading.get_native_id()), 0
    for tid in os.listdir("/proc/self/task"):
        if tid != me:
            status = Path(f"/proc/self/task/{tid}/status").read_text()
            total += int(status.split("\\nvoluntary_ctxt_switches:")[1].split()[0])
    return total

before = others_wakeups()
outputs = [engine.run({"x": image})[0].tolist() for _ in range(10)]
print(json.dumps({"wakeups_per_call": (others_wakeups() - before) / 10, "outputs": outputs}))
"""


def run_probe(free_intermediate_tensors: str) -> dict:
    done = subprocess.run([sys.executable, "-c", TENSOR_PROBE, free_intermediate_tensors], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_kept_tensors_leave_the_executor_helper_thread_asleep_with_the_same_answers() -> None:
    freed, kept = run_probe("true"), run_probe("false")
    # Paddle's defaults: a spinning garbage-collector thread wakes for every freed tensor
    assert freed["wakeups_per_call"] > 20, f"probe no longer sees the helper thread: {freed}"
    assert kept["wakeups_per_call"] < 1, f"{kept['wakeups_per_call']} wake-ups per call kept"
    np.testing.assert_allclose(kept["outputs"], freed["outputs"], rtol=1e-5, atol=1e-6)


def test_shares_are_disjoint_and_cover_the_cores() -> None:
    assert [core_share(i, 2, [0, 1]) for i in range(2)] == [{0}, {1}]
    shares = [core_share(i, 3, list(range(8))) for i in range(3)]
    assert shares == [{0, 3, 6}, {1, 4, 7}, {2, 5}]
    assert set().union(*shares) == set(range(8))


def test_one_worker_or_more_workers_than_cores_stay_unpinned() -> None:
    assert core_share(0, 1, [0, 1]) is None
    assert core_share(0, 3, [0, 1]) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to share out")
@pytest.mark.integration
def test_pinning_covers_threads_started_before_it() -> None:
    """Paddle and gRPC may have started threads already: all of them must move, not just the
    calling one (a bare sched_setaffinity(0, ...) moves only the caller)."""
    script = (
        "import json, os, threading\n"
        "from model.process import pin_worker\n"
        "started, stop = threading.Event(), threading.Event()\n"
        "def wait():\n"
        "    started.set(); stop.wait()\n"
        "thread = threading.Thread(target=wait); thread.start(); started.wait()\n"
        "share = pin_worker(1, 2)\n"
        "print(json.dumps([sorted(share), sorted(os.sched_getaffinity(thread.native_id))]))\n"
        "stop.set(); thread.join()\n")
    cores = sorted(os.sched_getaffinity(0))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    expected = sorted(core_share(1, 2, cores) or [])
    assert json.loads(done.stdout) == [expected, expected]
