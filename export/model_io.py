"""Find a Paddle inference model on disk and read its interface (feeds, fetches) from the program.

Names, dtypes, shapes and order come from the saved program itself: legacy `.pdmodel` programs are
read under paddle's old-IR guard, paddle 3 `.json` (PIR) programs with PIR on. The predictor's
tensor handles are no help here: before a run they report shape [0] and a float32 type for every
output (an int32 box count included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import ExportError

if TYPE_CHECKING:  # paddle is imported lazily: the CLI sets its environment first
    from paddle.base.framework import Program, Variable
    from paddle.pir import Program as PirProgram

PROGRAM_SUFFIXES = (".pdmodel", ".json")
PARAMS_SUFFIX = ".pdiparams"
DETECTOR_INFER_CONFIG = "infer_cfg.yml"  # PaddleDetection's export writes it; serving replays it


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy-style name: "float32", "int32", ...
    shape: tuple[int, ...]  # full shape, batch dimension first (-1 when dynamic)
    lod_level: int = 0


@dataclass(frozen=True)
class ModelInterface:
    feeds: tuple[TensorSpec, ...]
    fetches: tuple[TensorSpec, ...]  # in the model's output order


@dataclass(frozen=True)
class InferenceModel:
    program: Path
    params: Path
    extras: tuple[Path, ...]  # files served beside the model (infer_cfg.yml)

    @property
    def is_pir(self) -> bool:
        return self.program.suffix == ".json"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.program, self.params, *self.extras)


def _single(found: list[Path], what: str, folder: Path) -> Path:
    if len(found) != 1:
        listing = ", ".join(p.name for p in sorted(folder.iterdir())) or "nothing"
        raise ExportError(
            f"{folder}: expected exactly one {what}, found {len(found)} (folder holds: {listing}); "
            "pass the folder that PaddleClas/PaddleDetection tools/export_model.py wrote"
        )
    return found[0]


def find_inference_model(folder: Path) -> InferenceModel:
    """The program + params pair (and infer_cfg.yml if any) of an exported inference folder."""
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    programs = sorted(p for p in folder.iterdir() if p.suffix in PROGRAM_SUFFIXES and p.is_file())
    program = _single(programs, "program file (*.pdmodel or *.json)", folder)
    params = folder / (program.stem + PARAMS_SUFFIX)
    if not params.is_file():
        raise ExportError(f"{folder}: {program.name} has no {params.name} beside it")
    extras = tuple(p for p in [folder / DETECTOR_INFER_CONFIG] if p.is_file())
    return InferenceModel(program=program, params=params, extras=extras)


def _pir_interface(program: PirProgram) -> ModelInterface:
    from paddle.base.data_feeder import convert_dtype

    feeds, fetches = [], []
    for op in program.global_block().ops:
        if op.name() == "pd_op.data":
            value = op.result(0)
            feeds.append(TensorSpec(op.attrs()["name"], convert_dtype(value.dtype),
                                    tuple(value.shape)))
        elif op.name() == "pd_op.fetch":
            value = op.operand_source(0)
            fetches.append((op.attrs()["col"], TensorSpec(
                op.attrs()["name"], convert_dtype(value.dtype), tuple(value.shape))))
    return ModelInterface(tuple(feeds), tuple(spec for _, spec in sorted(fetches)))


def _legacy_interface(
    program: Program, feed_names: list[str], fetch_vars: list[Variable]
) -> ModelInterface:
    from paddle.base.data_feeder import convert_dtype

    def spec(var: Variable) -> TensorSpec:
        return TensorSpec(var.name, convert_dtype(var.dtype), tuple(var.shape), var.lod_level)

    block = program.global_block()
    return ModelInterface(
        tuple(spec(block.var(name)) for name in feed_names), tuple(spec(v) for v in fetch_vars)
    )


def read_interface(model: InferenceModel) -> ModelInterface:
    """Feeds and fetches of the saved program (no predictor is created, no weights are run)."""
    import paddle
    from paddle.pir_utils import IrGuard, OldIrGuard

    prefix = str(model.program.with_suffix(""))
    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        executor = paddle.static.Executor(paddle.CPUPlace())
        with (IrGuard if model.is_pir else OldIrGuard)():
            program, feed_names, fetch_vars = paddle.static.load_inference_model(prefix, executor)
            if model.is_pir:
                return _pir_interface(program)
            return _legacy_interface(program, feed_names, fetch_vars)
    except (RuntimeError, ValueError) as error:
        raise ExportError(f"{model.program}: paddle cannot load this program: {error}") from error
    finally:
        if was_dynamic:
            paddle.disable_static()
