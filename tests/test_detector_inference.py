"""The detector's training entry point, its export, and the shipped default model.

Everything runs the real pieces: ppdet's Trainer, PaddleDetection-style export, paddle.inference
and model/preprocess.py replaying the exported infer_cfg.yml (as the service does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from paddle import inference
from ppdet.core.workspace import load_config
from ppdet.data.reader import Compose
from ppdet.engine import Trainer
from ppdet.metrics.map_utils import DetectionMAP

from export.detector_checkpoint import export_inference_model
from model.preprocess import Preprocessor, Sample
from train import detector
from train import traffic_light_data as data

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "traffic_light" / "inference"
STOCK_CONFIG = ROOT / "train" / "configs" / "yolov3_mobilenet_v1_traffic_light.yml"


def load_predictor(model_dir: Path) -> inference.Predictor:
    config = inference.Config(str(model_dir / "inference.pdmodel"),
                              str(model_dir / "inference.pdiparams"))
    config.disable_gpu()
    config.enable_mkldnn()  # as served: the legacy program runs with oneDNN
    config.set_cpu_math_library_num_threads(1)
    config.disable_glog_info()
    return inference.create_predictor(config)


def preprocessor(model_dir: Path) -> Preprocessor:
    infer_cfg = yaml.safe_load((model_dir / "infer_cfg.yml").read_text())
    return Preprocessor(infer_cfg["Preprocess"])


def feeds(sample: Sample) -> dict[str, np.ndarray]:
    return {"image": sample.image[None].astype(np.float32),
            "im_shape": np.array([sample.im_shape], np.float32),
            "scale_factor": np.array([sample.scale_factor], np.float32)}


def detect(predictor: inference.Predictor, sample: Sample) -> np.ndarray:
    """[M, 6] rows (class, score, x1, y1, x2, y2) in original image pixels."""
    for name, value in feeds(sample).items():
        predictor.get_input_handle(name).copy_from_cpu(value)
    predictor.run()
    boxes_name, count_name = predictor.get_output_names()[:2]
    count = int(predictor.get_output_handle(count_name).copy_to_cpu()[0])
    return predictor.get_output_handle(boxes_name).copy_to_cpu()[:count]


def same_detections(a: np.ndarray, b: np.ndarray, pixels: float = 0.05) -> bool:
    """Same boxes regardless of order (NMS groups by class; equal scores may swap)."""
    if a.shape != b.shape:
        return False
    key = np.lexsort((b[:, 2], b[:, 1], b[:, 0]))
    own = np.lexsort((a[:, 2], a[:, 1], a[:, 0]))
    return np.allclose(a[own][:, :2], b[key][:, :2], atol=1e-4) and np.allclose(
        a[own][:, 2:], b[key][:, 2:], atol=pixels)


# --- training smoke: keeps `make train` working ---------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short epoch of the default recipe through train.detector.main, with its export."""
    root = tmp_path_factory.mktemp("detector_smoke")
    status = detector.main(["--data-dir", str(root / "data"), "--out", str(root / "out"),
                            "--epochs", "1", "--pretrain-iterations", "3",
                            "--train-images", "16", "--valid-images", "4",
                            "--export-to", str(root / "model" / "inference")])
    assert status == 0
    return root


