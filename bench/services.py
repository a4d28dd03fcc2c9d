"""Start and stop one benchmarked service on free ports, in the benchmark's build folder: the
project's configurations through its own CLI (`python -m serving`), so what is measured is what
users run; the upstream reference through `python -m bench.reference`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving.control.manager import free_ports, group_alive, log_tail, port_listening
from serving.protocol import http_url, post_http, probe_image, request_items

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300
STOP_GRACE_S = 15.0


class BenchError(RuntimeError):
    """A benchmark step failed; the message says what and where to look."""


@dataclass(frozen=True)
class RunningService:
    name: str
    service: str
    pgid: int
    http_port: int
    rpc_port: int
    log: Path
    upstream_gateway: bool = False  # the reference: stopped by signalling its process group


def _cli(command: str, models_dir: Path, build_dir: Path, *extra: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", command, "--models-dir",
                           str(models_dir), "--build-dir", str(build_dir), *extra],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S + 60)


def start(models_dir: Path, build_dir: Path, name: str, runtime: dict[str, str],
          upstream_gateway: bool = False) -> RunningService:
    if upstream_gateway:
        return _start_reference(models_dir, build_dir, name, runtime)
    http_port, rpc_port = free_ports(2)
    done = _cli("start", models_dir, build_dir, name, f"--port={name}={http_port}:{rpc_port}",
                "--timeout", str(START_TIMEOUT_S),
                *(f"--runtime={key}={value}" for key, value in runtime.items()))
    if done.returncode != 0:
        raise BenchError(f"[{name}] `python -m serving start` failed with runtime {runtime}:\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    record = json.loads((build_dir / "run" / f"{name}.json").read_text(encoding="utf-8"))
    return RunningService(name=name, service=record["service"], pgid=record["pid"],
                          http_port=record["http_port"], rpc_port=record["rpc_port"],
                          log=Path(record["log"]))


def _start_reference(models_dir: Path, build_dir: Path, name: str, runtime: dict[str, str]
                     ) -> RunningService:
    """The reference in its own session; ready once it answers a real prediction (it has no
    health endpoint)."""
    from model.spec import ModelSpec

    http_port, rpc_port = free_ports(2)
    log = build_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.reference", "--model", name, "--models-dir",
               str(models_dir), "--build-dir", str(build_dir),
               f"--port={name}={http_port}:{rpc_port}",
               *(f"--runtime={key}={value}" for key, value in runtime.items())]
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    service = RunningService(name=name, service=ModelSpec.load(models_dir / name).service.name,
                             pgid=process.pid, http_port=http_port, rpc_port=rpc_port, log=log,
                             upstream_gateway=True)
    url = http_url("127.0.0.1", http_port, service.service)
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if post_http(url, request_items([probe_image()]), 30.0).get("err_no") == 0:
                return service
        time.sleep(0.5)
    _stop_group(service)
    raise BenchError(f"[{name}] the upstream reference did not answer (exit {process.poll()}); "
                     f"last lines of {log}:\n{log_tail(log)}")


def stop(models_dir: Path, build_dir: Path, service: RunningService) -> None:
    if service.upstream_gateway:
        _stop_group(service)
        return
    done = _cli("stop", models_dir, build_dir, service.name)
    if done.returncode != 0:
        raise BenchError(f"[{service.name}] `python -m serving stop` failed:\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _stop_group(service: RunningService) -> None:
    """SIGTERM to the whole group (upstream has no drain; its gateway is a child), SIGKILL what
    is left after STOP_GRACE_S; the ports must be free after."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pgid, signum)
        deadline = time.monotonic() + STOP_GRACE_S
        while group_alive(service.pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_alive(service.pgid):
            break
    ports = (service.http_port, service.rpc_port)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(map(port_listening, ports)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(service.pgid) or any(map(port_listening, ports)):
        raise BenchError(f"[{service.name}] reference still alive or ports {ports} bound")
