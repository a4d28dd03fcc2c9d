"""python -m bench: what serving costs over running the model in process, per model, in one run.

For each model: (a) the in-process limit (the service's own work in plain loops, over several
ways of using the cores; the best one is the limit), (b) each served variant (by default the
project's configuration and the upstream reference configuration) over HTTP and gRPC at each
concurrency, with a closed-loop load generator sending pre-encoded requests, (c) paired rounds:
the limit then the project's HTTP path at 8 clients, one in-process worker then HTTP at one
client, in back-to-back windows of a few seconds with every process loaded once, repeated; the
medians of the rounds' ratios and p50 overheads are the figures that survive the machine's
drift. Outputs: a table on stdout, <out>/bench.json, <out>/bench.md (the
table in Markdown) and <out>/bench.png.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import inprocess, loadgen, procstats, report, services, stages
from bench.payloads import Payloads, encode_payloads
from serving.control.layout import ROOT, Layout
from serving.control.prepare import ensure_serving_folder
from serving.service_metrics import PUBLISH_EVERY_S

log = logging.getLogger("bench")

# PaddleClas's shipped deploy/paddleserving/config.yml served the upstream way (Paddle Serving's
# Go HTTP gateway, bench.reference): one gRPC worker, one op process, no IR optimisation, no
# oneDNN. It sets no
# thread_num (the LocalPredictor then gets None and fails on CPU); 2 = the machine's cores, the
# most favourable choice for the reference. OpenCV's, glibc's and Paddle's defaults, as upstream
# runs.
REFERENCE = "reference"
REFERENCE_RUNTIME = {"worker_num": "1",
                     "build_dag_each_worker": "false", "is_thread_op": "false",
                     "concurrency": "1", "thread_num": "2", "image_threads": "2",
                     "batch_size": "1", "ir_optim": "false", "use_mkldnn": "false",
                     "reuse_freed_memory": "false", "pin_workers": "false",
                     "free_intermediate_tensors": "true"}
DEFAULT_VARIANTS = ("project", REFERENCE)
ROUND_WARMUP_S = 1.0  # before each window of a paired round: every process is loaded already
SMOKE = {"concurrency": "1,2", "duration": 0.5, "warmup": 0.3, "images": 4,
         "inprocess": "1x1", "inprocess_duration": 0.5, "rounds": 1, "round_window": 0.5}
EPILOG = """\
examples:
  python -m bench                                   # both models, full run (~21 min)
  python -m bench peach --transports http --concurrency 8 \\
      --variant project --variant tn1:thread_num=1  # a tuning comparison
  python -m bench --smoke                           # seconds: does the harness work?

