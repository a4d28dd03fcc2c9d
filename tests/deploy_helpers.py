"""Helpers of the tests that run the service image (tests/test_deploy_*.py, `make deploy-test`):
the rendered Deployments, request bodies of real validation images, the load generator as a
child process read while it runs, and the figures the tests print."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import image, manifests
from deploy.netns import terminated_with_parent
from deploy.podman import image_exists
from deploy.traffic import OUTCOMES
from model.spec import ModelSpec
from serving.protocol import request_items

ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = ROOT / "build" / "deploy"
PREFIX = "pvs-test-"  # names of the pods, containers and networks the tests make
MODELS = {"peach": "peach", "traffic_light": "traffic-light"}  # model -> Deployment name



def require_tools() -> None:
    """The deployment tests need root and what `make deploy-test` installs; say so, loudly."""
    missing = [tool for tool in ("podman", "haproxy", "ip", "kubectl") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        pytest.fail(f"run as root with {', '.join(missing) or 'the tools'} installed: "
                    "`make deploy-test` installs them")
    if not image_exists(image.image_ref()):
        pytest.fail(f"no image {image.image_ref()}: `make image` builds it")


def local_deployments() -> dict[str, manifests.Manifest]:
    """The local overlay's Deployments by model name, renamed with PREFIX so that what the
    tests start never collides with anything else on the machine."""
    docs = manifests.render("overlays/local")
    deployments = {}
    for model, name in MODELS.items():
        deployment = manifests.by_name(docs, "Deployment", name)
        deployment["metadata"]["name"] = PREFIX + name
        deployments[model] = deployment
    return deployments


def service_name(model: str) -> str:
    """The pipeline service a model serves (POST /<service>/prediction)."""
    description = yaml.safe_load((ROOT / "models" / model / "model.yml").read_text())
    return description["service"]["name"]


def sample_images(model: str, count: int) -> list[bytes]:
    """The model's sample JPEGs, as its description names them (`samples:`)."""
    return ModelSpec.load(ROOT / "models" / model).sample_images(count)


def write_bodies(model: str, count: int) -> tuple[Path, list[bytes]]:
    """`count` JSON request bodies of the model's validation images, one image each, in
    build/deploy/bodies/<model>/; also returns the JPEGs."""
    folder = WORK_DIR / "bodies" / model
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    jpegs = sample_images(model, count)
    for index, jpeg in enumerate(jpegs):
        items = request_items([jpeg])
        (folder / f"{index:03d}.json").write_text(
            json.dumps({"key": list(items), "value": list(items.values())}))
    return folder, jpegs


class Traffic:
    """`python -m deploy.traffic` as a child process (inside a network namespace when `prefix`
    is `ip netns exec NS`), its progress lines read as they come."""

    def __init__(self, url: str, bodies: Path, concurrency: int = 8, seconds: float = 300,
                 warmup: float = 0.0, prefix: list[str] | None = None):
        command = [sys.executable, "-m", "deploy.traffic", "--url", url, "--bodies", str(bodies),
                   "--concurrency", str(concurrency), "--seconds", str(seconds),
                   "--warmup", str(warmup)]
        self.process = subprocess.Popen([*(prefix or []), *command], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True,
                                        preexec_fn=terminated_with_parent)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.summary: dict[str, Any] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            record = json.loads(line)
            if "summary" in record:
                self.summary = record["summary"]
            else:
                self.counts = record

    def wait_for(self, condition: Callable[[dict[str, int]], bool], timeout: float,
                 what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.counts):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"load: no {what} within {timeout:.0f} s: {self.counts}")
            time.sleep(0.05)

    def wait_more_ok(self, count: int, timeout: float = 60) -> None:
        target = self.counts["ok"] + count
        self.wait_for(lambda counts: counts["ok"] >= target, timeout, f"{count} more answers")

    def remove_endpoint(self) -> None:
        """No new connections from now on (the pod left the Service's endpoints)."""
        self.process.send_signal(signal.SIGUSR1)

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        """Waits for the window to end (or stops the load now if it is open-ended)."""
        try:
            self.process.wait(timeout)
        finally:
            self.close()
        self._reader.join(10)
        assert self.summary is not None, "the load generator printed no summary"
        return self.summary

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        return self.finish()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def show(capsys: pytest.CaptureFixture[str], title: str, figures: dict[str, Any]) -> None:
    """Prints measured figures on the terminal (not captured) and keeps them in
    build/deploy/figures.json."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / "figures.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    recorded[title] = {**figures, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    with capsys.disabled():
        print(f"\n[{title}] " + ", ".join(f"{key} {value}" for key, value in figures.items()))
