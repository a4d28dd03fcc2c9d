"""PaddleClas-style training checkpoint (config YAML + dygraph .pdparams) -> Paddle inference model.

What PaddleClas's tools/export_model.py does, for the wheel that ships only the architectures:
build the Arch from the config, load the weights, fuse the Rep branches (re_parameterize), append
softmax (so the served output is class probabilities [N, class_num]) and save a static program.

The program is saved in the PIR format (inference.json + inference.pdiparams): with
paddle.inference 3.3.1, ir_optim and oneDNN it ran several times faster than the legacy
inference.pdmodel (FLAGS_enable_pir_api=0, which also needs sigmoid/multiply routed through the old
op builder; docs/models.md), and it needs no export workaround.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paddle
import yaml

MODEL_FILENAME = "inference"  # PaddleClas's file stem: inference.json/.pdmodel + .pdiparams


def load_config(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    for key in ("Global", "Arch"):
        if key not in config:
            raise ValueError(f"{path}: missing section {key!r} (PaddleClas config layout)")
    return config


def build_classifier(config: dict[str, Any]) -> paddle.nn.Layer:
    """The PaddleClas architecture named by config['Arch'] (random init, no pretrained download)."""
    from paddleclas.ppcls.arch import build_model

    arch = dict(config["Arch"])
    if arch.get("pretrained"):
        raise ValueError("Arch.pretrained must be false: this project never downloads weights")
    return build_model({"Arch": arch}, mode="eval")


def inference_network(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """Eval-mode model with Rep branches fused and softmax appended, as PaddleClas exports it."""
    model.eval()
    for layer in model.sublayers():
        if hasattr(layer, "re_parameterize"):
            layer.re_parameterize()
    return paddle.nn.Sequential(model, paddle.nn.Softmax(axis=-1))


def export_inference_model(config: Path, weights: Path | None, out_dir: Path) -> Path:
    """Writes out_dir/inference.json + inference.pdiparams; returns out_dir.

    weights None keeps the random initialisation (interface tests of the stock architecture).
    """
    settings = load_config(config)
    model = build_classifier(settings)
    if weights is not None:
        model.set_state_dict(paddle.load(str(weights)))
    network = inference_network(model)
    input_spec = [paddle.static.InputSpec([None, *settings["Global"]["image_shape"]],
                                          "float32", name="x")]
    static = paddle.jit.to_static(network, input_spec=input_spec, full_graph=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.jit.save(static, str(out_dir / MODEL_FILENAME))
    return out_dir
