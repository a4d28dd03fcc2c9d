"""python -m serving start|stop|status|run: the Paddle Serving pipeline services of models/*."""

import compat  # noqa: F401, I001  # first import of every entry point

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from serving.config import parse_overrides, render_config, resolve_runtime, write_config
from serving.layout import ROOT, Layout, parse_port_flags, ports_for
from serving.manager import (Record, ServingError, describe, ensure_serving_folder,
                             group_alive, launch, running_records, stop_record, wait_ready)

EPILOG = """\
examples:
  python -m serving start                       # both services, default ports, in the background
  python -m serving start --port peach=28080:29993 --runtime thread_num=1
  python -m serving status
  python -m serving stop
  python -m serving run --model peach           # one service in the foreground (Ctrl-C stops)

Ports: --port NAME=HTTP:RPC, else env SERVING_<NAME>_HTTP_PORT / SERVING_<NAME>_RPC_PORT, else
models/<name>/model.yml. Runtime keys (config.yml): worker_num, is_thread_op, concurrency,
thread_num, ir_optim, use_mkldnn, mem_optim. Files: build/serving/<name>/config.yml (rendered),
build/logs/<name>.log, build/run/<name>.json.
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.build_dir.resolve(),
                    patches_dir=args.patches_dir.resolve())
    try:
        return args.command(layout, args)
    except (ServingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def start(layout: Layout, args: argparse.Namespace) -> int:
    names = args.models or layout.model_names()
    if not names:
        raise ServingError(f"no model descriptions under {layout.models_dir}")
    port_flags = parse_port_flags(args.port)
    specs = [layout.spec(name) for name in names]
    for spec in specs:
        ensure_serving_folder(layout, spec)
    already = {record.name: record for record in running_records(layout)}
    launched, waiting = [], []
    try:
        for spec in specs:
            if spec.name in already and group_alive(already[spec.name].pid):
                print(f"[{spec.name}] already running (pid {already[spec.name].pid})")
                waiting.append((already[spec.name], None))
                continue
            record, process = launch(layout, spec, ports_for(spec, port_flags), args.runtime,
                                     args.rpc_host)
            print(f"[{spec.name}] starting (pid {record.pid}), log {record.log}", flush=True)
            launched.append(record)
            waiting.append((record, process))
        deadline = time.monotonic() + args.timeout
        latencies = {record.name: wait_ready(record, process, deadline)
                     for record, process in waiting}
    except BaseException:
        for record in launched:
            stop_record(layout, record)
        raise
    _print_endpoints([record for record, _ in waiting], latencies)
    return 0


def _print_endpoints(records: list[Record], latencies: dict[str, float]) -> None:
    for record in records:
        print(f"[{record.name}] ready: first prediction in {latencies[record.name] * 1000:.0f} ms"
              f"\n    http POST {record.url}\n    rpc  127.0.0.1:{record.rpc_port}"
              f"\n    log  {record.log}")
    first = records[0]
    print("\ntry it:\n"
          f"  curl -s -X POST {first.url} -H 'Content-Type: application/json' \\\n"
          f"    -d '{{\"key\": [\"image\"], \"value\": [\"'\"$(base64 -w0 IMAGE.jpg)\"'\"]}}'\n"
          f"  python clients/pipeline_http_client.py --service {first.service} "
          f"--port {first.http_port} IMAGE.jpg\n"
          "stop with: python -m serving stop  (or make stop)")


def stop(layout: Layout, args: argparse.Namespace) -> int:
    records = [r for r in running_records(layout) if not args.models or r.name in args.models]
    if not records:
        print("nothing to stop")
    failures = 0
    for record in records:
        try:
            print(stop_record(layout, record))
        except ServingError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def status(layout: Layout, args: argparse.Namespace) -> int:
    records = running_records(layout)
    if not records:
        print("no service running (start with: python -m serving start)")
        return 3
    lines = [describe(record) for record in records]
    print("\n".join(lines))
    return 0 if all(": running" in line and "answering (" in line for line in lines) else 1


def run(layout: Layout, args: argparse.Namespace) -> int:
    spec = layout.spec(args.model)
    ensure_serving_folder(layout, spec)
    serving_server = layout.serving_server(spec.name)
    ports = ports_for(spec, parse_port_flags(args.port))
    runtime = resolve_runtime(spec, serving_server, parse_overrides(args.runtime))
    config = write_config(layout.config_file(spec.name),
                          render_config(spec, serving_server, runtime, ports.http, ports.rpc),
                          runtime)
    workdir = layout.serving_dir(spec.name)
    os.chdir(workdir)  # the pipeline writes ProcessInfo.json and PipelineServingLogs/ into cwd
    os.environ.setdefault("SERVING_LOG_PATH", str(workdir))
    logging.info("serving %s on http %d / rpc %d with %s", spec.name, ports.http, ports.rpc,
                 config)
    from serving.service import run as serve  # imports the pipeline: after SERVING_LOG_PATH

    serve(spec, serving_server, config)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, default=ROOT / "models",
                        help="folder of model descriptions (default: models/)")
    common.add_argument("--build-dir", type=Path, default=ROOT / "build",
                        help="where serving folders, logs and pid records go (default: build/)")
    common.add_argument("--patches-dir", type=Path, default=ROOT / "prototxt_patches",
                        help="prototxt patches for the export stage")
    served = argparse.ArgumentParser(add_help=False)
    served.add_argument("--port", action="append", default=[], metavar="NAME=HTTP:RPC",
                        help="ports of one service (repeatable)")
    served.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                        help="config.yml runtime setting for every service (repeatable)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("start", parents=[common, served],
                       help="start services in the background; returns once each answered")
    p.add_argument("models", nargs="*", help="model names (default: every models/*/model.yml)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the first successful prediction (default 300)")
    p.add_argument("--rpc-host", default=os.environ.get("SERVING_RPC_HOST", "127.0.0.1"),
                   help="interface the gRPC port binds (default 127.0.0.1; [::] = all)")
    p.set_defaults(command=start)

    p = sub.add_parser("stop", parents=[common], help="stop what `start` started")
    p.add_argument("models", nargs="*", help="model names (default: all)")
    p.set_defaults(command=stop)

    p = sub.add_parser("status", parents=[common], help="show what runs; exit 0 if all answer")
    p.set_defaults(command=status)

    p = sub.add_parser("run", parents=[common, served], help="serve one model in the foreground")
    p.add_argument("--model", required=True, help="model name (a folder of --models-dir)")
    p.set_defaults(command=run)
    return parser


if __name__ == "__main__":
    sys.exit(main())
