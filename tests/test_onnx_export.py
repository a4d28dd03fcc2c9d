"""ONNX export with parity, for the two shipped models and the stock random-init PP-LCNetV2_base
and YOLOv3-MobileNetV1 (608): `convert(..., onnx=...)` (the CLI's `--onnx` / `--int8` path)
writes the ONNX models into serving_server/, and ONNX Runtime answers 20 real generated
validation images like Paddle Inference, one image per call and four per call (the service's
batches): classifier probabilities within 1e-5; detector boxes matched one to one (IoU >= 0.999,
or within 0.01 px for sub-pixel boxes), same classes, scores within 1e-4. OpenVINO is held to
the same bounds. The INT8 model keeps the classifier's top-1 on freshly generated images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest
from test_detector_inference import STOCK_CONFIG
from test_export_integration import CLASSIFIER_CONFIG, random_classifier_checkpoint

from export.checksums import verify_checksums
from export.convert import convert
from export.detector_checkpoint import export_inference_model
from export.onnx_models import engine_model, image_feeds
from export.parity import check_parity
from model.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
PARITY_IMAGES = 20
FRESH_SEED = 2024  # peach images no shipped model saw (the smoke tests' fresh seed family)
FRESH_IMAGES = 100
INT8_TOP1_FLOOR = 0.02  # below FP32 Paddle on FRESH_IMAGES: 2 images

pytestmark = pytest.mark.slow


def export_folder(name: str, source: Path, out: Path, onnx: str = "fp32",
                  config: Path | None = None) -> Path:
    spec = ModelSpec.load(ROOT / "models" / name)
    written = convert(source, out, ROOT / "prototxt_patches" / f"{name}.yml", config, spec, onnx)
    return written / "serving_server"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """model -> (description it shares, serving_server folder with inference.onnx)."""
    build = tmp_path_factory.mktemp("onnx")
    stock_classifier = random_classifier_checkpoint(build / "pplcnetv2.pdparams")
    paddle.seed(0)
    stock_detector = export_inference_model(STOCK_CONFIG, None, build / "yolov3_inference")
    return {
        "peach": ("peach", export_folder("peach", ROOT / "models/peach/inference",
                                         build / "peach")),
        "traffic_light": ("traffic_light", export_folder(
            "traffic_light", ROOT / "models/traffic_light/inference", build / "traffic_light")),
        "pplcnetv2_base_stock": ("peach", export_folder(
            "peach", stock_classifier, build / "pplcnetv2", config=CLASSIFIER_CONFIG)),
        "yolov3_mobilenet_v1_stock": ("traffic_light", export_folder(
            "traffic_light", stock_detector, build / "yolov3")),
    }


def exact_quotient_jpegs(jpegs: list[bytes], size: int) -> list[bytes]:
    """The images resized to size x size, where im_shape / scale_factor is exact in float32."""
    resized = [cv2.resize(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR),
                          (size, size)) for j in jpegs]
    return [cv2.imencode(".jpg", image)[1].tobytes() for image in resized]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["peach", "traffic_light", "pplcnetv2_base_stock",
                                  "yolov3_mobilenet_v1_stock"])
def test_onnx_answers_real_images_like_paddle_inference(
        folders: dict[str, tuple[str, Path]], name: str, engine: str) -> None:
    description, folder = folders[name]
    assert "inference.onnx" in verify_checksums(folder)
    spec = ModelSpec.load(ROOT / "models" / description)
    jpegs = spec.sample_images(PARITY_IMAGES)
    if engine == "openvino" and spec.task == "detection":
        # OpenVINO's CPU plugin divides through a reciprocal: cast<int32>(320 / 0.5714286) is
        # 559 where Paddle and ONNX Runtime compute 560, a box one pixel short
        # (docs/benchmarks.md); compared where the quotient is exact.
        jpegs = exact_quotient_jpegs(jpegs, 640)
    reference = engine_model(spec, folder, "paddle").load()
    candidate = engine_model(spec, folder, engine).load()
    for per_call in (1, 4):
        feeds = image_feeds(reference, jpegs, per_call)
        report = check_parity(reference.engine, candidate.engine, feeds, spec.task)
        figures = {k: v for k, v in vars(report).items() if k != "failures"}
        print(f"{name} {engine} {per_call} image(s) per call: {figures}")
        assert report.passed and report.images == PARITY_IMAGES, vars(report)
        if spec.task == "detection":
            assert report.boxes > 0


def peach_top1(model_folder: Path, engine: str, precision: str) -> float:
    from train.peach_data import LABELS, generate_samples

    spec = ModelSpec.load(ROOT / "models" / "peach")
    model = engine_model(spec, model_folder, engine, precision).load()
    samples = list(generate_samples("val", FRESH_IMAGES, FRESH_SEED))
    feeds = image_feeds(model, [sample.jpeg for sample in samples], per_call=10)
    predicted = np.concatenate([model.engine.run(feed)[0].argmax(axis=1) for feed in feeds])
    labels = np.array([LABELS.index(sample.label) for sample in samples])
    return float((predicted == labels).mean())


def test_int8_classifier_keeps_its_top1_on_fresh_images(tmp_path: Path) -> None:
    folder = export_folder("peach", ROOT / "models/peach/inference", tmp_path, onnx="int8")
    assert "inference_int8.onnx" in verify_checksums(folder)
    fp32 = peach_top1(folder, "paddle", "fp32")
    for engine in ("onnxruntime", "openvino"):
        int8 = peach_top1(folder, engine, "int8")
        print(f"peach top-1 on {FRESH_IMAGES} fresh images: paddle fp32 {fp32:.3f}, "
              f"{engine} int8 {int8:.3f}")
        assert int8 >= fp32 - INT8_TOP1_FLOOR, (engine, int8, fp32)
