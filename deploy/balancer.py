"""haproxy (Debian's package) in front of replicas on simulated hosts: it health-checks them on
/health/ready, retries on another replica a request one of them did not answer, and is driven
over its admin socket as a Kubernetes endpoint controller would drive a Service's endpoints."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from deploy.netns import in_netns, terminated_with_parent

BACKEND = "replicas"
CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    # A retry replays the request from haproxy's buffer: the whole request must fit in it.
    tune.bufsize {bufsize}
    maxconn 512
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # A request a replica did not answer (refused, closed without an answer, 503 while it
    # loads or drains) goes to another replica: a prediction is safe to replay.
    # (only a request held whole in the buffer can be replayed: wait for the body first)
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503

frontend models
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance leastconn
    option httpchk GET {health_path}
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int


class Balancer:
    """`with Balancer(netns, folder, port, servers) as lb:` haproxy runs in `netns` and listens on
    that namespace's 127.0.0.1:port."""

    def __init__(self, netns: str, folder: Path, port: int, servers: list[Server],
                 health_path: str = "/health/ready", bufsize: int = 1 << 20):
        self.netns, self.port, self.servers = netns, port, servers
        self.socket_path = folder / "haproxy.sock"
        self.config_path = folder / "haproxy.cfg"
        self.log_path = folder / "haproxy.log"
        lines = "\n".join(f"    server {s.name} {s.address}:{s.port} check" for s in servers)
        self.config = CONFIG.format(socket=self.socket_path, bufsize=bufsize, port=port,
                                    backend=BACKEND, health_path=health_path, servers=lines)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Balancer:
        self.config_path.write_text(self.config)
        self.socket_path.unlink(missing_ok=True)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                in_netns(self.netns, ["haproxy", "-db", "-f", str(self.config_path)]),
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=terminated_with_parent)
        try:
            self._wait(self._answers, 10, "answer on haproxy's admin socket")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _answers(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except OSError:  # not listening yet
            return False

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """`show stat` rows of the backend by server name (and BACKEND for the totals)."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == BACKEND}

    def status(self, server: str) -> str:
        return self.stats()[server]["status"]  # UP, DOWN, MAINT, DRAIN, "UP 1/2", ...

    def set_state(self, server: str, state: str) -> None:
        """ready, drain (no new requests: the endpoint is gone) or maint."""
        answer = self.command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy refused 'set server {server} state {state}': {answer}")

    def retried(self) -> int:
        """Requests haproxy sent again (retries + redispatches) since it started."""
        total = self.stats()["BACKEND"]
        return int(total["wretr"] or 0) + int(total["wredis"] or 0)

    def wait_status(self, server: str, wanted: str, timeout: float) -> float:
        """Seconds until the server's health status is `wanted` (UP, DOWN, ...)."""
        return self._wait(lambda: self.status(server) == wanted, timeout,
                          f"{server} to be {wanted}")

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no {what} after {timeout:.0f} s; haproxy log "
                                   f"{self.log_path}")
            time.sleep(0.05)
        return time.monotonic() - started
