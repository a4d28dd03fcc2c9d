"""Where a served request's time goes, from the service's own Prometheus metrics (project front):
mean seconds per pipeline stage (decode, preprocess, predict, postprocess), mean time inside the
service per protocol, and mean images per predictor call (auto-batching). The metrics are
cumulative since the service started, so a run's figures are the difference between a scrape
after it and one before it (`Totals.since`). With several worker processes, whichever worker
answers a scrape merges the others' last published figures (at most a second old)."""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass, field

_SERIES = re.compile(r'^(serving_stage_duration_seconds|serving_request_duration_seconds|'
                     r'serving_batch_images)_(sum|count)\{([^}]*)\} (\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')
BATCH = "batch:images"


@dataclass
class Totals:
    """{"stage:<name>" | "service:<protocol>" | BATCH: {"sum": s, "count": n}}."""

    series: dict[str, dict[str, float]] = field(default_factory=dict)

    def since(self, before: Totals) -> Totals:
        return Totals({key: {part: value - before.series.get(key, {}).get(part, 0.0)
                             for part, value in parts.items()}
                       for key, parts in self.series.items()})

    def means(self) -> dict[str, float]:
        """Mean milliseconds per stage and per protocol, mean images per predictor call."""
        return {key: round((1 if key == BATCH else 1000) * parts["sum"] / parts["count"], 2)
                for key, parts in sorted(self.series.items()) if parts.get("count")}


def scrape(port: int, host: str = "127.0.0.1") -> Totals | None:
    """The /metrics page's totals, or None when the front has none (Paddle Serving's gateway)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        connection.close()
    return parse(body) if response.status == 200 else None


def parse(page: str) -> Totals:
    totals = Totals()
    for line in page.splitlines():
        match = _SERIES.match(line)
        if not match:
            continue
        metric, part, labels, value = match.groups()
        names = dict(_LABEL.findall(labels))
        key = (f"stage:{names.get('stage')}" if metric.startswith("serving_stage")
               else BATCH if metric == "serving_batch_images"
               else f"service:{names.get('protocol')}")
        totals.series.setdefault(key, {})[part] = float(value)
    return totals
