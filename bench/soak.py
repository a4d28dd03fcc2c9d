"""Load test of the running services (`python -m bench.soak`, `make soak`): N requests at
concurrency C, mixed over HTTP and gRPC and over every running service, each answer compared with
the result computed in this process (same preprocessing, Paddle Inference with the service's
runtime), with hostile clients mixed in while it runs: slow clients (an HTTP request head that
never ends: each must get 408 and be closed) and decompression bombs (8 blank 5000 x 5000 PNGs in
one request, over the per-request pixel budget: each must get 413 / err_no 5008). Reports lost
and wrong answers, what the hostile clients got, throughput, latency and each service's RSS
before/after; exits 1 if any request was lost, wrong or refused, or a hostile client got
anything else.

"lost": no answer (connection error, timeout) or an error answer to a valid request.
"""

import argparse
import http.client
import itertools
import json
import os
import socket
import struct
import sys
import threading
import time
import zlib
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


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height zeros: a few KB that decode to width x height x 3 bytes
    of pixels (5000 x 5000: 3 KB -> 75 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


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


class _Closed(Refused):
    """The connection closed before an answer: the request was not processed."""


class Transport:
    """One worker's connections: an HTTP/1.1 keep-alive connection per service, one gRPC
    channel per service (shared upstream protocol, raw stub: no PipelineClient overhead)."""

    def __init__(self, records: dict[str, Record], timeout: float):
        self._records, self._timeout = records, timeout
        self._http: dict[str, http.client.HTTPConnection] = {}
        self._stubs: dict[str, Any] = {}

    def http(self, service: str, items: dict[str, str]) -> dict[str, Any]:
        body = json.dumps({"key": list(items), "value": list(items.values())})
        reused = service in self._http
        try:
            answer = self._http_once(service, body)
        except _Closed:
            if not reused:
                raise
            # The service closed the connection while it was idle (keepalive_timeout_s) before
            # it read this request: send it again on a new one, as HTTP clients do.
            answer = self._http_once(service, body)
        if answer.get("err_no") == 3001:
            raise Refused(f"http: {answer.get('err_msg')}")
        return answer

    def _http_once(self, service: str, body: str) -> dict[str, Any]:
        connection = self._http.get(service)
        if connection is None:
            connection = http.client.HTTPConnection(
                "127.0.0.1", self._records[service].http_port, timeout=self._timeout)
            self._http[service] = connection
        try:
            connection.request("POST", f"/{service}/prediction", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as e:
            connection.close()
            del self._http[service]
            raise _Closed(f"http: {type(e).__name__}: {e}") from None
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            del self._http[service]
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


SLOW_CLIENT_WAIT_S = 120.0  # far beyond any header_timeout_s a service would run with
BOMB_IMAGES = 8  # of 5000 x 5000: 200 MP, over the default per-request budget (100 MP)


def slow_client(record: Record) -> str:
    """A request head that never ends: what the service did about it ("408 closed" expected)."""
    with socket.create_connection(("127.0.0.1", record.http_port), timeout=30) as sock:
        sock.sendall(f"POST /{record.service}/prediction HTTP/1.1\r\nHost: soak\r\n".encode())
        sock.settimeout(SLOW_CLIENT_WAIT_S)
        try:
            answer = sock.recv(65536)
            while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
                answer += more
            status = answer.split(b" ", 2)[1].decode() if answer else "nothing"
            while sock.recv(65536):  # the rest of the answer, then the server's close
                pass
        except OSError as error:
            return f"{type(error).__name__}"
    return f"{status} closed"


def bomb(record: Record, protocol: str, images: int = BOMB_IMAGES, timeout: float = 120.0
         ) -> str:
    """A request of `images` decompression bombs: "413 5008" expected over HTTP, "5008" over
    gRPC."""
    items = request_items([png_bomb(5000, 5000)] * images)
    if protocol == "grpc":
        with grpc.insecure_channel(f"127.0.0.1:{record.rpc_port}") as channel:
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
            reply = stub.inference(pipeline_service_pb2.Request(
                key=list(items), value=list(items.values()), name=record.service),
                timeout=timeout)
        return str(reply.err_no)
    connection = http.client.HTTPConnection("127.0.0.1", record.http_port, timeout=timeout)
    try:
        connection.request("POST", f"/{record.service}/prediction",
                           json.dumps({"key": list(items), "value": list(items.values())}))
        response = connection.getresponse()
        return f"{response.status} {json.loads(response.read())['err_no']}"
    finally:
        connection.close()


def run_hostile(records: Sequence[Record], slow_clients: int, bombs: int, spread_s: float,
                bomb_images: int = BOMB_IMAGES) -> Counter:
    """Slow clients and bombs (of `bomb_images` images each), started evenly over `spread_s`
    seconds, round-robin over the services (bombs alternating HTTP and gRPC); the count of each
    outcome."""
    outcomes: Counter = Counter()
    lock = threading.Lock()
    jobs = ([("slow", slow_client)] * slow_clients
            + [("bomb", lambda r, p=p: bomb(r, p, bomb_images))
               for p in ("http", "grpc") * (bombs // 2)]
            + [("bomb", lambda r: bomb(r, "http", bomb_images))] * (bombs % 2))

    def run(index: int, kind: str, job: Callable[[Record], str]) -> None:
        try:
            outcome = job(records[index % len(records)])
        except Exception as error:  # any failure is an outcome to report
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            outcomes[f"{kind}: {outcome}"] += 1

    threads = []
    started = time.monotonic()
    for index, (kind, job) in enumerate(jobs):
        start_at = started + spread_s * index / max(1, len(jobs))
        time.sleep(max(0.0, start_at - time.monotonic()))  # arrivals spread over the run
        threads.append(threading.Thread(target=run, args=(index, kind, job), daemon=True))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return outcomes


def hostile_ok(outcomes: Counter) -> bool:
    """Every slow client got 408 and was closed; every bomb was refused with 5008."""
    expected = {"slow: 408 closed", "bomb: 413 5008", "bomb: 5008"}
    return set(outcomes) <= expected


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
    parser.add_argument("--slow-clients", type=int, default=200,
                        help="HTTP request heads that never end, spread over the run "
                             "(default 200)")
    parser.add_argument("--bombs", type=int, default=50,
                        help="decompression-bomb requests, spread over the run (default 50)")
    parser.add_argument("--spread", type=float, default=60.0,
                        help="seconds over which the slow clients and bombs start (default 60)")
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
    hostile: dict[str, Counter] = {}
    hostile_thread = threading.Thread(target=lambda: hostile.update(outcomes=run_hostile(
        list(records.values()), args.slow_clients, args.bombs, args.spread)))
    started = time.perf_counter()
    hostile_thread.start()
    tally = run_load(records, cases, args.requests, args.concurrency,
                     on_progress=lambda n: print(f"  {n} sent, {time.perf_counter() - started:.0f}"
                                                 " s", flush=True))
    elapsed = time.perf_counter() - started
    hostile_thread.join()
    after = {name: rss_bytes(record.pid) for name, record in records.items()}
    print(report(tally, elapsed, before, after))
    outcomes = hostile["outcomes"]
    print("hostile clients: " + ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items())))
    clean = tally.lost == tally.wrong == tally.refused == 0 and hostile_ok(outcomes)
    return 0 if clean else 1


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
