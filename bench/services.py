"""Start and stop one benchmarked service through the project's own CLI (`python -m serving`),
on free ports and in the benchmark's build folder, so what is measured is what users run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.manager import free_ports

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300


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


def _cli(command: str, models_dir: Path, build_dir: Path, *extra: str
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "serving", command, "--models-dir",
                           str(models_dir), "--build-dir", str(build_dir), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S + 60)


def start(models_dir: Path, build_dir: Path, name: str, runtime: dict[str, str]
          ) -> RunningService:
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


def stop(models_dir: Path, build_dir: Path, service: RunningService) -> None:
    done = _cli("stop", models_dir, build_dir, service.name)
    if done.returncode != 0:
        raise BenchError(f"[{service.name}] `python -m serving stop` failed:\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
