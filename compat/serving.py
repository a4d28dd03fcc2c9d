"""Fixes for paddle-serving-server 0.9.0 / paddle-serving-app 0.9.0 (released 2022, Python <= 3.9).

Each fix names the upstream file:line it works around. Tests: tests/test_compat.py.
"""

from __future__ import annotations

import ast
import builtins
import glob
import importlib.abc
import importlib.util
import os
import sys
import types
from pathlib import Path

from compat import hooks

# --- 1. Generated protobuf modules from protoc 3 -------------------------------------------------
# paddle_serving_*/**/*_pb2.py build descriptors by hand (`_descriptor.FileDescriptor(...)`),
# which protobuf >= 4 (upb) refuses: "Descriptors cannot be created directly". Each module embeds
# its serialized FileDescriptorProto (`serialized_pb=`), so we rebuild the module from those bytes
# with the modern builder, as current protoc output does. This keeps the fast C implementation
# (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python would slow every message of the process).


def _is_legacy_serving_pb2(fullname: str) -> bool:
    return fullname.startswith(("paddle_serving_server.", "paddle_serving_app.")) and (
        fullname.endswith("_pb2")
    )


def _serialized_descriptor(tree: ast.Module) -> bytes:
    """The `serialized_pb=` bytes of the module's FileDescriptor(...) call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = node.value
            if isinstance(value, ast.Call):  # _b('...') == '...'.encode('latin1') on Python 3
                value = value.args[0]
            literal = ast.literal_eval(value)
            return literal if isinstance(literal, bytes) else literal.encode("latin1")
    raise ImportError("no serialized_pb in generated protobuf module")


def _dependency_imports(tree: ast.Module) -> ast.Module:
    """The module's own imports of other *_pb2 modules (its proto dependencies)."""
    imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and "google.protobuf" not in ast.unparse(node)
        and "_pb2" in ast.unparse(node)
    ]
    return ast.Module(body=imports, type_ignores=[])


class _RebuiltPb2Loader(importlib.abc.Loader):
    def __init__(self, fullname: str, origin: str):
        self._origin = origin

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        from google.protobuf import descriptor_pool
        from google.protobuf.internal import builder

        tree = ast.parse(Path(self._origin).read_text(encoding="utf-8"))
        namespace = module.__dict__
        exec(compile(_dependency_imports(tree), self._origin, "exec"), namespace)
        file_descriptor = descriptor_pool.Default().AddSerializedFile(_serialized_descriptor(tree))
        builder.BuildMessageAndEnumDescriptors(file_descriptor, namespace)
        builder.BuildTopDescriptorsAndMessages(file_descriptor, module.__name__, namespace)


# --- 2. paddle_serving_client has no wheel for Python 3.11 ---------------------------------------
# pipeline/operator.py:19 and web_service.py:21 import `Client` at module top; with
# client_type local_predictor it only appears in an isinstance check (operator.py:137). PyPI's
# 0.2.1 fallback bundles libpython3.6m.so and must never be installed, so an importable stand-in
# is provided when (and only when) the real package is absent.


class _UnavailableClient:
    """Stand-in for paddle_serving_client.Client: only local_predictor ops are supported."""

    def __init__(self, *args: object, **kwargs: object):
        raise RuntimeError(
            "paddle_serving_client is not installable on Python 3.11; "
            "use client_type: local_predictor in config.yml"
        )


def _provide_serving_client_stand_in() -> None:
    if "paddle_serving_client" in sys.modules or importlib.util.find_spec("paddle_serving_client"):
        return
    stand_in = types.ModuleType("paddle_serving_client")
    stand_in.Client = _UnavailableClient  # type: ignore[attr-defined]
    stand_in.__doc__ = "compat stand-in: the real package has no Python 3.11 wheel"
    sys.modules["paddle_serving_client"] = stand_in
    hooks.applied.append("paddle_serving_client:stand_in")


# --- 3. `from numpy import *` shadows builtins ---------------------------------------------------
# pipeline/operator.py:28 and pipeline/pipeline_client.py:19 star-import numpy; under numpy 2
# that rebinds max, min, round, abs, bool, ... so `max(1, retry)` (operator.py:102) becomes
# np.max(1, axis=retry) and raises AxisError. Drop every numpy name that shadows a builtin.


def unshadow_builtins(module: types.ModuleType) -> None:
    for name in dir(builtins):
        value = module.__dict__.get(name)
        if value is not None and getattr(value, "__module__", "").startswith("numpy"):
            del module.__dict__[name]


for _name in ("paddle_serving_server.pipeline.operator",
              "paddle_serving_server.pipeline.pipeline_client"):
    hooks.after_import(_name)(unshadow_builtins)


# --- 4. LocalPredictor cannot find paddle 3 (PIR) models -----------------------------------------
# paddle_serving_app/local_predict.py:135-155 looks only for `__model__` or `*.pdmodel`; paddle 3
# saves `inference.json` + `inference.pdiparams` by default, and paddle_infer.Config accepts the
# .json program file in place of .pdmodel. Teach the lookup that a .json program counts.


def _find_program_files(model_path: str, pattern: str) -> list[str]:
    found = sorted(glob.glob(os.path.join(model_path, pattern)))
    if not found and pattern == "*.pdmodel":
        found = sorted(glob.glob(os.path.join(model_path, "*.json")))
    return found


@hooks.after_import("paddle_serving_app.local_predict")
def accept_pir_program_files(module: types.ModuleType) -> None:
    module.LocalPredictor.search_suffix_files = staticmethod(_find_program_files)


def install() -> None:
    hooks.replace_loader(_is_legacy_serving_pb2, _RebuiltPb2Loader)
    _provide_serving_client_stand_in()
