"""python -m bench.profile: where a served request's time goes, by pipeline stage, measured.

Starts one service (the project configuration unless --runtime says otherwise), drives it with
the benchmark's closed-loop HTTP load generator, and samples every thread of every process of the
service with py-spy (idle threads are not sampled; `--gil`: only the thread holding the GIL). Each
sample is charged to the innermost frame that names a stage (table STAGES); the table gives the
sampled milliseconds per request per stage next to the service's measured CPU per request.
Sample on a quiet machine: a thread waiting for a core is not told apart from an idle one.

Output: the table on stdout, and <out>/<model>-c<N>.txt, the collapsed stacks (open them with
speedscope or flamegraph.pl for the full picture).
"""

import argparse
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen, procstats, services
from bench.payloads import encode_payloads
from model import settings
from serving.control.layout import ROOT, Layout
from serving.control.prepare import ensure_serving_folder

WAITING = "waiting (no CPU): conditions, sockets"
# (stage, substrings of a py-spy frame "function (file:line)"); a sample goes to the innermost
# frame matching any row. Order inside the table does not matter: a frame matches one row.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("predict (the engine)", ("Model.predict (", "Engine.run (")),
    ("decode: base64 + JPEG + limits", ("decode_checked (", "check_request (")),
    ("preprocess: resize, crop, normalize", ("Model.preprocess (", "Preprocessor.")),
    ("postprocess: outputs -> JSON", ("Model.postprocess (",)),
    ("HTTP request: headers + JSON body", ("_parse_body (", "parse_head (",
                                          "Connection.read_head (", "Connection.read_body (")),
    ("HTTP response: JSON + write", ("HttpServer._prediction_reply (", "HttpServer._send (",
                                     "render_response (")),
    ("metrics + admission", ("ServiceState.record (", "ServiceState._admit (")),
    ("pipeline plumbing: DAG + channels + ops", ("pipeline/dag.py", "pipeline/channel.py",
                                                 "pipeline/operator.py",
                                                 "pipeline/pipeline_server.py")),
    ("gRPC server", ("grpc/_server.py",)),
    # py-spy reports a thread blocked in these as busy; they cost no CPU (excluded from the total)
    (WAITING, ("Condition.wait (", "Event.wait (", "Connection._receive (",
               "Selector.select (")),
)
OTHER = "other"


@dataclass(frozen=True)
class StageTime:
    stage: str
    samples: int
    share: float  # of all samples (waiting included)
    ms_per_request: float


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for stage, needles in STAGES:
            if any(needle in frame for needle in needles):
                return stage
    return OTHER


def parse_collapsed(text: str) -> Counter[str]:
    """py-spy's raw (collapsed) output -> samples per stage."""
    samples: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stage_of(stack.split(";"))] += int(count)
    return samples


def stage_times(samples: Counter[str], rate_hz: int, requests: int) -> list[StageTime]:
    total = sum(samples.values()) or 1
    return [StageTime(stage, count, count / total, 1000 * count / rate_hz / max(1, requests))
            for stage, count in samples.most_common()]


def table(times: list[StageTime], cpu_ms_per_request: float, throughput: float,
          sampled: str) -> str:
    lines = [f"{'stage':42} {'share':>6} {'ms/request':>10}"]
    lines += [f"{t.stage:42} {t.share:6.1%} {t.ms_per_request:10.2f}" for t in times]
    working = sum(t.ms_per_request for t in times if t.stage != WAITING)
    lines.append(f"{'total ' + sampled + ', without waiting':42} {'':6} {working:10.2f}")
    lines.append(f"server CPU {cpu_ms_per_request:.2f} ms per request (all threads, incl. "
                 f"GIL-free C work), {throughput:.1f} req/s")
    return "\n".join(lines)


def record(pid: int, seconds: float, rate_hz: int, out: Path, gil_only: bool) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    subprocess.run([py_spy, "record", "--pid", str(pid), "--subprocesses",
                    *(["--gil"] if gil_only else []),
                    "--nonblocking", "--rate", str(rate_hz), "--duration", str(int(seconds)),
                    "--format", "raw", "--output", str(out)],
                   check=True, capture_output=True, timeout=seconds + 120)


def profile(args: argparse.Namespace) -> int:
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.out.resolve() / "build")
    spec = layout.spec(args.model)
    ensure_serving_folder(layout, spec)
    payloads = encode_payloads(spec.sample_images(args.images))
    runtime = settings.parse_pairs(args.runtime)
    service = services.start(layout.models_dir, layout.build_dir, args.model, runtime)
    collapsed = args.out / f"{args.model}-c{args.concurrency}.txt"
    try:
        requests = payloads.http_requests("127.0.0.1", service.http_port, service.service)
        results: list[loadgen.LoadResult] = []
        load = threading.Thread(target=lambda: results.append(loadgen.run_http(
            "127.0.0.1", service.http_port, requests, args.concurrency, args.seconds + 2,
            args.warmup)))
        load.start()
        time.sleep(args.warmup + 1)
        before = procstats.sample_group(service.pgid)
        started = time.perf_counter()
        record(service.pgid, args.seconds, args.rate, collapsed, args.gil)
        elapsed = time.perf_counter() - started
        after = procstats.sample_group(service.pgid)
        load.join()
    finally:
        services.stop(layout.models_dir, layout.build_dir, service)
    (result,) = results
    if result.errors:
        raise services.BenchError(f"{result.errors} failed requests: {result.first_error}")
    requests_profiled = round(result.throughput * elapsed)
    times = stage_times(parse_collapsed(collapsed.read_text()), args.rate, requests_profiled)
    cpu_ms = 1000 * (after.cpu_s - before.cpu_s) / max(1, requests_profiled)
    print(f"{args.model}, HTTP, {args.concurrency} clients, {elapsed:.0f} s sampled at "
          f"{args.rate} Hz, runtime {runtime or '(project defaults)'}")
    print(table(times, cpu_ms, result.throughput, "GIL-held" if args.gil else "busy"))
    print(f"collapsed stacks: {collapsed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (a models/<name>/ folder)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "profile",
                        help="collapsed stacks and the service's build folder")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP clients (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="sampled seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="load before sampling")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--images", type=int, default=32, help="distinct request images")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (default: every busy thread)")
    parser.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                        help="service runtime setting (python -m serving --runtime)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return profile(args)
    except (services.BenchError, subprocess.CalledProcessError, ValueError) as error:
        detail = getattr(error, "stderr", b"") or b""
        print(f"error: {error}\n{detail.decode(errors='replace')[-2000:]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
