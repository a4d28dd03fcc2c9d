"""python -m serving start|stop|status|run|supervise: the Paddle Serving pipeline services of
models/*, each with health endpoints, Prometheus metrics and a graceful stop, kept alive by a
supervisor."""

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from export import ChecksumError, verify_checksums
from model import settings
from model.errors import markdown_table
from serving.control.layout import ROOT, Layout, parse_port_flags, ports_for
from serving.control.manager import (
    Record,
    ServingError,
    describe,
    launch,
    process_alive,
    running_records,
    stop_record,
    wait_ready,
)
from serving.control.prepare import ensure_serving_folder
from serving.control.supervisor import run_supervisor, supervisor_pid

log = logging.getLogger("serving")

EPILOG = f"""\
examples:
  python -m serving start                       # both services, default ports, in the background
  python -m serving start --port peach=28080:29993 --runtime batch_size=8
  python -m serving status
  python -m serving stop                        # supervisor first, then each service drains
  python -m serving run --model peach           # one service in the foreground (Ctrl-C stops)

Ports: --port NAME=HTTP:RPC, else env SERVING_<NAME>_HTTP_PORT / SERVING_<NAME>_RPC_PORT, else
models/<name>/model.yml. Each HTTP port also serves GET /health/live, /health/ready, /metrics.
Runtime keys (--runtime KEY=VALUE, or a `runtime:` section in model.yml; `python -m serving
settings` explains each): {", ".join(settings.KEYS)}.
Files: build/serving/<name>/config.yml (rendered), build/logs/<name>.log,
build/logs/supervisor.log, build/run/<name>.json, build/run/supervisor.pid.
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.build_dir.resolve(),
                    patches_dir=args.patches_dir.resolve())
    try:
        return args.command(layout, args)
    except (ServingError, ValueError) as error:  # SettingsError and ModelSpecError included
        print(f"error: {error}", file=sys.stderr)
        return 1


def prepare(layout: Layout, args: argparse.Namespace) -> int:
    for name in args.models or layout.model_names():
        if not ensure_serving_folder(layout, layout.spec(name)):
            print(f"[{name}] serving folder up to date: {layout.serving_dir(name)}")
    return 0


def start(layout: Layout, args: argparse.Namespace) -> int:
    names = args.models or layout.model_names()
    if not names:
        raise ServingError(f"no model descriptions under {layout.models_dir}")
    port_flags = parse_port_flags(args.port)
    runtime = [*args.runtime, *([f"host={args.host}"] if args.host else [])]
    specs = [layout.spec(name) for name in names]
    for spec in specs:
        ensure_serving_folder(layout, spec, settings.parse_pairs(runtime))
    already = {record.name: record for record in running_records(layout)}
    launched, waiting = [], []
    try:
        for spec in specs:
            if spec.name in already and process_alive(already[spec.name].pid):
                print(f"[{spec.name}] already running (pid {already[spec.name].pid})")
                waiting.append((already[spec.name], None))
                continue
            record, process = launch(layout, spec, ports_for(spec, port_flags), runtime)
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
    if args.supervise:
        _start_supervisor(layout)
    return 0


def _start_supervisor(layout: Layout) -> None:
    """Start (or restart, to pick up new records) the supervisor in its own session."""
    _stop_supervisor(layout)
    log_file = layout.build_dir / "logs" / "supervisor.log"
    command = [sys.executable, "-m", "serving", "supervise", "--models-dir",
               str(layout.models_dir), "--build-dir", str(layout.build_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_file.open("a", encoding="utf-8") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    print(f"supervisor: pid {process.pid}, restarts a dead or unready service; log {log_file}")


def _stop_supervisor(layout: Layout) -> None:
    pid = supervisor_pid(layout)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
    print(f"supervisor (pid {pid}) stopped")


def _print_endpoints(records: list[Record], latencies: dict[str, float]) -> None:
    for record in records:
        print(f"[{record.name}] ready: first prediction in {latencies[record.name] * 1000:.0f} ms"
              f"\n    http POST {record.url}\n    rpc  {record.host}:{record.rpc_port}"
              f"\n    log  {record.log}")
    first = records[0]
    print("\ntry it:\n"
          f"  curl -s -X POST {first.url} -H 'Content-Type: application/json' \\\n"
          f"    -d '{{\"key\": [\"image\"], \"value\": [\"'\"$(base64 -w0 IMAGE.jpg)\"'\"]}}'\n"
          f"  python clients/pipeline_http_client.py --service {first.service} "
          f"--port {first.http_port} IMAGE.jpg\n"
          "stop with: python -m serving stop  (or make stop)")


def stop(layout: Layout, args: argparse.Namespace) -> int:
    watching = supervisor_pid(layout) is not None
    _stop_supervisor(layout)  # first: it would restart the services we stop
    # Read only now: a restart the supervisor finished meanwhile replaced a record, and the
    # old one would name a dead process while the new service kept running, orphaned.
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
    if watching and running_records(layout):
        _start_supervisor(layout)  # keep watching the services left running
    return 1 if failures else 0


def status(layout: Layout, args: argparse.Namespace) -> int:
    records = running_records(layout)
    if not records:
        print("no service running (start with: python -m serving start)")
        return 3
    lines = [describe(record) for record in records]
    pid = supervisor_pid(layout)
    lines.append(f"supervisor: running, pid {pid}" if pid else "supervisor: NOT RUNNING")
    print("\n".join(lines))
    return 0 if all(", ready" in line for line in lines[:-1]) else 1


def run(layout: Layout, args: argparse.Namespace) -> int:
    spec = layout.spec(args.model)
    ensure_serving_folder(layout, spec, settings.parse_pairs(args.runtime))
    serving_server = layout.serving_server(spec.name)
    try:
        verified = verify_checksums(serving_server)
    except ChecksumError as error:
        raise ServingError(f"[{spec.name}] refusing to serve: {error}. Re-export the model "
                           "(`make models`) if the change is intended.") from None
    log.info("%s: %d model files match their export checksums", spec.name, len(verified))
    ports = ports_for(spec, parse_port_flags(args.port))
    resolved = settings.resolve(spec.runtime, settings.parse_pairs(args.runtime))
    workdir = layout.serving_dir(spec.name)
    os.chdir(workdir)  # the pipeline writes PipelineServingLogs/ into cwd
    os.environ.setdefault("SERVING_LOG_PATH", str(workdir))
    from serving.service import run_service  # imports the pipeline: after SERVING_LOG_PATH

    return run_service(spec, serving_server, resolved, ports.http, ports.rpc,
                       layout.config_file(spec.name))


def supervise(layout: Layout, args: argparse.Namespace) -> int:
    return run_supervisor(layout)


def error_codes(layout: Layout, args: argparse.Namespace) -> int:
    print(markdown_table())
    return 0


def settings_help(layout: Layout, args: argparse.Namespace) -> int:
    print(settings.help_text())
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
                        help="runtime setting for every service (repeatable; `python -m "
                             "serving settings` lists them)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("start", parents=[common, served],
                       help="start services in the background; returns once each answered")
    p.add_argument("models", nargs="*", help="model names (default: every models/*/model.yml)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the first successful prediction (default 300)")
    p.add_argument("--host", default=os.environ.get("SERVING_HOST"),
                   help="interface both ports bind (default 127.0.0.1, or $SERVING_HOST; "
                        "0.0.0.0 = every interface); same as --runtime host=...")
    p.add_argument("--no-supervisor", dest="supervise", action="store_false",
                   help="do not start the supervisor that restarts dead services")
    p.set_defaults(command=start)

    p = sub.add_parser("prepare", parents=[common],
                       help="export + patch each model's serving folder unless up to date")
    p.add_argument("models", nargs="*", help="model names (default: every models/*/model.yml)")
    p.set_defaults(command=prepare)

    p = sub.add_parser("stop", parents=[common], help="stop what `start` started")
    p.add_argument("models", nargs="*", help="model names (default: all)")
    p.set_defaults(command=stop)

    p = sub.add_parser("status", parents=[common], help="show what runs; exit 0 if all answer")
    p.set_defaults(command=status)

    p = sub.add_parser("run", parents=[common, served], help="serve one model in the foreground")
    p.add_argument("--model", required=True, help="model name (a folder of --models-dir)")
    p.set_defaults(command=run)

    p = sub.add_parser("supervise", parents=[common],
                       help="watch the started services; restart dead ones (start runs it)")
    p.set_defaults(command=supervise)

    p = sub.add_parser("errors", parents=[common],
                       help="print the error codes (err_no, HTTP status, meaning)")
    p.set_defaults(command=error_codes)

    p = sub.add_parser("settings", parents=[common],
                       help="print the runtime settings (type, default, why)")
    p.set_defaults(command=settings_help)
    return parser


if __name__ == "__main__":
    sys.exit(main())
