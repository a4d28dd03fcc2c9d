"""Python in a fresh process of the project's venv, with the compatibility fixes (as every process
of the venv has them, from the .pth file `make install` puts there), without them, to see
upstream's own behaviour (PADDLE_VISION_SERVING_COMPAT=off), or without some of them
(PADDLE_VISION_SERVING_COMPAT_SKIP), for a failure that the other fixes must let through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import compat
from compat import hooks

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *, with_compat: bool = True, skip: tuple[str, ...] = (), **env: str
               ) -> subprocess.CompletedProcess[str]:
    switch = {} if with_compat else {compat.SWITCH: "off"}
    if skip:
        switch[hooks.SKIP] = ",".join(skip)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env, **switch})
