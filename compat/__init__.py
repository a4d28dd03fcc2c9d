"""Compatibility layer: makes Paddle Serving 0.9.0, paddledet 2.6.0, paddleclas 2.6.0 and
paddle2onnx 2.1.0 run on Python 3.11 + paddlepaddle 3.x + numpy 2 + protobuf >= 4, without editing
site-packages.

`activate()` registers every fix as an import hook: a function applied to a module right before
or after it executes, so nothing heavy is imported here and a fix only costs something when its
target is used. It runs once per process, at interpreter start-up, from the .pth file that
`make install` puts in the venv's site-packages (compat/paddle_vision_serving_compat.pth): every
process of the venv, a user's own upstream-style script included, gets the fixes, and nothing
has to import this package first. PADDLE_VISION_SERVING_COMPAT=off leaves them out, to see
upstream's own behaviour (the tests reproduce each upstream failure so).

The fixes themselves, each with its root cause, live in `compat.serving` (Paddle Serving),
`compat.ppdet` (paddledet), `compat.paddleclas` (paddleclas), `compat.paddle2onnx` (paddle2onnx)
and `compat.openvino` (OpenVINO, settings its callers pass).
`compat.applied` lists what has run, for tests.
"""

from __future__ import annotations

import os

from compat import hooks

SWITCH = "PADDLE_VISION_SERVING_COMPAT"
applied = hooks.applied


def activate() -> None:
    """Install every fix, once per process."""
    from compat import paddle2onnx, paddleclas, ppdet, serving

    if hooks.installed():
        return
    for fixes in (serving, ppdet, paddleclas, paddle2onnx):
        fixes.install()
    hooks.install()


def activate_unless_switched_off() -> None:
    """What the .pth file runs at start-up."""
    if os.environ.get(SWITCH, "on").lower() != "off":
        activate()
