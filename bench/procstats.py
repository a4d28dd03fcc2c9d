"""CPU time and memory of a service: every live process of its process group, read from /proc.

RSS counts pages shared between forked processes once per process; PSS splits them, so the PSS sum
is what the whole service really occupies. Both are reported.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class GroupSample:
    processes: int
    cpu_s: float  # user + system of the live processes
    minor_faults: int  # pages the kernel mapped in for them (model.process.reuse_freed_memory)
    rss_mb: float
    pss_mb: float


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _cpu_seconds_and_faults(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[7])  # utime+stime, minflt


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB from smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    return values.get("Rss", 0), values.get("Pss", 0)


def sample_group(pgid: int, pids: list[int] | None = None) -> GroupSample:
    """Sum over the group's processes (`pids`: a listing taken earlier, to save the scan)."""
    cpu, faults, rss, pss, count = 0.0, 0, 0, 0, 0
    for pid in group_pids(pgid) if pids is None else pids:
        try:
            process_cpu, process_faults = _cpu_seconds_and_faults(pid)
            process_rss, process_pss = _memory_kb(pid)
        except (OSError, ValueError):  # exited while we looked
            continue
        cpu, faults = cpu + process_cpu, faults + process_faults
        rss, pss, count = rss + process_rss, pss + process_pss, count + 1
    return GroupSample(count, cpu, faults, rss / 1024, pss / 1024)


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


class PeakMemory:
    """Samples a group's memory in a background thread; `stop()` returns the peak sample."""

    def __init__(self, pgid: int, interval_s: float = 1.0):
        self._pgid, self._interval = pgid, interval_s
        self._pids = group_pids(pgid)
        self._peak: GroupSample | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            sample = sample_group(self._pgid, self._pids)
            if self._peak is None or sample.rss_mb > self._peak.rss_mb:
                self._peak = sample

    @property
    def peak(self) -> GroupSample | None:
        return self._peak
