"""serving.memory: fixed malloc thresholds stop the per-request page faults of image buffers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.options import resolve_options

ROOT = Path(__file__).resolve().parents[1]

# What one traffic-light request allocates (decoded scene, float32 copy, CHW copy), from a fresh
# thread each time as the service's thread pools do. Prints minor page faults per request.
PROBE = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "reuse":
    from serving.memory import reuse_freed_memory
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
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    return float(done.stdout.strip())


def test_reused_heap_removes_the_page_faults_of_image_buffers() -> None:
    default, reused = faults_per_request("default"), faults_per_request("reuse")
    # 2 x 1.4 MB + 2 x 5.8 MB per request = ~3,500 pages; glibc's defaults fault in most of them
    assert default > 500, f"the probe no longer reproduces the faults ({default}/request)"
    assert reused < default / 20, f"{reused} faults per request with reuse, {default} without"


def test_reuse_option_is_on_by_default_and_parsed_as_a_bool() -> None:
    assert resolve_options({}).reuse_freed_memory is True
    assert resolve_options({}, {"reuse_freed_memory": "false"}).reuse_freed_memory is False
    assert resolve_options({"reuse_freed_memory": False}).reuse_freed_memory is False
    with pytest.raises(ValueError, match="reuse_freed_memory: expected true/false"):
        resolve_options({}, {"reuse_freed_memory": "sometimes"})
