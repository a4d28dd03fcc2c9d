"""Render a service's Paddle Serving config.yml from its description plus a runtime section.

Runtime values come from, in increasing priority: RUNTIME_DEFAULTS, the description's optional
`runtime:` mapping, and `--runtime key=value` on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from serving.model_spec import ModelSpec
from serving.options import SERVICE_DEFAULTS, parse_bool

AUTO = "auto"
# Tuned by measurement on the 2-core target machine (docs/benchmarks.md, `python -m bench`).
# predictor.run holds the GIL, so one process predicts on one core at a time: the service runs
# one whole pipeline (fronts + thread-op DAG + predictor) per core, each with one math thread.
RUNTIME_DEFAULTS: dict[str, Any] = {
    # With build_dag_each_worker: worker processes (AUTO = the usable cores; each holds its own
    # copy of the model). Without: upstream's gRPC threads (the project front ignores it).
    "worker_num": AUTO,
    "build_dag_each_worker": True,
    # Process ops pass every request through multiprocessing-Manager channels: +~6 ms CPU each.
    "is_thread_op": True,
    "concurrency": 1,
    # 2 math threads per predictor cost about twice the CPU per request (OpenMP threads spin
    # while the process does Python work) and leave no core to the other worker.
    "thread_num": 1,
    "image_threads": 1,  # OpenCV's threads for decode and resize (serving.preprocess)
    # Auto-batching: up to batch_size images per predictor call, from requests arriving
    # together; a partial batch waits at most auto_batching_timeout ms, and only while the
    # worker has more clients than the batch holds (serving.service.ModelOp).
    "batch_size": 4,
    "auto_batching_timeout": 10,
    "ir_optim": True,  # measured: predictor time 1.04 -> 0.60 ms on the tiny model
    "use_mkldnn": AUTO,
    "mem_optim": AUTO,
}


@dataclass(frozen=True)
class Runtime:
    worker_num: int
    is_thread_op: bool
    concurrency: int
    thread_num: int
    image_threads: int
    batch_size: int
    auto_batching_timeout: int
    ir_optim: bool
    use_mkldnn: bool
    mem_optim: bool
    build_dag_each_worker: bool


def is_pir_program(serving_server: Path) -> bool:
    """paddle 3 (PIR) programs are *.json; legacy ones *.pdmodel or __model__."""
    return any(serving_server.glob("*.json"))


def resolve_runtime(spec: ModelSpec, serving_server: Path,
                    overrides: Mapping[str, Any] | None = None) -> Runtime:
    values = {**RUNTIME_DEFAULTS, **spec.runtime, **(overrides or {})}
    unknown = sorted(set(values) - {f.name for f in fields(Runtime)} - set(SERVICE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown runtime settings {unknown}; known: "
                         f"{sorted(RUNTIME_DEFAULTS) + sorted(SERVICE_DEFAULTS)}")
    values = {key: value for key, value in values.items() if key not in SERVICE_DEFAULTS}
    if values["worker_num"] == AUTO:
        values["worker_num"] = len(os.sched_getaffinity(0))
    pir = is_pir_program(serving_server)
    if values["use_mkldnn"] == AUTO:
        # A PIR YOLOv3 with oneDNN segfaults at predictor creation on paddle 3.3.1 (notes,
        # paddledet item 6); the PIR classifier and every legacy program run fine with it.
        values["use_mkldnn"] = not (pir and spec.task == "detection")
    if values["mem_optim"] == AUTO:
        # PIR + memory_optimize_pass: "Not find predictor_id 0 and pass_name" (notes item 4).
        values["mem_optim"] = not pir
    runtime = Runtime(**{f.name: _coerce(f.name, values[f.name], f.type) for f in fields(Runtime)})
    if runtime.is_thread_op and runtime.concurrency > 1:
        # Thread ops share ONE predictor (operator.py:839, get_client(0) once per Op), and a
        # Paddle Inference predictor is not thread-safe: use process ops for concurrency.
        raise ValueError("concurrency > 1 needs is_thread_op=false (thread ops share one "
                         "predictor, which is not thread-safe)")
    return runtime


def _coerce(name: str, value: Any, kind: str) -> Any:
    if kind == "bool":
        return parse_bool(name, value)
    number = int(value)
    if number < 1:
        raise ValueError(f"runtime {name}: must be >= 1, got {value!r}")
    return number


def render_config(spec: ModelSpec, serving_server: Path, runtime: Runtime, http_port: int,
                  rpc_port: int) -> dict[str, Any]:
    """The config.yml mapping Paddle Serving's PipelineServer reads."""
    return {
        "http_port": http_port,
        "rpc_port": rpc_port,
        "worker_num": runtime.worker_num,
        "build_dag_each_worker": runtime.build_dag_each_worker,
        "dag": {
            "is_thread_op": runtime.is_thread_op,
            "retry": 1,
            "client_type": "brpc",  # checked against brpc|grpc, unused by local_predictor ops
            "use_profile": False,
            "tracer": {"interval_s": -1},
        },
        "op": {
            spec.name: {
                "concurrency": runtime.concurrency,
                # -1: no per-call timeout. With one, upstream runs every predictor call in an
                # extra thread (func_timeout, operator.py _run_process) and cannot stop a
                # running prediction anyway.
                "timeout": -1,
                "retry": 1,
                "batch_size": runtime.batch_size,
                "auto_batching_timeout": runtime.auto_batching_timeout,  # ms
                "local_service_conf": {
                    "client_type": "local_predictor",
                    "model_config": str(serving_server.resolve()),
                    "fetch_list": list(spec.fetches),
                    "device_type": 0,
                    "devices": "",
                    "thread_num": runtime.thread_num,
                    "mem_optim": runtime.mem_optim,
                    "ir_optim": runtime.ir_optim,
                    "use_mkldnn": runtime.use_mkldnn,
                    "precision": "fp32",
                },
            }
        },
    }


def write_config(path: Path, config: Mapping[str, Any], runtime: Runtime) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Rendered by `python -m serving` from the model description; edits are "
              "overwritten.\n# runtime: " + ", ".join(f"{k}={v}" for k, v in asdict(runtime)
                                                        .items()) + "\n")
    path.write_text(header + yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings (CLI) -> mapping; values are coerced by resolve_runtime."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--runtime expects key=value, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides
