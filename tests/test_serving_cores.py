"""runtime pin_workers (serving.cores): each worker process gets its own share of the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serving.cores import core_share
from serving.options import resolve_options


def test_shares_are_disjoint_and_cover_the_cores() -> None:
    assert [core_share(i, 2, [0, 1]) for i in range(2)] == [{0}, {1}]
    shares = [core_share(i, 3, list(range(8))) for i in range(3)]
    assert shares == [{0, 3, 6}, {1, 4, 7}, {2, 5}]
    assert set().union(*shares) == set(range(8))


def test_one_worker_or_more_workers_than_cores_stay_unpinned() -> None:
    assert core_share(0, 1, [0, 1]) is None
    assert core_share(0, 3, [0, 1]) is None


def test_pin_workers_option_defaults_on_and_parses() -> None:
    assert resolve_options({}).pin_workers is True
    assert resolve_options({}, {"pin_workers": "false"}).pin_workers is False
    with pytest.raises(ValueError, match="pin_workers: expected true/false"):
        resolve_options({}, {"pin_workers": "maybe"})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to share out")
def test_pinning_covers_threads_started_before_it() -> None:
    """Paddle and gRPC may have started threads already: all of them must move, not just the
    calling one (a bare sched_setaffinity(0, ...) moves only the caller)."""
    script = (
        "import json, os, threading\n"
        "from serving.cores import pin_worker\n"
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
