"""OpenVINO 2026.4 settings the project's callers pass, each with its root cause. Tests:
tests/test_compat_paddle2onnx.py (OpenVINO runs the exported ONNX models)."""

from __future__ import annotations

# --- 1. "FP32" runs as BF16 on CPUs with AVX512_BF16 or AMX ---------------------------------------
# The CPU plugin's default inference precision is bf16 wherever the CPU has bf16 instructions
# (ov::hint::inference_precision, documented for the CPU device), so an FP32 model computes in
# bfloat16 with no message: on such a host the peach probabilities moved by up to 0.1 against
# Paddle Inference. Compiling with the hint set to f32 keeps FP32 models in FP32 on every host;
# INT8 (QDQ) models keep their integer kernels with it.
EXACT_PRECISION = {"INFERENCE_PRECISION_HINT": "f32"}
