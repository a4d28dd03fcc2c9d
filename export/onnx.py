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
from pathlib import Path

from export.errors import ExportError
from export.model_io import InferenceModel

log = logging.getLogger("export")

OPSET = 13  # NonMaxSuppression needs >= 10; 13 is the opset paddle2onnx 2.1.0 is tested at


def export_onnx(model: InferenceModel, target: Path) -> Path:
    """Writes the program's ONNX translation to `target`, checked by the ONNX checker."""
    import onnx
    import paddle2onnx

    target.unlink(missing_ok=True)
    try:
        paddle2onnx.export(str(model.program), str(model.params), save_file=str(target),
                           opset_version=OPSET, auto_upgrade_opset=True,
                           enable_onnx_checker=True)
    except SystemExit as error:  # paddle2onnx logs the converter's error, then calls sys.exit
        raise ExportError(f"paddle2onnx cannot convert {model.program}: see the error it "
                          "logged above") from error
    if not target.is_file():
        raise ExportError(f"paddle2onnx wrote no {target}")
    converted = onnx.load(str(target))
    onnx.checker.check_model(converted, full_check=True)
    log.info("wrote %s (ONNX opset %d, %.1f MB)", target, converted.opset_import[0].version,
             target.stat().st_size / 1e6)
    return target