A variant is NAME or NAME:key=value,key=value (python -m serving --runtime keys); `project` =
the defaults (python -m serving settings), `reference` = the upstream configuration, served by
Paddle Serving's own gateway (python -m bench.reference)."""


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    if name == REFERENCE and not pairs:
        return name, dict(REFERENCE_RUNTIME)
    runtime = {}
    for pair in filter(None, pairs.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: expected NAME:key=value,key=value")
        runtime[key.strip()] = value.strip()
    return name, runtime


def cpu_field(cpuinfo: str, name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo's text."""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                 if line.split(":", 1)[0].strip() == name), None)


def vector_extensions(cpuinfo: str) -> list[str]:
    """The CPU's AVX/AMX flags: oneDNN picks its kernels by them, and a VM's host (the same
    "AMD EPYC" model name) can differ between runs, with or without AVX-512."""
    flags = (cpu_field(cpuinfo, "flags") or "").split()
    return sorted(flag for flag in flags if flag.startswith(("avx", "amx")))


def widest_extension(extensions: list[str]) -> str:
    for family in ("amx", "avx512", "avx2", "avx"):
        if any(flag.startswith(family) for flag in extensions):
            return family
    return "no AVX"


def machine() -> dict[str, Any]:
    import paddle

    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = cpu_field(cpuinfo, "model name") or platform.processor()
    extensions = vector_extensions(cpuinfo)
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"cpu": cpu, "vector_extensions": extensions, "cores": os.cpu_count(),
            "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "paddle": paddle.__version__,
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_at_start": os.getloadavg()}
    info["summary"] = (f"{info['cores']} x {cpu} ({widest_extension(extensions)}), "
                       f"{info['memory_gb']} GiB, Python "
                       f"{info['python']}, paddle {info['paddle']}, {info['date']}")
    return info


def bench_inprocess(args: argparse.Namespace, layout: Layout, name: str, images_file: Path,
                    project_runtime: dict[str, str]) -> list[dict]:
    strategies = [inprocess.Strategy.parse(s) for s in args.inprocess.split(",")]
    results = []
    for strategy in strategies:
        log.info("[%s] in-process %s", name, strategy.label)
        results.append(measure_inprocess(args, layout, name, strategy, images_file,
                                         project_runtime))
    return results


def inprocess_workers(args: argparse.Namespace, layout: Layout, name: str,
                      strategy: inprocess.Strategy, images_file: Path,
                      project_runtime: dict[str, str]) -> inprocess.Workers:
    return inprocess.Workers(
        strategy, layout.models_dir / name, layout.serving_server(name), images_file,
        [f"{k}={v}" for k, v in project_runtime.items()],
        args.out / "logs" / f"{name}-inprocess.log")


def measure_inprocess(args: argparse.Namespace, layout: Layout, name: str,
                      strategy: inprocess.Strategy, images_file: Path,
                      project_runtime: dict[str, str]) -> dict[str, Any]:
    with inprocess_workers(args, layout, name, strategy, images_file, project_runtime) as pool:
        return pool.window(args.inprocess_duration, args.warmup)


def bench_paired(args: argparse.Namespace, layout: Layout, name: str, images_file: Path,
                 payloads: Payloads, runtime: dict[str, str], limit: dict[str, Any],
                 threads: int) -> dict[str, Any]:
    """The targets with the machine's drift cancelled: one running service and two in-process
    pools loaded once (the limit's strategy, and one worker with the service's math threads);
    --rounds times, back to back, --round-window seconds each: the limit then the project's
    HTTP path at --paired-concurrency (throughput ratio), the single worker then HTTP at one
    client (p50 overhead). A shared VM's speed moves by up to a fifth within minutes; both sides
    of a pair run seconds apart, and the median round counts."""
    strategy, single = inprocess.Strategy.parse(limit["strategy"]), inprocess.Strategy(1, threads)
    concurrency, window = args.paired_concurrency, args.round_window
    service = services.start(layout.models_dir, layout.build_dir, name, runtime)
    rounds = []
    try:
        with inprocess_workers(args, layout, name, strategy, images_file, runtime) as pool, \
                inprocess_workers(args, layout, name, single, images_file, runtime) as one:
            for index in range(args.rounds):
                alone = pool.window(window, ROUND_WARMUP_S)
                served, _ = measure_served(args, service, payloads, "http", concurrency,
                                           (window, ROUND_WARMUP_S), stage_means=False)
                alone_one = one.window(window, ROUND_WARMUP_S)
                served_one, _ = measure_served(args, service, payloads, "http", 1,
                                               (window, ROUND_WARMUP_S), stage_means=False)
                rounds.append(_round_figures(alone, served, alone_one, served_one))
                log.info("[%s] round %d: in-process %s %.1f img/s, http c=%d %.1f req/s, "
                         "ratio %.3f; p50 in-process %s %.1f ms, http c=1 %.1f ms", name,
                         index + 1, strategy.label, alone["throughput"], concurrency,
                         served["throughput"], rounds[-1]["ratio"], single.label,
                         alone_one["p50_ms"], served_one["p50_ms"])
    finally:
        services.stop(layout.models_dir, layout.build_dir, service)
    return {"strategy": strategy.label, "single": single.label, "transport": "http",
            "concurrency": concurrency, "window_s": window, "rounds": rounds,
            "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
            "median_p50_overhead_ms": round(statistics.median(r["p50_overhead_ms"]
                                                              for r in rounds), 2)}


def _round_figures(alone: dict[str, Any], served: dict[str, Any], alone_one: dict[str, Any],
                   served_one: dict[str, Any]) -> dict[str, Any]:
    """One paired round: throughput ratio at load, p50 overhead at one client, and the CPU per
    image in process against per request served (+ the load generator's), which with both
    cores busy is what the ratio is made of."""
    return {"inprocess": alone["throughput"], "served": served["throughput"],
            "ratio": round(served["throughput"] / alone["throughput"], 3),
            "inprocess_cpu_ms": alone["cpu_ms_per_image"],
            "served_cpu_ms": served["server_cpu_ms_per_request"],
            "loadgen_cpu_ms": served["loadgen_cpu_ms_per_request"],
            "inprocess_p50_ms": alone_one["p50_ms"], "served_p50_ms": served_one["p50_ms"],
            "p50_overhead_ms": round(served_one["p50_ms"] - alone_one["p50_ms"], 2),
            "errors": served["errors"] + served_one["errors"],
            "other_cores_busy": max(served["other_cores_busy"], served_one["other_cores_busy"])}


def bench_variant(args: argparse.Namespace, layout: Layout, name: str, payloads: Payloads,
                  runtime: dict[str, str], upstream_gateway: bool) -> dict[str, Any]:
    service = services.start(layout.models_dir, layout.build_dir, name, runtime,
                             upstream_gateway)
    try:
        config = layout.config_file(name).read_text(encoding="utf-8")
        time.sleep(1.0)  # let start-up work settle before the idle reading
        idle = procstats.sample_group(service.pgid)
        runs, peak, stopped = [], idle, None
        for transport, concurrency in served_runs(args):
            try:
                run, run_peak = measure_served(args, service, payloads, transport, concurrency)
            except OSError as error:  # the service stopped accepting connections
                stopped = (f"{transport} at {concurrency} clients: {type(error).__name__}: "
                           f"{error} (log: {service.log})")
                log.error("[%s] variant stopped answering, %s", name, stopped)
                break
            runs.append(run)
            peak = max(peak, run_peak, key=lambda sample: sample.rss_mb)
            log.info("[%s] %s c=%d: %.1f req/s, p50 %s ms, p99 %s ms, %d errors",
                     name, transport, concurrency, run["throughput"], run["p50_ms"],
                     run["p99_ms"], run["errors"])
    finally:
        services.stop(layout.models_dir, layout.build_dir, service)
    return {"runtime": runtime, "resolved_runtime": resolved_runtime(config),
            "config_yml": config, "memory_idle": vars(idle), "memory_peak": vars(peak),
            "runs": runs, "stopped_answering": stopped}


def served_runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(transport, concurrency) in the order they are measured."""
    return [(transport, int(concurrency)) for transport in args.transports.split(",")
            for concurrency in args.concurrency.split(",")]


def resolved_runtime(config_yml: str) -> dict[str, str]:
    """The settings the service really ran with: the `# runtime: k=v, ...` header line that
    serving.pipeline.write_config puts at the top of config.yml."""
    for line in config_yml.splitlines():
        if line.startswith("# runtime: "):
            pairs = (pair.partition("=") for pair in line[len("# runtime: "):].split(", "))
            return {key: value for key, _, value in pairs}
    return {}


def measure_served(args: argparse.Namespace, service: services.RunningService,
                   payloads: Payloads, transport: str, concurrency: int,
                   window: tuple[float, float] | None = None, stage_means: bool = True
                   ) -> tuple[dict[str, Any], procstats.GroupSample]:
    """window: (timed, warm-up) seconds, else --duration / --warmup. stage_means: also read the
    per-stage means from /metrics (waits for the other workers to publish theirs)."""
    duration, warmup = window or (args.duration, args.warmup)
    host = "127.0.0.1"
    before = procstats.sample_group(service.pgid)
    busy_before = procstats.machine_busy_s()
    totals_before = stages.scrape(service.http_port) if stage_means else None
    with procstats.PeakMemory(service.pgid) as memory:
        if transport == "http":
            result = loadgen.run_http(host, service.http_port,
                                      payloads.http_requests(host, service.http_port,
                                                             service.service),
                                      concurrency, duration, warmup)
        elif transport == "rpc":
            result = loadgen.run_rpc(host, service.rpc_port, payloads.rpc_messages, concurrency,
                                     duration, warmup, rpc_reply_ok)
        else:
            raise ValueError(f"unknown transport {transport!r}: http or rpc")
    after = procstats.sample_group(service.pgid)
    elapsed = duration + warmup  # server CPU is read over warm-up + window
    served = max(1.0, result.throughput * elapsed)
    run = result.summary()
    run["server_cpu_ms_per_request"] = round(1000 * (after.cpu_s - before.cpu_s) / served, 2)
    run["server_page_faults_per_request"] = round((after.minor_faults - before.minor_faults)
                                                  / served, 1)
    busy_s = procstats.machine_busy_s() - busy_before
    run["machine_busy_fraction"] = round(busy_s / (elapsed * (os.cpu_count() or 1)), 3)
    # Cores used by neither the service nor the load generator (other users of the machine):
    # figures taken while this is well above 0 are disturbed.
    loadgen_s = result.loadgen_cpu_s * elapsed / duration
    run["other_cores_busy"] = round(max(0.0, busy_s - (after.cpu_s - before.cpu_s) - loadgen_s)
                                    / elapsed, 2)
    run["service_means"] = {}
    if totals_before is not None:  # fronts without /metrics (upstream's gateway): no wait
        time.sleep(PUBLISH_EVERY_S + 0.1)  # until the other workers published their metrics
        totals_after = stages.scrape(service.http_port)
        if totals_after is not None:
            run["service_means"] = totals_after.since(totals_before).means()
    return run, memory.peak or after


def rpc_reply_ok(reply: bytes) -> tuple[bool, str]:
    from paddle_serving_server.pipeline.proto import pipeline_service_pb2

    response = pipeline_service_pb2.Response.FromString(reply)
    return (response.err_no == 0, f"err_no {response.err_no}: {response.err_msg[:200]}")


def bench_model(args: argparse.Namespace, layout: Layout, name: str) -> dict[str, Any]:
    spec = layout.spec(name)
    ensure_serving_folder(layout, spec)
    jpegs = spec.sample_images(args.images)
    payloads = encode_payloads(jpegs)
    variants = dict(parse_variant(text) for text in args.variant or DEFAULT_VARIANTS)
    model: dict[str, Any] = {"inprocess": [], "inprocess_limit": None, "variants": {},
                             "failed_variants": {},
                             "mean_jpeg_bytes": round(sum(map(len, jpegs)) / len(jpegs))}
    images_file = args.out / f"{name}-images.json"
    images_file.write_text(json.dumps({"jpegs_hex": [jpeg.hex() for jpeg in jpegs]}))
    if args.inprocess:
        model["inprocess"] = bench_inprocess(args, layout, name, images_file,
                                             variants.get("project", {}))
        model["inprocess_limit"] = max(model["inprocess"], key=lambda s: s["throughput"])
    for variant_name, runtime in variants.items():
        log.info("[%s] served variant %s %s", name, variant_name, runtime or "(defaults)")
        try:
            model["variants"][variant_name] = bench_variant(
                args, layout, name, payloads, runtime, upstream_gateway=variant_name == REFERENCE)
        except services.BenchError as error:  # one configuration failing is a result too
            log.error("[%s] variant %s failed: %s", name, variant_name, error)
            model["failed_variants"][variant_name] = {"runtime": runtime, "error": str(error)}
    report.add_ratios(model, "reference")
    report.add_latency_overheads(model)
    if args.rounds and model["inprocess_limit"] and "project" in model["variants"]:
        log.info("[%s] %d paired rounds", name, args.rounds)
        threads = int(model["variants"]["project"]["resolved_runtime"]["thread_num"])
        model["paired"] = bench_paired(args, layout, name, images_file, payloads,
                                       variants["project"], model["inprocess_limit"], threads)
    return model


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out = args.out.resolve()
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.out / "build")
    names = args.models or layout.model_names()
    results: dict[str, Any] = {"machine": machine(), "settings": {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()}, "models": {}}
    try:
        for name in names:
            results["models"][name] = bench_model(args, layout, name)
    except (services.BenchError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.table(results))
    (args.out / "bench.md").write_text(report.markdown(results), encoding="utf-8")
    print(f"\nwrote {report.write_json(results, args.out / 'bench.json')}, bench.md")
    print(f"wrote {report.plot(results, args.out / 'bench.png')}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: every models/*/)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models",
                        help="folder of model descriptions (default: models/)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench",
                        help="output folder: bench.json, bench.png, logs (default build/bench)")
    parser.add_argument("--variant", action="append", metavar="NAME[:k=v,...]",
                        help="served configuration to measure (repeatable; default: project "
                             "and reference)")
    parser.add_argument("--transports", default="http,rpc", help="default http,rpc")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32",
                        help="closed-loop clients, comma-separated (default 1,2,4,8,16,32)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="timed seconds per served run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="untimed seconds before each timed window (default 2)")
    parser.add_argument("--images", type=int, default=32,
                        help="distinct validation images the requests cycle through (default 32)")
    parser.add_argument("--inprocess", default="1x2,2x1,1x1,2x1b4",
                        help="in-process strategies PxT[bB] (P processes x T threads, batch B), "
                             "'' to skip (default 1x2,2x1,1x1,2x1b4)")
    parser.add_argument("--inprocess-duration", type=float, default=8.0,
                        help="timed seconds per in-process strategy (default 8)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="paired rounds: the in-process limit then the project's HTTP "
                             "path at --paired-concurrency, one in-process worker then HTTP at "
                             "one client; medians reported (default 10; 0 to skip)")
    parser.add_argument("--round-window", type=float, default=4.0,
                        help="timed seconds of each window of a paired round, after "
                             f"{ROUND_WARMUP_S:g} s of warm-up (default 4)")
    parser.add_argument("--paired-concurrency", type=int, default=8,
                        help="clients in the paired rounds (default 8, the target's)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run (seconds) to check the harness; figures mean nothing")
    return parser


if __name__ == "__main__":
    sys.exit(main())
