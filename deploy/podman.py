"""podman, called the same way by the image build and the deployment tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# runc, cgroupfs and ulimits this kernel accepts (the file says why); a CONTAINERS_CONF the
# caller set wins.
CONTAINERS_CONF = ROOT / "deploy" / "image" / "containers.conf"


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the command and its output."""


def environment() -> dict[str, str]:
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def podman(*args: str, check: bool = True, timeout: float | None = 120
           ) -> subprocess.CompletedProcess[str]:
    """Runs `podman ARGS`; raises PodmanError with its output when it fails and check is set."""
    done = subprocess.run(["podman", *args], env=environment(), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} failed (exit {done.returncode}):\n"
                          f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def inspect(kind: str, name: str) -> dict[str, Any]:
    """`podman KIND inspect NAME` (kind: container, image, pod) as a mapping."""
    return json.loads(podman(kind, "inspect", name).stdout)[0]


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0
