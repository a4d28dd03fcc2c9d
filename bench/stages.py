"""Where a served request's time goes, from the service's own Prometheus metrics (project front):
mean seconds per pipeline stage (decode, preprocess, predict, postprocess) and mean time inside
the service per protocol. Cumulative since the worker answering the scrape started. With several
worker processes each scrape reaches one of them: `busiest_page` scrapes a few times and keeps
the worker that answered the most requests of the protocol (means are per worker)."""

from __future__ import annotations

import http.client
import re

_SERIES = re.compile(r'^(serving_stage_duration_seconds|serving_request_duration_seconds)_'
                     r'(sum|count)\{([^}]*)\} (\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(port: int, host: str = "127.0.0.1") -> str | None:
    """The /metrics page, or None when the front has none (Paddle Serving's gateway)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        connection.close()
    return body if response.status == 200 else None


def busiest_page(port: int, protocol: str, scrapes: int = 6) -> str | None:
    pages = [page for page in (scrape(port) for _ in range(scrapes)) if page]
    return max(pages, key=lambda page: _totals(page).get(f"service:{protocol}", {})
               .get("count", 0.0), default=None)


def mean_ms(page: str) -> dict[str, float]:
    """{"stage:<name>" | "service:<protocol>": mean milliseconds} from a /metrics page."""
    return {key: round(1000 * parts["sum"] / parts["count"], 2)
            for key, parts in sorted(_totals(page).items()) if parts.get("count")}


def _totals(page: str) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for line in page.splitlines():
        match = _SERIES.match(line)
        if not match:
            continue
        metric, part, labels, value = match.groups()
        names = dict(_LABEL.findall(labels))
        key = (f"stage:{names.get('stage')}" if metric.startswith("serving_stage")
               else f"service:{names.get('protocol')}")
        totals.setdefault(key, {})[part] = float(value)
    return totals
