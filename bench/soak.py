"""Load test of the running services (`python -m bench.soak`, `make soak`): N requests at
concurrency C, mixed over HTTP and gRPC and over every running service, each answer compared with
the result computed in this process (same preprocessing, Paddle Inference with the service's
runtime). Reports lost and wrong answers, throughput, latency and each service's RSS before/after;
exits 1 if any request was lost or wrong.

"lost": no answer (connection error, timeout) or an error answer to a valid request.
"""

import argparse
import http.client
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from paddle_serving_server.pipeline.proto import pipeline_service_pb2, pipeline_service_pb2_grpc

from model import settings
from model.model import Model
from serving.control.layout import ROOT, Layout
from serving.control.manager import Record, running_records
from serving.protocol import decode_results, request_items

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-2  # pixels
IMAGE_SIZES = ((240, 320), (480, 360), (300, 300), (720, 1280), (256, 256), (360, 640))


def synthetic_jpeg(height: int, width: int, seed: int) -> bytes:
    """A photo-sized JPEG of smooth random texture (pure noise would make unrealistically
    large files) with one solid rectangle."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    pixels = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.rectangle(pixels, (width // 4, height // 4), (width // 2, height // 2),
                  tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


@dataclass(frozen=True)
class Case:
    """One request of the mix and the answer it must get."""

    service: str
    items: dict[str, str]
    expected: dict[str, list]


def reference_model(layout: Layout, record: Record) -> Model:
    """The in-process reference: the service's model, with the runtime settings it runs with."""
    spec = layout.spec(record.name)
    resolved = settings.resolve(spec.runtime, settings.parse_pairs(record.runtime))
    return Model(spec, layout.serving_server(record.name), resolved).load()


def build_cases(layout: Layout, records: Sequence[Record], variants: int = 6) -> list[Case]:
    """Per service: single images and pairs of different sizes."""
    cases = []
    for record in records:
        model = reference_model(layout, record)
        for index in range(variants):
            count = 1 + index % 2
            images = [synthetic_jpeg(*IMAGE_SIZES[(index + k) % len(IMAGE_SIZES)], index * 10 + k)
                      for k in range(count)]
            items = request_items(images)
            expected = {key: json.loads(value) for key, value in model(items).items()}
            cases.append(Case(record.service, items, expected))
    return cases


def mismatch(expected: dict[str, list], got: dict[str, list]) -> str | None:
    """Why an answer differs from the reference, or None."""
    if list(expected) != list(got):
        return f"keys {list(got)} != {list(expected)}"
    for key, want in expected.items():
        if len(want) != len(got[key]):
            return f"{key}: {len(got[key])} results != {len(want)}"
        for ours, theirs in zip(want, got[key], strict=True):
            if ours["class_id"] != theirs["class_id"]:
                return f"{key}: class {theirs['class_id']} != {ours['class_id']}"
            if abs(ours["score"] - theirs["score"]) > SCORE_TOLERANCE:
                return f"{key}: score {theirs['score']} != {ours['score']}"
            if "bbox" in ours and np.abs(np.subtract(ours["bbox"], theirs["bbox"])).max() > \
                    BOX_TOLERANCE:
                return f"{key}: box {theirs['bbox']} != {ours['bbox']}"
    return None


class Refused(Exception):
    """The service did not accept the request (draining, connection refused/closed): it was
    never processed, so a graceful stop may produce these but never a failure."""


class Transport:
    """One worker's connections: an HTTP/1.1 keep-alive connection per service, one gRPC
    channel per service (shared upstream protocol, raw stub: no PipelineClient overhead)."""

    def __init__(self, records: dict[str, Record], timeout: float):
        self._records, self._timeout = records, timeout
        self._http: dict[str, http.client.HTTPConnection] = {}
        self._stubs: dict[str, Any] = {}

    def http(self, service: str, items: dict[str, str]) -> dict[str, Any]:
        record = self._records[service]
        body = json.dumps({"key": list(items), "value": list(items.values())})
        connection = self._http.get(service)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", record.http_port,
                                                    timeout=self._timeout)
            self._http[service] = connection
        try:
            connection.request("POST", f"/{service}/prediction", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as e:
            connection.close()
            del self._http[service]
            raise Refused(f"http: {type(e).__name__}: {e}") from None
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            del self._http[service]
        if answer.get("err_no") == 3001:
            raise Refused(f"http {response.status}: {answer.get('err_msg')}")
        return answer

    def grpc(self, service: str, items: dict[str, str]) -> dict[str, Any]:

        stub = self._stubs.get(service)
        if stub is None:
            channel = grpc.insecure_channel(f"127.0.0.1:{self._records[service].rpc_port}")
            stub = self._stubs[service] = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        request = pipeline_service_pb2.Request(key=list(items), value=list(items.values()),
                                               name=service)
        try:
            reply = stub.inference(request, timeout=self._timeout)
        except grpc.RpcError as error:
            # UNAVAILABLE: the port is closed. CANCELLED: the server stopped before handling
            # the call. Neither was processed; a caller that must be sure compares its count of
            # answers with the service's count of accepted requests (as the stop test does).
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise Refused(f"grpc {error.code().name}: {error.details()}") from None
            raise
        if reply.err_no == 3001:
            raise Refused(f"grpc: {reply.err_msg}")
        return {"err_no": reply.err_no, "err_msg": reply.err_msg, "key": list(reply.key),
                "value": list(reply.value)}


@dataclass
class Tally:
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    refused: int = 0
    by_route: Counter = field(default_factory=Counter)  # "service/protocol" -> answered ok
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # first problems of each kind
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, route: str, seconds: float, problem: str = "") -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if kind == "ok":
                self.by_route[route] += 1
                self.latencies.append(seconds)
            if problem and sum(e.startswith(kind) for e in self.examples) < 5:
                self.examples.append(f"{kind} {route}: {problem}")


