"""python -m bench.reference: one model served the stock upstream way, the benchmark's reference
configuration: Paddle Serving's own gRPC server and its Go HTTP gateway (which binds every
interface, answers every error with HTTP 200, has no health endpoint and no drain), around the
project's Op. Runs until killed; `python -m bench` starts and stops it (bench.services)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model import settings
from model.model import Model
from model.process import configure_process
from serving.control.layout import ROOT, Layout, parse_port_flags, ports_for
from serving.control.prepare import ensure_serving_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    parser.add_argument("--model", required=True, help="model name (a folder of --models-dir)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build")
    parser.add_argument("--port", action="append", default=[], metavar="NAME=HTTP:RPC")
    parser.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE",
                        help="runtime setting, as for python -m serving")
    args = parser.parse_args(argv)
    layout = Layout(models_dir=args.models_dir.resolve(), build_dir=args.build_dir.resolve())
    spec = layout.spec(args.model)
    ensure_serving_folder(layout, spec)
    resolved = settings.resolve(spec.runtime, settings.parse_pairs(args.runtime))
    ports = ports_for(spec, parse_port_flags(args.port))
    workdir = layout.serving_dir(spec.name)
    os.chdir(workdir)  # the pipeline writes ProcessInfo.json and PipelineServingLogs/ here
    os.environ["SERVING_LOG_PATH"] = str(workdir)
    os.environ["SERVING_RPC_HOST"] = resolved.host  # compat binds upstream's gRPC server there
    from serving.pipeline import render_config, run_upstream_gateway, write_config

    config = write_config(layout.config_file(spec.name),
                          render_config(spec.name, resolved, ports.http, ports.rpc), resolved)
    configure_process(resolved)
    run_upstream_gateway(Model(spec, layout.serving_server(spec.name), resolved), config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
