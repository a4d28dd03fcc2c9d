"""The served model, run in this process with Paddle Inference and the service's runtime settings:
the reference the parity test compares the HTTP and RPC answers with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from serving.config import Runtime


def program_files(serving_server: Path) -> tuple[Path, Path]:
    """(program, params): inference.json (PIR) or inference.pdmodel (legacy) + .pdiparams."""
    programs = sorted(serving_server.glob("*.json")) or sorted(serving_server.glob("*.pdmodel"))
    params = sorted(serving_server.glob("*.pdiparams"))
    if not programs or not params:
        raise FileNotFoundError(f"{serving_server}: no *.json/*.pdmodel + *.pdiparams model")
    return programs[0], params[0]


class InProcessPredictor:
    """feed {input name: array} -> {fetch alias: array}, outputs matched to aliases by order (as
    LocalPredictor does when no alias equals a real output name)."""

    def __init__(self, serving_server: Path, fetches: Sequence[str], runtime: Runtime):
        from paddle import inference

        program, params = program_files(serving_server)
        config = inference.Config(str(program), str(params))
        config.disable_gpu()
        config.switch_ir_optim(runtime.ir_optim)
        config.set_cpu_math_library_num_threads(runtime.thread_num)
        if runtime.use_mkldnn:
            config.enable_mkldnn()
        if runtime.mem_optim:
            config.enable_memory_optim()
        self._predictor = inference.create_predictor(config)
        self._fetches = list(fetches)

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._predictor.get_input_names():
            self._predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feed[name]))
        self._predictor.run()
        outputs = [self._predictor.get_output_handle(name).copy_to_cpu()
                   for name in self._predictor.get_output_names()]
        return dict(zip(self._fetches, outputs, strict=False))
