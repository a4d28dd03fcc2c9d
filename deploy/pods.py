"""Runs a rendered Deployment's pod with podman and does the kubelet's part: probes, preStop,
SIGTERM within the grace period. Two ways to start it:

- `play`: `podman kube play` of the Deployment itself, on a podman network the caller made.
- `run_command`: `podman run` with the pod's image, args, env, user, read-only root, emptyDir
  volumes, capabilities and limits, for a network namespace podman pods cannot join
  (`--network ns:PATH` is refused for pods by podman 4.3).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.manifests import Manifest, container, port_number
from deploy.podman import inspect, podman

LABEL = "io.github.paddle-vision-serving.test"  # on every container the tests start
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1 << 10, "Mi": 1 << 20,
            "Gi": 1 << 30}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("1Gi", "500m", "2") as a number."""
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def grace_period_s(deployment: Manifest) -> int:
    return int(pod_spec(deployment).get("terminationGracePeriodSeconds", 30))


# --- starting --------------------------------------------------------------------------------


def play(deployment: Manifest, folder: Path, network: str) -> str:
    """`podman kube play` of one Deployment (one replica); the model container's name."""
    path = folder / f"{deployment['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(deployment, sort_keys=False))
    podman("kube", "play", "--network", network, str(path))
    pod = f"{deployment['metadata']['name']}-pod-0"
    return f"{pod}-{container(deployment)['name']}"


def unplay(deployment: Manifest, folder: Path) -> None:
    podman("kube", "down", str(folder / f"{deployment['metadata']['name']}.yaml"), check=False)


def run_command(deployment: Manifest, name: str, network: str) -> list[str]:
    """`podman run` arguments that start the pod's model container as the manifest says."""
    pod, spec = pod_spec(deployment), container(deployment)
    security, own = pod.get("securityContext", {}), spec.get("securityContext", {})
    args = ["run", "--detach", "--name", name, "--label", f"{LABEL}=1", "--network", network,
            "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
            "--stop-timeout", str(grace_period_s(deployment))]
    if own.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if own.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in own.get("capabilities", {}).get("drop", [])]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in spec.get("volumeMounts", []):
        empty_dir = volumes[mount["name"]]["emptyDir"]  # the only kind the manifests use
        size = int(quantity(empty_dir["sizeLimit"]))
        args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777,size={size}"]
    limits = spec.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu']):g}"]
    args += [f"--env={item['name']}={item['value']}" for item in spec.get("env", [])]
    if "command" in spec:
        args += ["--entrypoint", json.dumps(spec["command"])]
    return [*args, spec["image"], *spec.get("args", [])]


def address(name: str, network: str) -> str:
    """The container's address on a podman network."""
    return inspect("container", name)["NetworkSettings"]["Networks"][network]["IPAddress"]


# --- the kubelet's part ----------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    kind: str
    path: str
    port: int
    period_s: float
    timeout_s: float
    failure_threshold: int

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}{self.path}"


def probe(deployment: Manifest, kind: str) -> Probe:
    """startupProbe, readinessProbe or livenessProbe of the model container (httpGet)."""
    spec = container(deployment)
    settings = spec[kind]
    return Probe(kind, settings["httpGet"]["path"],
                 port_number(spec, settings["httpGet"]["port"]),
                 float(settings.get("periodSeconds", 10)),
                 float(settings.get("timeoutSeconds", 1)),
                 int(settings.get("failureThreshold", 3)))


def probe_status(check: Probe, host: str) -> int | None:
    """The HTTP status the probe gets (the kubelet passes 200-399), None if no answer."""
    try:
        with urllib.request.urlopen(check.url(host), timeout=check.timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def passes(check: Probe, host: str) -> bool:
    status = probe_status(check, host)
    return status is not None and 200 <= status < 400


def wait_passes(check: Probe, host: str) -> float:
    """Probes every period_s as the kubelet does; seconds until it passed. Raises when it failed
    failure_threshold times in a row (the kubelet would restart the container)."""
    started = time.monotonic()
    for _ in range(check.failure_threshold):
        attempt = time.monotonic()
        if passes(check, host):
            return time.monotonic() - started
        time.sleep(max(0.0, check.period_s - (time.monotonic() - attempt)))
    raise TimeoutError(f"{check.kind} {check.url(host)} failed {check.failure_threshold} times "
                       f"in {time.monotonic() - started:.0f} s")


@dataclass(frozen=True)
class Termination:
    prestop_s: float
    stop_s: float  # from SIGTERM until the container had exited
    exit_code: int


def terminate(deployment: Manifest, name: str) -> Termination:
    """The kubelet's stop: the preStop command in the container, then SIGTERM, and SIGKILL only
    when the grace period (counted from the start of preStop) ran out."""
    grace = grace_period_s(deployment)
    started = time.monotonic()
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    podman("exec", name, *command, timeout=grace)
    prestop_s = time.monotonic() - started
    remaining = max(1, round(grace - prestop_s))
    podman("stop", "--time", str(remaining), name, timeout=remaining + 30)
    stop_s = time.monotonic() - started - prestop_s
    exit_code = int(inspect("container", name)["State"]["ExitCode"])
    return Termination(prestop_s, stop_s, exit_code)


def memory_peak_bytes(name: str) -> int:
    """The most memory the container's cgroup has used (what a memory limit is held against)."""
    state = inspect("container", name)["State"]
    cgroup = state["CgroupPath"].lstrip("/")
    for path in (Path("/sys/fs/cgroup/memory") / cgroup / "memory.max_usage_in_bytes",
                 Path("/sys/fs/cgroup") / cgroup / "memory.peak"):
        if path.is_file():
            return int(path.read_text())
    raise FileNotFoundError(f"no memory peak file for cgroup {cgroup}")


def logs(name: str) -> str:
    done = podman("logs", name, check=False)
    return done.stdout + done.stderr


def remove_containers(names: list[str]) -> None:
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)


def create_network(name: str, subnet: str) -> None:
    podman("network", "create", "--subnet", subnet, name)


def remove_network(name: str) -> None:
    podman("network", "rm", "--force", name, check=False)


def remove_leftovers(prefix: str) -> None:
    """What an earlier test run started and could not remove (it was killed): containers with
    the tests' label, pods and networks whose names start with `prefix`."""
    listed = podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}=1", check=False)
    remove_containers(listed.stdout.split())
    pods = podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.split()
    for pod in (name for name in pods if name.startswith(prefix)):
        podman("pod", "rm", "--force", "--time", "0", pod, check=False)
    networks = podman("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    for network in (name for name in networks if name.startswith(prefix)):
        remove_network(network)