def run_load(records: dict[str, Record], cases: Sequence[Case], requests: int,
             concurrency: int, timeout: float = 120.0,
             stop: threading.Event | None = None,
             on_progress: Callable[[int], None] | None = None) -> Tally:
    """`requests` requests (or until `stop`), alternating HTTP and gRPC over the cases."""
    tally = Tally()
    schedule: Iterator[int] = itertools.count()
    schedule_lock = threading.Lock()

    def worker() -> None:
        transport = Transport(records, timeout)
        while stop is None or not stop.is_set():
            with schedule_lock:
                number = next(schedule)
            if number >= requests:
                return
            case = cases[number % len(cases)]
            protocol = "http" if (number // len(cases)) % 2 == 0 else "grpc"
            route = f"{case.service}/{protocol}"
            started = time.perf_counter()
            try:
                answer = getattr(transport, protocol)(case.service, case.items)
            except Refused as refused:
                tally.add("refused", route, 0.0, str(refused))
                time.sleep(0.05)
                continue
            except Exception as error:  # any other failure is a lost request
                tally.add("lost", route, 0.0, f"{type(error).__name__}: {error}")
                continue
            seconds = time.perf_counter() - started
            if answer.get("err_no") != 0:
                tally.add("lost", route, seconds, f"err_no {answer.get('err_no')}: "
                          f"{answer.get('err_msg')}")
                continue
            problem = mismatch(case.expected, decode_results(answer["key"], answer["value"]))
            tally.add("wrong" if problem else "ok", route, seconds, problem or "")
            if on_progress is not None and number % 500 == 0:
                on_progress(number)

    threads = [threading.Thread(target=worker, name=f"load-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def rss_bytes(pgid: int) -> int:
    """Resident memory of every process of a service's process group."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rpartition(")")[2].split()
            if int(fields[2]) != pgid:
                continue
            statm = (status.parent / "statm").read_text().split()
        except OSError:
            continue
        total += int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="total (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight (default 32)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build",
                        help="where `python -m serving start` recorded the services")
    args = parser.parse_args(argv)
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.build_dir.resolve())
    records = {record.service: record for record in running_records(layout)}
    if not records:
        print("no running service: start them first (`make serve`)", file=sys.stderr)
        return 2
    print(f"computing reference answers in-process for {sorted(records)} ...", flush=True)
    cases = build_cases(layout, list(records.values()))
    before = {name: rss_bytes(record.pid) for name, record in records.items()}
    print(f"{args.requests} requests, concurrency {args.concurrency}, HTTP + gRPC, "
          f"{len(cases)} distinct requests", flush=True)
    started = time.perf_counter()
    tally = run_load(records, cases, args.requests, args.concurrency,
                     on_progress=lambda n: print(f"  {n} sent, {time.perf_counter() - started:.0f}"
                                                 " s", flush=True))
    elapsed = time.perf_counter() - started
    after = {name: rss_bytes(record.pid) for name, record in records.items()}
    print(report(tally, elapsed, before, after))
    return 0 if tally.lost == tally.wrong == tally.refused == 0 else 1


def report(tally: Tally, elapsed: float, before: dict[str, int], after: dict[str, int]) -> str:
    latencies = np.array(tally.latencies) * 1000 if tally.latencies else np.zeros(1)
    lines = [f"answered ok {tally.ok}, wrong {tally.wrong}, lost {tally.lost}, refused "
             f"{tally.refused} in {elapsed:.1f} s ({tally.ok / elapsed:.0f} req/s); latency ms "
             f"p50 {np.percentile(latencies, 50):.1f} p99 {np.percentile(latencies, 99):.1f}",
             "per route: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_route.items()))]
    lines += [f"RSS {name}: {before[name] / 2**20:.0f} MB before, {after[name] / 2**20:.0f} MB "
              f"after ({(after[name] - before[name]) / 2**20:+.0f} MB)" for name in before]
    lines += [f"  {example}" for example in tally.examples]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
