"""Paddle inference program -> ONNX (inference.onnx), with paddle2onnx 2.1.0.

PIR (.json) and legacy (.pdmodel) programs both convert; compat.paddle2onnx repairs the
converter's attribute reading and keeps its optimizer from installing packages. A detector keeps
yolo_box decoding and multiclass_nms3 inside the graph (ONNX NonMaxSuppression + TopK at opset
13), so its outputs are the Paddle program's, rows and counts, in the same order, and the same
postprocessing serves both; that NMS subgraph handles one image per call, so the ONNX engines
run such a graph image by image (model/engine.py). The ONNX inputs keep the Paddle input names;
engines feed them by name.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from export.errors import ExportError
from export.model_io import InferenceModel

log = logging.getLogger("export")

OPSET = 13  # NonMaxSuppression needs >= 10; 13 is the opset paddle2onnx 2.1.0 is tested at
# paddle2onnx ends its process on a failed conversion (sys.exit, or a C++ abort for an operator
# it cannot convert), so it converts in a child interpreter of its own.
CONVERT = """
import sys, paddle2onnx
program, params, target, opset = sys.argv[1:]
paddle2onnx.export(program, params, save_file=target, opset_version=int(opset),
                   auto_upgrade_opset=True, enable_onnx_checker=True)
"""


def export_onnx(model: InferenceModel, target: Path) -> Path:
    """Writes the program's ONNX translation to `target`, checked by the ONNX checker."""
    import onnx

    target.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-c", CONVERT, str(model.program), str(model.params),
                           str(target), str(OPSET)], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.is_file():
        output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                           if "ERROR" in line or "Error" in line or "unsupported" in line)
        raise ExportError(f"paddle2onnx cannot convert {model.program} (exit {done.returncode})"
                          f":\n{output[-3000:]}")
    converted = onnx.load(str(target))
    onnx.checker.check_model(converted, full_check=True)
    log.info("wrote %s (ONNX opset %d, %.1f MB)", target, converted.opset_import[0].version,
             target.stat().st_size / 1e6)
    return target
