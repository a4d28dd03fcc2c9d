"""Helpers of the tests that start real pipeline services (tests/test_service_*.py): free ports,
the `python -m serving` CLI against a temporary build folder, the client scripts, leftovers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.manager import group_alive, port_listening

ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Services:
    """`python -m serving` with its own models and build folders and free ports."""

    models_dir: Path
    build_dir: Path
    ports: dict[str, tuple[int, int]]  # name -> (http, rpc)

    def cli(self, command: str, *extra: str, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
        folders = ["--models-dir", str(self.models_dir), "--build-dir", str(self.build_dir)]
        port_flags = [f"--port={n}={h}:{r}" for n, (h, r) in self.ports.items()]
        args = [*folders, *(port_flags if command == "start" else []), *extra]
        return subprocess.run([sys.executable, "-m", "serving", command, *args], cwd=ROOT,
                              env=QUIET_ENV, capture_output=True, text=True, timeout=timeout)

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.build_dir / "run").glob("*.json")]

    def leftovers(self, pgids: list[int]) -> list[str]:
        """Process groups still alive or ports still bound."""
        left = [f"process group {pgid}" for pgid in pgids if group_alive(pgid)]
        return left + [f"port {port}" for pair in self.ports.values() for port in pair
                       if port_listening(port)]


def run_client(transport: str, service: str, port: int, *args: str
               ) -> subprocess.CompletedProcess[str]:
    script = ROOT / "clients" / f"pipeline_{transport}_client.py"
    return subprocess.run([sys.executable, str(script), "--service", service, "--port", str(port),
                           *args], cwd=ROOT, env=QUIET_ENV, capture_output=True, text=True,
                          timeout=300)
