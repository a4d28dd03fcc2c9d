"""A minimal Prometheus registry (text exposition format 0.0.4): counters, histograms and gauges
with labels, thread-safe. Small enough to own rather than add prometheus_client to the lock."""

from __future__ import annotations

import bisect
import math
import operator
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from sub-millisecond decode steps to multi-second detector batches.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def state(self) -> dict[Labels, Any]:
        """Raw values by label tuple: counts, histogram series, gauge readings."""
        raise NotImplementedError

    def samples(self, state: dict[Labels, Any]) -> list[str]:
        raise NotImplementedError

    def combine(self, a: Any, b: Any) -> Any:
        """Merge two processes' values of one series (counts and buckets add up)."""
        return a + b if not isinstance(a, list) else [x + y for x, y in zip(a, b, strict=True)]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        super().__init__(name, help_text, label_names)
        self._values: dict[Labels, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def state(self) -> dict[Labels, Any]:
        with self._lock:
            return dict(self._values)

    def samples(self, state: dict[Labels, Any]) -> list[str]:
        return [f"{self.name}{_label_text(self.label_names, k)} {_number(v)}"
                for k, v in sorted(state.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS):
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # per-bucket counts..., sum, count

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            index = bisect.bisect_left(self.buckets, value)
            if index < len(self.buckets):
                series[index] += 1
            series[-2] += value
            series[-1] += 1

    def state(self) -> dict[Labels, Any]:
        with self._lock:
            return {k: list(v) for k, v in self._series.items()}

    def samples(self, state: dict[Labels, Any]) -> list[str]:
        lines = []
        for labels, series in sorted(state.items()):
            cumulative = 0.0
            for bound, count in zip(self.buckets, series, strict=False):
                cumulative += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_label_text(self.label_names, labels, le)} "
                             f"{_number(cumulative)}")
            text = _label_text(self.label_names, labels)
            everything = _label_text(self.label_names, labels, 'le="+Inf"')
            lines += [f"{self.name}_bucket{everything} {_number(series[-1])}",
                      f"{self.name}_sum{text} {_number(series[-2])}",
                      f"{self.name}_count{text} {_number(series[-1])}"]
        return lines


class Gauge(_Metric):
    """A value read at scrape time from a callback (in-flight count, readiness, RSS)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float],
                 combine: Callable[[float, float], float] = operator.add):
        super().__init__(name, help_text)
        self._read = read
        self.combine = combine  # across worker processes: sum, or min for "all ready"

    def state(self) -> dict[Labels, Any]:
        return {(): float(self._read())}

    def samples(self, state: dict[Labels, Any]) -> list[str]:
        return [f"{self.name} {_number(v)}" for v in state.values()]


class CallbackCounter(Gauge):
    """A monotonic total kept elsewhere, read at scrape time."""

    kind = "counter"


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def state(self) -> dict[str, list]:
        """JSON-able raw values, for another worker process to merge into its scrape."""
        return {m.name: [[list(k), v] for k, v in m.state().items()] for m in self._metrics}

    def render(self, others: Sequence[dict[str, list]] = ()) -> str:
        """The text exposition; `others` are state() of the service's other worker processes
        (several processes share the port: any of them must answer for the whole service)."""
        lines: list[str] = []
        for metric in self._metrics:
            merged = metric.state()
            for other in others:
                for labels, value in other.get(metric.name, []):
                    key = tuple(labels)
                    merged[key] = metric.combine(merged[key], value) if key in merged else value
            lines += metric.header() + metric.samples(merged)
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int:
    """This process's RSS, from /proc (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
