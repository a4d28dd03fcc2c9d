"""Fixes for paddle2onnx 2.1.0 on paddlepaddle 3.3, each with its root cause. Tests:
tests/test_compat_paddle2onnx.py.

1 and 2 wrap `paddle2onnx.export` (an import hook on paddle2onnx.convert, so any script of the
venv converts correctly); 3 is a function the engines call (model/engine.py).
"""

from __future__ import annotations

import functools
import json
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from compat import hooks

if TYPE_CHECKING:  # numpy is imported where it is used: this module loads in every process
    import numpy as np

# --- 1. Attributes paddle 3 stores as double, read by paddle2onnx as float -----------------------
# paddle2onnx's PIR parser reads some attributes as float or std::vector<float>
# (PaddlePirParser::GetOpAttr), while paddle 3 declares them double (pd_op.h: LeakyReluOp
# negative_slope; NearestInterpOp / BilinearInterpOp `const std::vector<double>& scale`), so the
# PIR json holds "0.a_f64" values, whether the program was saved under PIR or translated from a
# legacy .pdmodel:
# - vector<float>: the parser enforces float elements and fails with "the 0th elementwise MUST
#   be ir::FloatAttribute" (parser/pir_parser.cc:814): YOLOv3's upsampling;
# - float: the parser assigns the value only if it is a FloatAttribute and otherwise leaves the
#   mapper's member unset: the ONNX LeakyRelu gets leftover bits as its alpha (2.5e-43, 1.0e-26
#   seen) instead of 0.1, silently.
# The wrapper stores those attributes as float32: the value Paddle's own CPU kernels compute with,
# since they take them as float (phi LeakyReluKernel `float alpha`, the interpolate kernels
# `const std::vector<float>& scale`). A legacy program is translated to PIR first (what
# paddle2onnx.export itself does), so the rewrite applies to it too.
FLOAT_ATTRIBUTES = {"1.leaky_relu": "negative_slope", "1.nearest_interp": "scale",
                    "1.bilinear_interp": "scale"}  # PIR op id -> attribute read as float


def float_attributes(program: Path, patched: Path) -> Path:
    """`program` (PIR json) with FLOAT_ATTRIBUTES stored as float, written to `patched`;
    `program` itself when none is stored as double."""
    document = json.loads(program.read_text(encoding="utf-8"))
    changed = 0
    for region in document["program"]["regions"]:
        for block in region["blocks"]:
            for op in block["ops"]:
                name = FLOAT_ATTRIBUTES.get(op.get("#"))
                for attribute in op.get("A", []) if name else ():
                    if attribute.get("N") == name:
                        changed += _doubles_to_floats(attribute["AT"])
    if not changed:
        return program
    patched.write_text(json.dumps(document), encoding="utf-8")
    return patched


def _doubles_to_floats(attribute: dict[str, Any]) -> int:
    """A scalar ("0.a_f64") or an array of them ("0.a_array") -> float; the count changed."""
    if attribute.get("#") == "0.a_array":
        return sum(_doubles_to_floats(element) for element in attribute.get("D", []))
    if attribute.get("#") != "0.a_f64":
        return 0
    attribute["#"] = "0.a_f32"
    attribute["D"] = struct.unpack("f", struct.pack("f", float(attribute["D"])))[0]
    return 1


def translate_to_pir(pdmodel: Path, prefix: Path) -> tuple[Path, Path]:
    """Legacy .pdmodel + .pdiparams -> PIR prefix.json + prefix.pdiparams, as paddle2onnx.export
    translates them (paddle2onnx/convert.py)."""
    import paddle
    from paddle2onnx.convert import load_parameter, save_program

    executor = paddle.static.Executor(paddle.CPUPlace())
    with paddle.pir_utils.OldIrGuard():
        legacy, _, _ = paddle.static.load_inference_model(str(pdmodel.with_suffix("")), executor)
    program = paddle.pir.translate_to_pir(legacy.desc)
    load_parameter(program)  # the translated parameters take their values from the scope
    save_program(program, str(prefix))
    return prefix.with_suffix(".json"), prefix.with_suffix(".pdiparams")


# --- 2. The default optimizer installs packages ---------------------------------------------------
# export(optimize_tool="polygraphy"), the default, sets POLYGRAPHY_AUTOINSTALL_DEPS=1 in the
# process environment (paddle2onnx/convert.py, the polygraphy branch), and polygraphy then
# pip-installs onnxruntime, onnx_graphsurgeon and sympy into the running interpreter: an export
# would change the venv. The wrapper's default is no optimizer: the converter's output is written
# as it is (ONNX Runtime and OpenVINO fold constants themselves when they load a model).


def export_without_surprises(convert: ModuleType) -> None:
    original = convert.export

    @functools.wraps(original)
    def export(model_filename: str, params_filename: str, save_file: str | None = None,
               *args: Any, optimize_tool: str | None = None, **kwargs: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="paddle2onnx-") as tmp:
            program, params = Path(model_filename), Path(params_filename)
            if program.suffix == ".pdmodel" and params.is_file():
                program, params = translate_to_pir(program, Path(tmp) / "translated")
            program = float_attributes(program, Path(tmp) / "patched.json")
            return original(str(program), str(params), save_file, *args,
                            optimize_tool=optimize_tool, **kwargs)

    convert.export = export


# --- 3. The NMS subgraph handles one image --------------------------------------------------
# multiclass_nms3 becomes ONNX NonMaxSuppression plus a keep_top_k subgraph that treats the scores
# as [1*C*M] and counts every kept row as the first image's (mapper/detection/multiclass_nms.cc,
# NMSMapper::KeepTopK: "the batch will be regarded as 1"). With 4 images per call ONNX Runtime
# fails ("Concat ... Non concat axis dimensions must match: 4 and 1") and OpenVINO returns a
# negative box count and no boxes. A graph holding NonMaxSuppression is therefore run one image
# at a time and the outputs joined: what Paddle's batched multiclass_nms3 returns, since images
# are independent.
BATCH_ONE_OPS = frozenset({"NonMaxSuppression"})


def run_per_image(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                  feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of a batch-1-only graph over a batch: rows and counts concatenated in order."""
    import numpy as np

    count = len(next(iter(feed.values())))
    if count == 1:
        return run(dict(feed))
    parts = [run({name: value[index:index + 1] for name, value in feed.items()})
             for index in range(count)]
    return [np.concatenate([part[position] for part in parts])
            for position in range(len(parts[0]))]


def install() -> None:
    hooks.after_import("paddle2onnx.convert")(export_without_surprises)