@pytest.mark.slow
def test_training_smoke_writes_checkpoint_curve_metrics_and_export(smoke_run: Path) -> None:
    assert (smoke_run / "out" / "traffic_light_default" / "best_model.pdparams").is_file()
    curve = json.loads((smoke_run / "out" / "curve.json").read_text())
    assert [point["epoch"] for point in curve] == [1]
    metrics = json.loads((smoke_run / "model" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["iterations"] == 2 and metrics["seed"] == 0
    assert metrics["valid_map50"] == curve[0]["map50"]
    direction = metrics["arrow_direction"]
    assert direction["iterations"] == 3 and direction["pretrain_crops"] > 0
    assert (smoke_run / "out" / "arrow_direction_backbone.pdparams").is_file()
    exported = smoke_run / "model" / "inference"
    assert {p.name for p in exported.iterdir()} == {
        "inference.pdmodel", "inference.pdiparams", "infer_cfg.yml"}


@pytest.mark.integration
def test_cli_help() -> None:
    result = subprocess.run([sys.executable, "-m", "train.detector", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for option in ("--data-dir", "--out", "--epochs", "--pretrain-iterations", "--seed",
                   "--export-to"):
        assert option in result.stdout


# --- export: what is served equals what was trained -----------------------------------------------


def keep_every_box_config(tmp_path: Path) -> Path:
    """The default config with the score thresholds at 0, so a barely trained model still
    yields boxes to compare."""
    path = tmp_path / "keep_every_box.yml"
    path.write_text(yaml.safe_dump({
        "_BASE_": [str(detector.DEFAULT_CONFIG)],
        "BBoxPostProcess": {"decode": {"conf_thresh": 0.0}, "nms": {"score_threshold": 0.0}},
    }))
    return path


@pytest.mark.slow
def test_exported_model_detects_what_the_dygraph_model_detects(smoke_run: Path,
                                                              tmp_path: Path) -> None:
    config = keep_every_box_config(tmp_path)
    weights = smoke_run / "out" / "traffic_light_default" / "best_model.pdparams"
    exported = export_inference_model(config, weights, tmp_path / "inference")
    trainer = Trainer(load_config(str(config)), mode="test")
    trainer.load_weights(str(weights))
    trainer.model.eval()
    predictor, preprocess = load_predictor(exported), preprocessor(exported)
    for line in (smoke_run / "data" / "valid.txt").read_text().splitlines()[:3]:
        sample = preprocess((smoke_run / "data" / line.split()[0]).read_bytes())
        with paddle.no_grad():
            dygraph = trainer.model({k: paddle.to_tensor(v) for k, v in feeds(sample).items()})
        expected = dygraph["bbox"].numpy()[: int(dygraph["bbox_num"].numpy()[0])]
        served = detect(predictor, sample)
        assert len(served) > 10
        assert same_detections(served, expected)


@pytest.mark.slow
def test_served_preprocessing_equals_ppdet_eval_reader(smoke_run: Path) -> None:
    """infer_cfg.yml replayed by model/preprocess.py feeds what ppdet's evaluation fed."""
    exported = smoke_run / "model" / "inference"
    eval_transforms = Compose(load_config(str(detector.DEFAULT_CONFIG))["EvalReader"]
                              ["sample_transforms"])
    for line in (smoke_run / "data" / "valid.txt").read_text().splitlines()[:2]:
        image_path = smoke_run / "data" / line.split()[0]
        reference = eval_transforms({"im_file": str(image_path), "im_id": np.array([0])})
        sample = preprocessor(exported)(image_path.read_bytes())
        np.testing.assert_allclose(sample.image, reference["image"], atol=1e-5)
        np.testing.assert_allclose(sample.im_shape, reference["im_shape"])
        np.testing.assert_allclose(sample.scale_factor, reference["scale_factor"], rtol=1e-6)


@pytest.mark.integration
def test_stock_roadsign_config_exports_and_serves(tmp_path: Path) -> None:
    """The stock architecture (MobileNetV1 x1.0, YOLOv3FPN, 608) through the same interface."""
    exported = export_inference_model(STOCK_CONFIG, None, tmp_path / "inference")
    infer_cfg = yaml.safe_load((exported / "infer_cfg.yml").read_text())
    assert infer_cfg["label_list"] == list(data.LABELS)
    assert infer_cfg["Preprocess"][0] == {"type": "Resize", "target_size": [608, 608],
                                          "keep_ratio": False, "interp": 2}
    predictor = load_predictor(exported)
    assert sorted(predictor.get_input_names()) == ["im_shape", "image", "scale_factor"]
    image, _ = data.render_scene(np.random.default_rng(0), data.HARD)
    sample = preprocessor(exported).from_array(image)
    assert sample.image.shape == (3, 608, 608)
    boxes = detect(predictor, sample)
    assert boxes.ndim == 2 and boxes.shape[1] == 6
    count = predictor.get_output_handle(predictor.get_output_names()[1]).copy_to_cpu()
    assert count.dtype == np.int32


# --- the shipped default model --------------------------------------------------------------------


def voc_map50(model_dir: Path, dataset: Path, list_file: str) -> tuple[float, float]:
    """VOC mAP@0.5 (integral, as in training) of an exported model, and its ms per image."""
    predictor, preprocess = load_predictor(model_dir), preprocessor(model_dir)
    metric = DetectionMAP(class_num=len(data.LABELS), overlap_thresh=0.5, map_type="integral",
                          catid2name=dict(enumerate(data.LABELS)))
    elapsed = 0.0
    lines = (dataset / list_file).read_text().splitlines()
    for line in lines:
        image_rel, xml_rel = line.split()
        started = time.perf_counter()
        found = detect(predictor, preprocess((dataset / image_rel).read_bytes()))
        elapsed += time.perf_counter() - started
        truth = data.read_voc_xml(dataset / xml_rel)
        gt_box = np.array([light.box for light in truth], np.float32)
        gt_label = np.array([[data.LABELS.index(light.label)] for light in truth])
        metric.update(found[:, 2:], found[:, 1], found[:, 0], gt_box, gt_label)
    metric.accumulate()
    return metric.get_map(), 1000 * elapsed / len(lines)


@pytest.fixture(scope="module")
def fresh_validation_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes the shipped model never saw: another seed than its training run's."""
    trained_seed = json.loads((SHIPPED.parent / "metrics.json").read_text())["seed"]
    spec = data.DatasetSpec(seed=trained_seed + 1000, train=0, train_easy=0, valid=100)
    return data.generate(tmp_path_factory.mktemp("fresh_valid"), spec)


@pytest.mark.slow
def test_shipped_default_reaches_map50_on_fresh_scenes(fresh_validation_set: Path) -> None:
    map50, ms_per_image = voc_map50(SHIPPED, fresh_validation_set, "valid.txt")
    print(f"shipped detector: mAP@0.5 {map50:.3f} on 100 fresh images, {ms_per_image:.1f} ms/img")
    assert map50 >= 0.80


def test_shipped_default_is_small_and_documented() -> None:
    sizes = {p.name: p.stat().st_size for p in SHIPPED.iterdir()}
    assert set(sizes) == {"inference.pdmodel", "inference.pdiparams", "infer_cfg.yml"}
    assert sum(sizes.values()) < 5_000_000
    metrics = json.loads((SHIPPED.parent / "metrics.json").read_text())
    for key in ("command", "seed", "epochs", "iterations", "training_minutes", "valid_map50"):
        assert metrics[key] is not None, key
    infer_cfg = yaml.safe_load((SHIPPED / "infer_cfg.yml").read_text())
    assert infer_cfg["label_list"] == list(data.LABELS)
    assert [step["type"] for step in infer_cfg["Preprocess"]] == [
        "Resize", "NormalizeImage", "Permute"]
