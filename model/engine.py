"""The engine that runs a model's program: Paddle Inference on the CPU, configured from the
runtime settings. Services, in-process runs and tests all predict through it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from model.settings import Settings


def program_files(model_dir: Path) -> tuple[Path, Path]:
    """(program, params): inference.json (PIR) or inference.pdmodel (legacy) + .pdiparams."""
    programs = sorted(model_dir.glob("*.json")) or sorted(model_dir.glob("*.pdmodel"))
    params = sorted(model_dir.glob("*.pdiparams"))
    if not programs or not params:
        raise FileNotFoundError(f"{model_dir}: no *.json/*.pdmodel + *.pdiparams model")
    return programs[0], params[0]


def is_pir_program(program: Path) -> bool:
    """paddle 3 (PIR) programs are *.json; legacy ones *.pdmodel."""
    return program.suffix == ".json"


def _memory_optim(settings: Settings, program: Path) -> bool:
    """mem_optim, `auto` resolved: PIR programs fail at predictor creation with the pass ("Not
    find predictor_id 0 and pass_name memory_optimize_pass"); legacy ones take it."""
    return settings.mem_optim if settings.mem_optim is not None else not is_pir_program(program)


class PaddleEngine:
    """feed {input name: array} -> the model's outputs, in the program's output order."""

    def __init__(self, model_dir: Path, settings: Settings):
        from paddle import inference

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
