"""The pure parts of the deployment tooling, fast and offline: how a rendered Deployment becomes
the `podman run` of the scale-out test, Kubernetes quantities, how the load generator classes
answers, the haproxy configuration, the Containerfile reader."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest

from deploy import manifests, pods
from deploy.balancer import Balancer, Server
from deploy.containerfile import declared_image, instructions
from deploy.traffic import classify


@pytest.fixture(scope="module")
def peach() -> manifests.Manifest:
    return manifests.by_name(manifests.render("overlays/local"), "Deployment", "peach")


@pytest.mark.parametrize(("text", "value"), [("1Gi", 2**30), ("768Mi", 768 * 2**20),
                                             ("500m", 0.5), ("2", 2), (1, 1), ("1.5", 1.5)])
def test_kubernetes_quantities(text: str | int, value: float) -> None:
    assert pods.quantity(text) == value


def test_a_quantity_with_an_unknown_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="quantity"):
        pods.quantity("1GB")


def test_podman_run_starts_the_container_the_deployment_describes(peach) -> None:
    argv = pods.run_command(peach, "replica", "ns:/run/netns/host")
    spec = manifests.container(peach)
    image_at = argv.index(spec["image"])
    options, args = argv[:image_at], argv[image_at + 1:]
    assert args == spec["args"]
    pairs = dict(itertools.pairwise(options))
    assert pairs["--user"] == "10001:10001" and pairs["--network"] == "ns:/run/netns/host"
    assert pairs["--stop-timeout"] == str(pods.grace_period_s(peach))
    assert pairs["--memory"] == str(2**30) and pairs["--cpus"] == "2"
    assert pairs["--tmpfs"] == f"/tmp:rw,mode=1777,size={256 * 2**20}"
    assert {"--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL"} <= set(options)
    assert pairs["--security-opt"] == "no-new-privileges"


def test_podman_run_keeps_a_command_the_container_overrides(peach) -> None:
    deployment = copy.deepcopy(peach)
    manifests.container(deployment)["command"] = ["python", "-m", "serving", "run"]
    argv = pods.run_command(deployment, "replica", "none")
    assert json.loads(argv[argv.index("--entrypoint") + 1]) == ["python", "-m", "serving", "run"]


@pytest.mark.parametrize(("status", "body", "outcome"), [
    (200, b'{"err_no": 0, "value": []}', "ok"),
    (503, b'{"err_no": 3001, "err_msg": "draining"}', "draining"),
    (503, b'{"err_no": 3003, "err_msg": "not ready"}', "failed"),
    (200, b'{"err_no": 10000}', "failed"),
    (502, b"<html>bad gateway</html>", "failed"),
])
def test_the_load_generator_classes_answers(status: int, body: bytes, outcome: str) -> None:
    assert classify(status, body)[0] == outcome


def test_haproxy_retries_on_the_other_replicas_and_checks_readiness(tmp_path: Path) -> None:
    config = Balancer("ns", tmp_path, 8080, [Server("h0", "198.18.1.2", 18080),
                                              Server("h1", "198.18.2.2", 18080)]).config
    lines = [line.strip() for line in config.splitlines()]
    assert "bind 127.0.0.1:8080" in lines
    assert "option httpchk GET /health/ready" in lines
    assert "option http-buffer-request" in lines and "option redispatch 1" in lines
    retry_on = next(line for line in lines if line.startswith("retry-on"))
    assert {"conn-failure", "empty-response", "503"} <= set(retry_on.split())
    assert "server h1 198.18.2.2:18080 check" in lines


def test_the_containerfile_reader_joins_continued_lines() -> None:
    steps = instructions("FROM x\n# a comment\nRUN a \\\n    && b\nENV A=1 B=2\n")
    assert [(step.keyword, step.arguments) for step in steps] == [
        ("FROM", "x"), ("RUN", "a      && b"), ("ENV", "A=1 B=2")]
    declared = declared_image()
    assert declared.workdir == "/app" and "PYTHONPATH" not in declared.env  # installed
