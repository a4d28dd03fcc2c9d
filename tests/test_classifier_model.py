"""Peach classifier: `make train` keeps working, export is faithful, the shipped model is good."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.inference as paddle_infer
import pytest
import yaml

from export.classifier_checkpoint import build_classifier, load_config
from serving.preprocess import Preprocessor
from train import classifier
from train.peach_data import LABELS, generate_samples

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models/peach"


def serving_preprocessor() -> Preprocessor:
    return Preprocessor(yaml.safe_load((MODEL_DIR / "model.yml").read_text())["preprocess"])


def predict(folder: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from paddle.inference, configured as the service runs it (oneDNN, ir_optim)."""
    program = next(p for p in folder.iterdir() if p.suffix in (".json", ".pdmodel"))
    config = paddle_infer.Config(str(program), str(folder / "inference.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.switch_ir_optim(True)
    config.enable_mkldnn()
    config.disable_glog_info()
    predictor = paddle_infer.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(images)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def test_help_works_from_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "train.classifier", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--data-dir" in done.stdout and "--export-to" in done.stdout


@pytest.mark.slow
def test_short_training_exports_a_model_that_matches_the_dygraph_one(tmp_path: Path) -> None:
    export_to = tmp_path / "model/inference"
    status = classifier.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                              "--train-images", "8", "--val-images", "8", "--iters", "2",
                              "--batch-size", "4", "--export-to", str(export_to)])
    assert status == 0
    assert (tmp_path / "model/metrics.json").is_file()

    val_dir = tmp_path / "data/val"
    images = np.stack([serving_preprocessor()(p.read_bytes()).image
                       for p in sorted(val_dir.rglob("*.jpg"))[:4]])
    model = build_classifier(load_config(classifier.DEFAULT_CONFIG))
    model.set_state_dict(paddle.load(str(tmp_path / "out" / classifier.BEST_WEIGHTS)))
    model.eval()  # the trained dygraph model as it is, Rep branches not fused
    with paddle.no_grad():
        expected = paddle.nn.functional.softmax(model(paddle.to_tensor(images))).numpy()
    exported = predict(export_to, images)
    assert exported.shape == (4, len(LABELS))
    np.testing.assert_allclose(exported, expected, atol=1e-5)


def test_shipped_default_reaches_95_percent_on_fresh_images() -> None:
    preprocess = serving_preprocessor()
    samples = list(generate_samples("val", 100, seed=2024))  # not the training seed (0)
    images = np.stack([preprocess(s.jpeg).image for s in samples])
    labels = np.array([LABELS.index(s.label) for s in samples])
    probabilities = predict(MODEL_DIR / "inference", images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)  # softmax is exported
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95, f"shipped peach model: top-1 {accuracy:.3f} on 100 fresh images"
