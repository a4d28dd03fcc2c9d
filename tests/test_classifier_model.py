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
from model.preprocess import Preprocessor, decode_image
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


@pytest.mark.integration
def test_help_works_from_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "train.classifier", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--data-dir" in done.stdout and "--export-to" in done.stdout


def test_training_augmentation_keeps_the_serving_scale_and_crop() -> None:
    """Size separates the grades: training may flip and recolour, never rescale or shift."""
    steps = yaml.safe_load((MODEL_DIR / "model.yml").read_text())["preprocess"]
    augment = classifier.TrainAugmentation.from_serving_steps(steps)
    for index, sample in enumerate(generate_samples("train", 6, seed=7)):
        served = serving_preprocessor()(sample.jpeg).image
        trained = augment(decode_image(sample.jpeg), np.random.default_rng(index))
        assert trained.shape == served.shape
        best = max(np.corrcoef(trained.ravel(), candidate.ravel())[0, 1]
                   for candidate in (served, served[:, :, ::-1]))
        assert best > 0.97, f"{sample.relative_path}: correlation {best:.3f}"


def test_weight_decay_spares_batch_norm_and_biases() -> None:
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4),
                                 paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 2))
    config = {"Optimizer": {"weight_decay": 0.5, "clip_grad_norm": 1.0}}
    optimizer = classifier.optimizer_for(config, model, 0.1)
    before = {name: param.numpy().copy() for name, param in model.named_parameters()}
    (0 * model(paddle.rand([2, 3, 8, 8])).sum()).backward()  # zero gradients: decay only
    optimizer.step()
    for name, param in model.named_parameters():
        if param.stop_gradient:  # BN running statistics, not trained
            continue
        decayed = not np.allclose(param.numpy(), before[name])
        assert decayed == (param.ndim > 1), name


def test_early_stop_needs_the_target_held_in_a_row() -> None:
    stop = classifier.EarlyStop(top1=0.97, evaluations=2)
    assert [stop.should_stop(a) for a in (0.97, 0.96, 0.98, 0.99)] == [False, False, False, True]


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


# 500 images: on 100 the standard error of a top-1 near 0.96 is ~2 points, too coarse for a
# 0.95 gate (the first 100 of these give 0.93, all 500 give 0.954).
@pytest.mark.integration
def test_shipped_default_reaches_95_percent_on_fresh_images() -> None:
    preprocess = serving_preprocessor()
    samples = list(generate_samples("val", 500, seed=2024))  # not the training seed (0)
    images = np.stack([preprocess(s.jpeg).image for s in samples])
    labels = np.array([LABELS.index(s.label) for s in samples])
    probabilities = predict(MODEL_DIR / "inference", images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)  # softmax is exported
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95, f"shipped peach model: top-1 {accuracy:.3f} on 500 fresh images"
