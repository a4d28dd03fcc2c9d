"""Fixes for paddledet 2.6.0 on paddlepaddle 3.x and numpy 2, each with its root cause."""

from __future__ import annotations


def install() -> None:
    """Registers the post-import fixes of this module (see compat.hooks.after_import)."""
