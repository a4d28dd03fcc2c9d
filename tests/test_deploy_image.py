"""The image runs as deploy/k8s says (`make deploy-test`, root): `podman kube play` of each
rendered Deployment of overlays/local on a podman network the test makes, the kubelet's probes,
answers equal to the in-process ones over HTTP and gRPC, and the kubelet's stop (preStop, then
SIGTERM) under load."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from deploy_helpers import (
    MODELS,
    PREFIX,
    ROOT,
    WORK_DIR,
    Traffic,
    local_deployments,
    require_tools,
    sample_images,
    service_name,
    show,
    write_bodies,
)
from service_helpers import in_process_results, run_client

from deploy import image, manifests, pods
from deploy.containerfile import declared_image
from deploy.podman import inspect, podman
from serving.protocol import http_url, post_http, request_items

pytestmark = pytest.mark.deploy
NETWORK = PREFIX + "net"
SUBNET = "198.18.100.0/24"  # RFC 2544's block for benchmark networks; the bridge gets .1
ANSWERED_IMAGES = 6
LOAD_CLIENTS = 8
LOAD_BEFORE_STOP = 20  # answers under load before the kubelet's stop begins
DRAIN_LOG = re.compile(r"stopped: (\d+) requests accepted, (\d+) answered, (\d+) abandoned")
INSIDE_THE_IMAGE = """\
import json, os, sys
from pathlib import Path
served = Path("build/serving")
print(json.dumps({
    "python": list(sys.version_info[:2]), "uid": os.getuid(), "executable": sys.executable,
    "served": sorted(p.parent.parent.name for p in served.glob("*/serving_server/*_conf.prototxt")),
    "config_links": {p.name: os.readlink(p / "config.yml") for p in served.iterdir()
                     if os.path.islink(p / "config.yml")},
}))
"""


@dataclass(frozen=True)
class Pod:
    model: str
    deployment: manifests.Manifest
    container: str
    address: str
    started_s: float

    @property
    def spec(self) -> manifests.Manifest:
        return manifests.container(self.deployment)

    def port(self, name: str) -> int:
        return manifests.port_number(self.spec, name)


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    require_tools()
    pods.remove_leftovers(PREFIX)
    pods.create_network(NETWORK, SUBNET)
    try:
        yield NETWORK
    finally:
        pods.remove_network(NETWORK)


@pytest.fixture(scope="module", params=list(MODELS))
def pod(request: pytest.FixtureRequest, network: str) -> Iterator[Pod]:
    deployment = local_deployments()[request.param]
    folder = WORK_DIR / "pods"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        name = pods.play(deployment, folder, network)
        address = pods.address(name, network)
        started = pods.wait_passes(pods.probe(deployment, "startupProbe"), address)
        yield Pod(request.param, deployment, name, address, started)
    finally:
        pods.unplay(deployment, folder)


def test_the_image_has_the_layout_its_containerfile_declares() -> None:
    require_tools()
    ref = image.image_ref()
    config, declared = inspect("image", ref)["Config"], declared_image()
    assert (config["User"], config["WorkingDir"]) == (declared.user, declared.workdir)
    assert config["Entrypoint"] == declared.entrypoint
    env = dict(item.split("=", 1) for item in config["Env"])
    assert declared.env.items() <= env.items()
    assert {int(port.split("/")[0]) for port in config["ExposedPorts"]} == set(declared.exposed)
    inside = json.loads(podman("run", "--rm", "--network", "none", "--entrypoint", "python",
                               ref, "-c", INSIDE_THE_IMAGE).stdout)
    models = sorted(path.parent.name for path in (ROOT / "models").glob("*/model.yml"))
    assert inside["python"] == [3, 11] and inside["executable"].startswith("/opt/venv/")
    assert inside["uid"] == int(declared.user.split(":")[0])
    assert inside["served"] == models
    assert inside["config_links"] == {name: f"/tmp/{name}.config.yml" for name in models}


def test_the_pod_passes_its_probes(pod: Pod, capsys: pytest.CaptureFixture[str]) -> None:
    startup = pods.probe(pod.deployment, "startupProbe")
    assert pod.started_s <= startup.period_s * startup.failure_threshold
    for kind in ("readinessProbe", "livenessProbe"):
        assert pods.passes(pods.probe(pod.deployment, kind), pod.address), kind
    show(capsys, f"pod {pod.model}", {"startup probe passed after s": round(pod.started_s, 1)})


def test_the_pod_serves_metrics_where_its_scrape_annotations_point(pod: Pod) -> None:
    annotations = pod.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    url = (f"http://{pod.address}:{annotations['prometheus.io/port']}"
           f"{annotations['prometheus.io/path']}")
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert "# TYPE serving_requests_total counter" in text and "serving_ready 1" in text


def test_the_pod_runs_as_the_manifest_says(pod: Pod) -> None:
    info = inspect("container", pod.container)
    security = pods.pod_spec(pod.deployment)["securityContext"]
    assert info["Config"]["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert info["Config"]["Cmd"] == pod.spec["args"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    limits = pod.spec["resources"]["limits"]
    assert info["HostConfig"]["Memory"] == pods.quantity(limits["memory"])
    assert info["HostConfig"]["NanoCpus"] == pods.quantity(limits["cpu"]) * 1e9
    assert {mount["mountPath"] for mount in pod.spec["volumeMounts"]} <= {
        mount["Destination"] for mount in info["Mounts"]}
    writable = podman("exec", pod.container, "python", "-c", (
        "import os\nfor path in ('/app/x', '/opt/venv/x', '/tmp/x'):\n"
        "    try:\n        open(path, 'w').close(); print(path)\n    except OSError: pass"))
    assert writable.stdout.split() == ["/tmp/x"]


def test_the_pod_answers_as_in_process(pod: Pod) -> None:
    service = service_name(pod.model)
    jpegs = sample_images(pod.model, ANSWERED_IMAGES)
    url = http_url(pod.address, pod.port("http"), service)
    for jpeg in jpegs:
        answer = post_http(url, request_items([jpeg]), timeout=30)
        assert answer["err_no"] == 0, answer
        expected = in_process_results(ROOT / "models", ROOT / "build", pod.model, [jpeg])
        served = json.loads(answer["value"][0])
        assert [r["class_id"] for r in served] == [r["class_id"] for r in expected["image"]]
        assert [r["score"] for r in served] == pytest.approx(
            [r["score"] for r in expected["image"]], abs=1e-4)
    picture = WORK_DIR / "pods" / f"{pod.model}.jpg"
    picture.write_bytes(jpegs[0])
    rpc = run_client("rpc", service, pod.port("grpc"), "--host", pod.address, "--json",
                     str(picture))
    assert rpc.returncode == 0, rpc.stderr
    assert json.loads(rpc.stdout)[0]["predictions"], rpc.stdout


def test_sigterm_under_load_drains_every_accepted_request(
        pod: Pod, capsys: pytest.CaptureFixture[str]) -> None:
    """The kubelet's stop while 8 clients keep the pod busy: the pod leaves the endpoints (no
    new connections) as preStop starts; open connections keep sending until SIGTERM. Every
    request the service took is answered: it says so in its log, and no client saw a failure."""
    bodies, _ = write_bodies(pod.model, 16)
    url = http_url(pod.address, pod.port("http"), service_name(pod.model))
    traffic = Traffic(url, bodies, concurrency=LOAD_CLIENTS)
    try:
        traffic.wait_more_ok(LOAD_BEFORE_STOP)
        traffic.remove_endpoint()
        peak = pods.memory_peak_bytes(pod.container)
        stopped = pods.terminate(pod.deployment, pod.container)
        result = traffic.stop()
    finally:
        traffic.close()
    drained = DRAIN_LOG.findall(pods.logs(pod.container))
    grace = pods.grace_period_s(pod.deployment)
    limit = pods.quantity(pod.spec["resources"]["limits"]["memory"])
    assert result["failed"] == 0, result["errors"]
    assert result["ok"] >= LOAD_BEFORE_STOP and result["refused"] == 0
    # A connection whose next request comes after the drain is closed unanswered (once per
    # connection); the service's own count below says whether it took such a request.
    assert result["unanswered"] <= LOAD_CLIENTS
    assert stopped.exit_code == 0, "the service did not exit cleanly before SIGKILL"
    assert stopped.prestop_s + stopped.stop_s < grace
    assert len(drained) == 1, "no (or more than one) drain summary in the service's log"
    accepted, answered, abandoned = (int(number) for number in drained[0])
    assert accepted == answered and abandoned == 0
    assert peak < limit
    show(capsys, f"pod {pod.model} stop under load", {
        "answered": result["ok"], "refused as draining": result["draining"],
        "closed unanswered": result["unanswered"], "failed": result["failed"],
        "preStop s": round(stopped.prestop_s, 1),
        "SIGTERM to exit s": round(stopped.stop_s, 1), "service log accepted/answered":
        f"{accepted}/{answered}", "memory peak MiB": round(peak / 2**20),
        "memory limit MiB": round(limit / 2**20)})
