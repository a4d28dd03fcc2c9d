"""The engine that runs a model's program on the CPU: Paddle Inference, ONNX Runtime or OpenVINO,
chosen and configured by the runtime settings (`engine`, `precision`, `thread_num`, ...).
Services, in-process runs and tests all predict through `build_engine`.

Every engine has the same small interface: `input_names`, `output_names`, and `run(feed)`, which
takes {input name: array} and returns the outputs as a list in the model's output order (the
order the description's fetches name them in). A model folder holds the Paddle program and,
when an ONNX engine is asked for, the ONNX models the export writes beside it (ONNX_FILES).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from compat.openvino import EXACT_PRECISION
from compat.paddle2onnx import BATCH_ONE_OPS, run_per_image
from model.settings import Settings

ONNX_FILES = {"fp32": "inference.onnx", "int8": "inference_int8.onnx"}  # by precision


class Engine(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class EngineNotInstalled(RuntimeError):
    """The engine's Python package cannot be imported."""


def _require(module: str, engine: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EngineNotInstalled(
            f"engine {engine!r} needs the Python package {module!r}, which cannot be imported "
            f"({error}): `make install` installs the pinned version") from None


def program_files(model_dir: Path) -> tuple[Path, Path]:
    """(program, params): inference.json (PIR) or inference.pdmodel (legacy) + .pdiparams."""
    programs = sorted(model_dir.glob("*.json")) or sorted(model_dir.glob("*.pdmodel"))
    params = sorted(model_dir.glob("*.pdiparams"))
    if not programs or not params:
        raise FileNotFoundError(f"{model_dir}: no *.json/*.pdmodel + *.pdiparams model")
    return programs[0], params[0]


def onnx_file(model_dir: Path, precision: str) -> Path:
    path = model_dir / ONNX_FILES[precision]
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir}: no {path.name}, the {precision} ONNX model: export it with `python -m "
            f"export ... --onnx{' --int8' if precision == 'int8' else ''}` (`python -m serving "
            "start` and `make models` do so when the runtime settings ask for it)")
    return path


def is_pir_program(program: Path) -> bool:
    """paddle 3 (PIR) programs are *.json; legacy ones *.pdmodel."""
    return program.suffix == ".json"


def _memory_optim(settings: Settings, program: Path) -> bool:
    """mem_optim, `auto` resolved: PIR programs fail at predictor creation with the pass ("Not
    find predictor_id 0 and pass_name memory_optimize_pass"); legacy ones take it."""
    return settings.mem_optim if settings.mem_optim is not None else not is_pir_program(program)


class PaddleEngine:
    """Paddle Inference, FP32, with the ir_optim / use_mkldnn / mem_optim settings."""

    def __init__(self, model_dir: Path, settings: Settings):
        inference = _require("paddle.inference", "paddle")
        program, params = program_files(model_dir)
        config = inference.Config(str(program), str(params))
        config.disable_gpu()
        config.switch_ir_optim(settings.ir_optim)
        config.set_cpu_math_library_num_threads(settings.thread_num)
        if settings.use_mkldnn:
            config.enable_mkldnn()
        if _memory_optim(settings, program):
            config.enable_memory_optim()
        self._predictor = inference.create_predictor(config)
        self.input_names: list[str] = list(self._predictor.get_input_names())
        self.output_names: list[str] = list(self._predictor.get_output_names())

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for name in self.input_names:
            self._predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feed[name]))
        self._predictor.run()
        return [self._predictor.get_output_handle(name).copy_to_cpu()
                for name in self.output_names]


def _batched(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], batch_one: bool,
             feed: Mapping[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    """The graph's outputs for `feed` (its inputs `names`, float32), one image per call if the
    graph only handles one (compat.paddle2onnx)."""
    inputs = {name: np.ascontiguousarray(feed[name], dtype=np.float32) for name in names}
    return run_per_image(run, inputs) if batch_one else run(inputs)


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU provider on the exported ONNX model of the settings' precision.

    Constants, not settings (measured with the prototype's paired rounds, docs/benchmarks.md):
    graph optimisation level ALL (only it enables the NCHWc layout transformer; the lower levels
    ran peach 2.4-2.8x slower), sequential execution with `thread_num` intra-op threads, and no
    spinning of pool threads between calls (spinning threads take CPU from the other worker).
    """

    def __init__(self, model_dir: Path, settings: Settings):
        ort = _require("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.thread_num
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings name internal graph nodes
        path = onnx_file(model_dir, settings.precision)
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
        self.input_names = [port.name for port in self._session.get_inputs()]
        self.output_names = [port.name for port in self._session.get_outputs()]
        self._batch_one = bool(_onnx_op_types(path) & BATCH_ONE_OPS)

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _batched(lambda inputs: self._session.run(self.output_names, inputs),
                        self._batch_one, feed, self.input_names)


def _onnx_op_types(path: Path) -> set[str]:
    onnx = _require("onnx", "onnxruntime")
    graph = onnx.load(str(path), load_external_data=False).graph
    return {node.op_type for node in graph.node}


class OpenVinoEngine:
    """OpenVINO's CPU plugin on the exported ONNX model of the settings' precision (OpenVINO
    2026.4 cannot read paddle 3's PIR json programs; the ONNX serves both program kinds).

    Constants: LATENCY hint with one stream and `thread_num` threads (one request at a time,
    as a worker calls it), no CPU pinning (two workers share the cores), and FP32 kept FP32
    (compat.openvino).
    """

    def __init__(self, model_dir: Path, settings: Settings):
        ov = _require("openvino", "openvino")
        core = ov.Core()
        model = core.read_model(str(onnx_file(model_dir, settings.precision)))
        self._batch_one = any(op.get_type_name() in BATCH_ONE_OPS for op in model.get_ops())
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_NUM_THREADS": settings.thread_num, "ENABLE_CPU_PINNING": False,
                  **EXACT_PRECISION}
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self._compiled.inputs]
        self.output_names = [port.get_any_name() for port in self._compiled.outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return _batched(self._infer, self._batch_one, feed, self.input_names)

    def _infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(inputs)
        # copies: the request reuses its output buffers on the next call
        return [np.array(results[port]) for port in self._compiled.outputs]


ENGINES: dict[str, Callable[[Path, Settings], Engine]] = {
    "paddle": PaddleEngine, "onnxruntime": OnnxRuntimeEngine, "openvino": OpenVinoEngine}


def build_engine(model_dir: Path, settings: Settings) -> Engine:
    """The engine the settings name (model.settings.ENGINES), loaded from model_dir."""
    return ENGINES[settings.engine](model_dir, settings)
