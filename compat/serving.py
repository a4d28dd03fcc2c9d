"""Fixes for paddle-serving-server 0.9.0 / paddle-serving-app 0.9.0 (released 2022, Python <= 3.9).

Each fix names the upstream file:line it works around. Tests: tests/test_compat.py.
"""

from __future__ import annotations

import ast
import builtins
import copy
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import logging.config
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


# --- 5. PipelineClient.predict prints two timestamp lines per call -------------------------------
# pipeline/pipeline_client.py:196 and :201 call print() on every predict, so a client's stdout
# (e.g. `--json` output) gets "PipelineClient::predict ... time:" noise. Route the module's print
# to its logger at DEBUG level instead.

_client_log = logging.getLogger("paddle_serving_server.pipeline.pipeline_client")


def _print_to_debug_log(*args: object, sep: str | None = " ", **_: object) -> None:
    _client_log.debug((sep if sep is not None else " ").join(str(arg) for arg in args))


@hooks.after_import("paddle_serving_server.pipeline.pipeline_client")
def silence_client_prints(module: types.ModuleType) -> None:
    module.print = _print_to_debug_log  # type: ignore[attr-defined]  # shadows builtins.print


# --- 6. The pipeline's gRPC server listens on every interface ------------------------------------
# pipeline/pipeline_server.py:316 binds '[::]:<rpc_port>'. The HTTP gateway reaches it through
# loopback, so the RPC port only needs to be public when RPC clients run elsewhere: bind it to
# $SERVING_RPC_HOST (default 127.0.0.1; "[::]" restores upstream behaviour).

RPC_HOST_ENV = "SERVING_RPC_HOST"


class _HostBoundServer:
    """Wraps a grpc.Server so the wildcard bind goes to the configured host."""

    def __init__(self, server: object):
        self._server = server

    def add_insecure_port(self, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{os.environ.get(RPC_HOST_ENV, '127.0.0.1')}:{address[len('[::]:'):]}"
        return self._server.add_insecure_port(address)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._server, name)


class _GrpcWithHostBinding(types.ModuleType):
    def __init__(self, grpc_module: types.ModuleType):
        super().__init__(grpc_module.__name__)
        self._grpc = grpc_module

    def server(self, *args: object, **kwargs: object) -> _HostBoundServer:
        return _HostBoundServer(self._grpc.server(*args, **kwargs))

    def __getattr__(self, name: str) -> object:
        return getattr(self._grpc, name)


@hooks.after_import("paddle_serving_server.pipeline.pipeline_server")
def bind_rpc_to_configured_host(module: types.ModuleType) -> None:
    module.grpc = _GrpcWithHostBinding(module.grpc)  # type: ignore[attr-defined]


# --- 7. Importing the pipeline takes over the process's logging ----------------------------------
# pipeline/logger.py:85 runs logging.config.dictConfig at import (pipeline/__init__.py:14 imports
# it first): that closes and replaces the ROOT handlers and disables every logger that already
# exists (disable_existing_loggers defaults to true), so the importing program loses its own logs.
# Build that module with dictConfig applying the same handlers to Paddle Serving's own loggers
# only; its files (PipelineServingLogs/pipeline.log*, honouring SERVING_LOG_PATH) stay as they are.

_SERVING_LOGGERS = ("paddle_serving_server", "paddle_serving_app", "LocalPredictor")


def scope_logging_config(config: dict) -> dict:
    """Upstream's logging config with its root section moved onto Paddle Serving's loggers."""
    scoped = copy.deepcopy(config)
    scoped["disable_existing_loggers"] = False
    root = scoped.pop("root", {})
    # WARNING, not upstream's DEBUG: the pipeline writes and flushes 3 INFO lines per request
    # ("RequestOp unpack one request", "prometheus inf count +1", "Succ predict": operator.py,
    # dag.py) and more DEBUG ones, all on the request's path. Warnings and errors still reach
    # pipeline.log / pipeline.log.wf; the service's own log says what it does.
    serving_logger = {**root, "level": "WARNING", "propagate": False}
    scoped.setdefault("loggers", {}).update({name: serving_logger for name in _SERVING_LOGGERS})
    return scoped


class _ScopedLoggingLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: types.ModuleType) -> None:
        apply_config = logging.config.dictConfig
        logging.config.dictConfig = lambda config: apply_config(scope_logging_config(config))
        try:
            super().exec_module(module)
        finally:
            logging.config.dictConfig = apply_config


def install() -> None:
    hooks.replace_loader(_is_legacy_serving_pb2, _RebuiltPb2Loader)
    hooks.replace_loader(lambda name: name == "paddle_serving_server.pipeline.logger",
                         _ScopedLoggingLoader)
    _provide_serving_client_stand_in()
