"""Fixes for paddlepaddle itself, each with its root cause."""

from __future__ import annotations

import importlib

from compat import hooks

# --- 1. grpc before paddle ----------------------------------------------------------------------
# Importing paddle before grpc crashed with a segfault in zlib's inflateReset2 (Paddle issue
# 70538: both bundle zlib, and the one loaded first wins). Every process here may import both
# (the services, the clients, the export), so grpc is imported first, right before paddle.


def import_grpc_first() -> None:
    importlib.import_module("grpc")


def install() -> None:
    hooks.before_import("paddle")(import_grpc_first)
