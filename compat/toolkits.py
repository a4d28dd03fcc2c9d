"""Fixes for paddledet 2.6.0 and paddleclas 2.6.0 on paddlepaddle 3.x and numpy 2."""

from __future__ import annotations


def install() -> None:
    """Registers nothing yet: the toolkit fixes are added with the training and export code."""
