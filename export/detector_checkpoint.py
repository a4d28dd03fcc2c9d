"""PaddleDetection training checkpoint (config YAML + dygraph .pdparams) -> Paddle inference model.

Runs PaddleDetection's own export (ppdet.engine.Trainer.export: dy2static, infer_cfg.yml with the
Preprocess list and label_list) and renames its files to the project's inference.* stems.

The program is saved in the legacy format (inference.pdmodel, paddle's old IR): with
paddle.inference 3.3.1 a PIR YOLOv3 program segfaults at predictor creation once oneDNN is on,
while the legacy program runs with oneDNN, several times faster than without it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import paddle
from ppdet.core.workspace import load_config
from ppdet.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILENAME = "inference"
INFER_CONFIG = "infer_cfg.yml"


def export_inference_model(config: Path, weights: Path | None, out_dir: Path) -> Path:
    """Writes out_dir/inference.pdmodel + inference.pdiparams + infer_cfg.yml; returns out_dir.

    weights None keeps the random initialisation (interface tests of the stock architecture).
    """
    cfg = load_config(str(config))
    cfg["use_gpu"] = False
    label_list = Path(cfg["TestDataset"]["anno_path"])
    cfg["TestDataset"]["anno_path"] = str(label_list if label_list.is_absolute()
                                          else ROOT / label_list)
    paddle.set_device("cpu")
    trainer = Trainer(cfg, mode="test")
    if weights is not None:
        trainer.load_weights(str(weights))
    with tempfile.TemporaryDirectory() as tmp, paddle.pir_utils.OldIrGuard():
        trainer.export(output_dir=tmp)
        exported = Path(tmp) / Path(cfg["filename"]).stem
        out_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (".pdmodel", ".pdiparams"):
            shutil.move(exported / f"model{suffix}", out_dir / f"{MODEL_FILENAME}{suffix}")
        shutil.move(exported / INFER_CONFIG, out_dir / INFER_CONFIG)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.detector_checkpoint",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="PaddleDetection YAML the checkpoint was "
                                                  "trained with")
    parser.add_argument("--weights", type=Path, help=".pdparams (default: random init)")
    parser.add_argument("--out", type=Path, required=True, help="inference model folder")
    args = parser.parse_args(argv)
    print(export_inference_model(args.config, args.weights, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
