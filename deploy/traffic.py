"""Closed-loop HTTP load that accounts for every request it sends (python -m deploy.traffic).

Each of --concurrency clients keeps one keep-alive connection and sends its next request when the
previous answer arrived. Every request ends as exactly one of:
  ok          HTTP 200 with err_no 0
  draining    HTTP 503 with err_no 3001: the service is stopping and did not take the request
  refused     no connection could be opened: nothing listens, no request was sent
  unanswered  the connection closed before any byte of an answer came: the server did not
              take the request (a drained service closes its open connections so), or it died
              with the request; only the server's own count can tell which
  failed      anything else: an error answer, a timeout, an answer cut short
A JSON line of the counts goes to stdout every --progress seconds, and a summary at the end.
SIGUSR1 means the endpoint is gone, as when Kubernetes takes a terminating pod out of a
Service: no client opens a new connection after it. SIGTERM or SIGINT stop it after the
requests in flight; it stops by itself after --warmup + --seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OUTCOMES = ("ok", "draining", "refused", "unanswered", "failed")
# Raised before any byte of an answer arrived: the server closed (or reset) the connection.
UNANSWERED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
DRAINING_ERR_NO = 3001  # serving/errors.py DRAINING
RECONNECT_WAIT_S = 0.1
KEPT_ERRORS = 10


@dataclass
class Tally:
    window_start: float
    window_end: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    window_latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, started: float, detail: str = "") -> None:
        finished = time.perf_counter()
        with self.lock:
            self.counts[outcome] += 1
            if outcome == "ok" and self.window_start <= finished < self.window_end:
                self.window_latencies_ms.append((finished - started) * 1000)
            if detail and len(self.errors) < KEPT_ERRORS:
                self.errors.append(detail)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def classify(status: int, body: bytes) -> tuple[str, str]:
    try:
        err_no = json.loads(body).get("err_no")
    except (ValueError, AttributeError):
        err_no = None
    if status == 200 and err_no == 0:
        return "ok", ""
    if status == 503 and err_no == DRAINING_ERR_NO:
        return "draining", ""
    return "failed", f"HTTP {status}: {body[:200]!r}"


class Load:
    """The clients' shared state: where to send, what, and the two stop signals."""

    def __init__(self, url: str, bodies: list[bytes], timeout_s: float, tally: Tally):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port or 80, parsed.path
        self.bodies, self.timeout_s, self.tally = bodies, timeout_s, tally
        self.stop = threading.Event()
        self.endpoint_gone = threading.Event()

    def client(self, index: int) -> None:
        connection: http.client.HTTPConnection | None = None
        sent = index
        while not self.stop.is_set():
            if connection is None:
                if self.endpoint_gone.is_set():
                    return
                connection = self._connect()
                if connection is None:
                    self.stop.wait(RECONNECT_WAIT_S)
                    continue
            body = self.bodies[sent % len(self.bodies)]
            sent += 1
            if not self._exchange(connection, body):
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection | None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        started = time.perf_counter()
        try:
            connection.connect()
        except OSError as error:
            self.tally.add("refused", started, repr(error))
            return None
        return connection

    def _exchange(self, connection: http.client.HTTPConnection, body: bytes) -> bool:
        """One request; False when the connection is done (closed by either side)."""
        started = time.perf_counter()
        try:
            connection.request("POST", self.path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except UNANSWERED as error:
            self.tally.add("unanswered", started, f"{type(error).__name__}: {error}")
            return False
        except (OSError, http.client.HTTPException) as error:
            self.tally.add("failed", started, f"{type(error).__name__}: {error}")
            return False
        outcome, detail = classify(response.status, data)
        self.tally.add(outcome, started, detail)
        return not response.will_close


def summary(tally: Tally, cpu_s: float) -> dict[str, object]:
    latencies = tally.window_latencies_ms
    window_s = tally.window_end - tally.window_start
    answered = sum(tally.counts.values())
    return {**tally.counts, "errors": tally.errors, "window_ok": len(latencies),
            "window_s": round(window_s, 3),
            "throughput": round(len(latencies) / window_s, 2) if window_s > 0 else 0.0,
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
            "client_cpu_ms_per_request": round(1000 * cpu_s / max(1, answered), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.traffic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://HOST:PORT/<service>/prediction")
    parser.add_argument("--bodies", type=Path, required=True,
                        help="folder of JSON request bodies (*.json), sent in turn")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds before the timed window (throughput, latencies)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of the timed window; the load stops at its end")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--progress", type=float, default=0.2,
                        help="seconds between progress lines")
    args = parser.parse_args(argv)
    bodies = [path.read_bytes() for path in sorted(args.bodies.glob("*.json"))]
    if not bodies:
        parser.error(f"no *.json request bodies in {args.bodies}")
    start = time.perf_counter() + args.warmup
    tally = Tally(window_start=start, window_end=start + args.seconds)
    load = Load(args.url, bodies, args.timeout, tally)
    signal.signal(signal.SIGUSR1, lambda *_: load.endpoint_gone.set())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: load.stop.set())
    cpu_start = time.process_time()
    clients = [threading.Thread(target=load.client, args=(i,), daemon=True)
               for i in range(args.concurrency)]
    for thread in clients:
        thread.start()
    while not load.stop.wait(args.progress) and time.perf_counter() < tally.window_end:
        print(json.dumps(tally.snapshot()), flush=True)
    load.stop.set()
    with tally.lock:  # stopped early: the window ends now
        tally.window_end = min(tally.window_end, time.perf_counter())
    for thread in clients:
        thread.join()
    print(json.dumps({"summary": summary(tally, time.process_time() - cpu_start)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
