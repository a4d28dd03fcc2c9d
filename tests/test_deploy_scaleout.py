"""Replicas on separate simulated hosts behind a real load balancer (`make deploy-test`, root).

Each host is a network namespace joined to the balancer's by a veth pair (deploy/netns.py); each
runs one peach pod, started as the rendered Deployment says (deploy/pods.py run_command);
haproxy (deploy/balancer.py) health-checks /health/ready and retries a request a replica did not
answer. The load generator runs in the balancer's namespace: no traffic leaves those addresses.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_helpers import (
    PREFIX,
    WORK_DIR,
    Traffic,
    local_deployments,
    require_tools,
    service_name,
    show,
    write_bodies,
)

from deploy import manifests, pods
from deploy.balancer import Balancer, Server
from deploy.netns import Network, in_netns
from deploy.podman import podman

pytestmark = pytest.mark.deploy
MODEL = "peach"
HOSTS = 2
BALANCER_PORT = 8080
CLIENTS = 8
MORE_ANSWERS = 30  # answers the load must get between two steps of a scenario
ROUNDS = 5
WARMUP_S = 2.0
WINDOW_S = 6.0


@dataclass
class Cluster:
    network: Network
    deployment: manifests.Manifest
    bodies: Path
    balancer: Balancer | None = None
    replicas: list[str] = field(default_factory=list)  # container name per host

    @property
    def startup_budget_s(self) -> float:
        startup = pods.probe(self.deployment, "startupProbe")
        return startup.period_s * startup.failure_threshold

    def start_replica(self, index: int) -> None:
        host = self.network.hosts[index]
        podman(*pods.run_command(self.deployment, self.replicas[index],
                                 f"ns:{host.netns_path}"))

    def traffic(self, seconds: float = 300, warmup: float = 0.0) -> Traffic:
        url = (f"http://127.0.0.1:{BALANCER_PORT}/{service_name(MODEL)}/prediction")
        return Traffic(url, self.bodies, CLIENTS, seconds, warmup,
                       prefix=in_netns(self.network.balancer, []))

    def served(self, server: str) -> int:
        return int(self.balancer.stats()[server]["stot"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_tools()
    pods.remove_leftovers(PREFIX)
    deployment = local_deployments()[MODEL]
    bodies, _ = write_bodies(MODEL, 16)
    http_port = manifests.port_number(manifests.container(deployment), "http")
    folder = WORK_DIR / "scaleout"
    folder.mkdir(parents=True, exist_ok=True)
    with Network(HOSTS) as network:
        running = Cluster(network, deployment, bodies,
                          replicas=[f"{PREFIX}{MODEL}-h{i}" for i in range(HOSTS)])
        servers = [Server(f"h{i}", host.address, http_port)
                   for i, host in enumerate(network.hosts)]
        try:
            for index in range(HOSTS):
                running.start_replica(index)
            with Balancer(network.balancer, folder, BALANCER_PORT, servers) as balancer:
                running.balancer = balancer
                for server in servers:
                    balancer.wait_status(server.name, "UP", running.startup_budget_s)
                yield running
        finally:
            pods.remove_containers(running.replicas)


def test_a_replica_killed_under_load_loses_no_request(cluster: Cluster,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    victim, server = cluster.replicas[0], "h0"
    retried_before = cluster.balancer.retried()
    traffic = cluster.traffic()
    try:
        traffic.wait_more_ok(MORE_ANSWERS)
        podman("kill", "--signal", "KILL", victim)
        down_s = cluster.balancer.wait_status(server, "DOWN", timeout=10)
        traffic.wait_more_ok(MORE_ANSWERS)  # the other replica alone
        podman("start", victim)  # what the kubelet does with a container that died
        back_s = cluster.balancer.wait_status(server, "UP", cluster.startup_budget_s)
        served_after_restart = cluster.served(server)
        traffic.wait_more_ok(MORE_ANSWERS)
        result = traffic.stop()
    finally:
        traffic.close()
    retried = cluster.balancer.retried() - retried_before
    assert result["failed"] == 0, result["errors"]
    assert result["refused"] == result["draining"] == result["unanswered"] == 0
    assert retried > 0, "the kill met no request in flight: nothing was tested"
    assert cluster.served(server) > served_after_restart, "the restarted replica got no request"
    show(capsys, "replica killed under load", {
        "answered": result["ok"], "failed": result["failed"], "retried by haproxy": retried,
        "marked down after s": round(down_s, 1), "back up after s": round(back_s, 1)})


def test_a_rolling_restart_serves_throughout(cluster: Cluster,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """One replica at a time: out of the balancer (its endpoint goes), preStop and SIGTERM,
    a new pod in its place, back in once ready."""
    traffic = cluster.traffic()
    stops = []
    try:
        traffic.wait_more_ok(MORE_ANSWERS)
        for index, name in enumerate(cluster.replicas):
            server = f"h{index}"
            cluster.balancer.set_state(server, "drain")
            stops.append(pods.terminate(cluster.deployment, name))
            pods.remove_containers([name])
            cluster.start_replica(index)
            cluster.balancer.set_state(server, "ready")
            cluster.balancer.wait_status(server, "UP", cluster.startup_budget_s)
            traffic.wait_more_ok(MORE_ANSWERS)
        result = traffic.stop()
    finally:
        traffic.close()
    assert [stop.exit_code for stop in stops] == [0] * HOSTS
    assert result["failed"] == 0, result["errors"]
    assert result["refused"] == result["draining"] == result["unanswered"] == 0
    show(capsys, "rolling restart under load", {
        "answered": result["ok"], "failed": result["failed"],
        "SIGTERM to exit s": [round(stop.stop_s, 1) for stop in stops]})


def test_throughput_of_one_and_two_replicas(cluster: Cluster,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Paired rounds, 1 replica then 2 (the second host out of the balancer or in), each a
    closed-loop window of CLIENTS clients through haproxy. Figures, not a target: the two
    hosts share this machine's cores with haproxy and the load generator."""
    load_before = os.getloadavg()[0]
    rounds = []
    for _ in range(ROUNDS):
        pair = {}
        for replicas in (1, 2):
            cluster.balancer.set_state("h1", "maint" if replicas == 1 else "ready")
            cluster.balancer.wait_status("h1", "MAINT" if replicas == 1 else "UP",
                                         cluster.startup_budget_s)
            summary = cluster.traffic(WINDOW_S, WARMUP_S).finish(WARMUP_S + WINDOW_S + 60)
            assert summary["failed"] == summary["unanswered"] == 0, summary
            assert summary["window_ok"] > 0, summary
            pair[replicas] = summary
        rounds.append(pair)
    one = [pair[1]["throughput"] for pair in rounds]
    two = [pair[2]["throughput"] for pair in rounds]
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    p50s = {n: [pair[n]["p50_ms"] for pair in rounds] for n in (1, 2)}

    def spread(values: list[float], digits: int = 1) -> str:
        return (f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})")

    show(capsys, f"throughput {MODEL}, {CLIENTS} clients through haproxy", {
        "rounds": ROUNDS, "window s": WINDOW_S, "1 replica req/s": spread(one),
        "2 replicas req/s": spread(two), "2/1 ratio": spread(ratios, 2),
        "p50 ms 1 replica": spread(p50s[1]), "p50 ms 2 replicas": spread(p50s[2]),
        "cores": os.cpu_count(), "load average before/after":
        f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"})
