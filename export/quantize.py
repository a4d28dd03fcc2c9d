"""INT8 post-training static quantisation of the exported ONNX model (inference_int8.onnx), with
ONNX Runtime's tools: QDQ format (QuantizeLinear/DequantizeLinear around the quantised ops, which
ONNX Runtime and OpenVINO both run with integer kernels), u8 activations, s8 weights.

The choices are constants, measured on the shipped models (docs/benchmarks.md, "INT8"):
- Only Conv, Gemm and MatMul are quantised: a detector's box decoding and NMS stay float.
- Weights per output channel, and 7-bit (reduce_range): x86 INT8 kernels without VNNI (AVX2)
  multiply u8 by s8 with vpmaddubsw, whose pairwise int16 sums saturate; with 7-bit weights no
  pair can, and the model computes the same numbers on AVX2 and VNNI hosts.
- Calibration: the 99.999th percentile of each activation over CALIBRATION_IMAGES generated
  training images (the description's `calibration:`), preprocessed by the model contract as the
  service does. Percentile ranges ignore rare outliers; min-max ranges widen with every
  outlier, and lost up to 0.05 mAP@0.5 on the detector.
- The ends stay float: the compute ops the input reaches first (the stem convolution, which
  sees raw normalised pixels) and those after which no other compute op follows (a classifier's
  last layer, a detector's output convolutions, whose outputs are scores and box offsets).
  Quantising them too cost the classifier 1.5 points of validation top-1 (0.960 against
  0.975); kept float, both models stay within 1 point of top-1 and 0.01 mAP@0.5 of FP32
  (docs/benchmarks.md, "Engines and precisions").
- BatchNormalization is folded into the Conv before it first (ORT's quant_pre_process), so the
  folded weights are what gets quantised.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("export")

CALIBRATION_IMAGES = 100
QUANTISED_OPS = ("Conv", "Gemm", "MatMul")


class FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._next: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)


def quantize_int8(fp32: Path, target: Path, feeds: Sequence[dict[str, np.ndarray]]) -> Path:
    """fp32 (ONNX) -> target (INT8 QDQ ONNX), calibrated on `feeds` (one image each)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        # symbolic shape inference needs sympy (not installed); the shapes here are static
        quant_pre_process(str(fp32), str(folded), skip_symbolic_shape=True)
        quantize_static(
            str(folded), str(target), FeedReader(feeds), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=True, reduce_range=True, op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=end_compute_nodes(folded),
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    log.info("wrote %s (INT8 QDQ, %d calibration images, %.1f MB)", target, len(feeds),
             target.stat().st_size / 1e6)
    return target


def end_compute_nodes(model_path: Path) -> list[str]:
    """Names of the compute nodes the graph's inputs reach first and of those from which no
    other compute node is reachable."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def compute_after(values: list[str]) -> list[onnx.NodeProto]:
        """The first compute nodes on every path from `values`."""
        found, seen, pending = [], set(), list(values)
        while pending:
            for node in consumers.get(pending.pop(), []):
                if node.name not in seen:
                    seen.add(node.name)
                    if node.op_type in QUANTISED_OPS:
                        found.append(node)
                    else:
                        pending.extend(node.output)
        return found

    first = compute_after([value.name for value in graph.input])
    last = [node for node in graph.node
            if node.op_type in QUANTISED_OPS and not compute_after(list(node.output))]
    names = sorted({node.name for node in first + last})
    log.info("  kept float: %s", ", ".join(names))
    return names
