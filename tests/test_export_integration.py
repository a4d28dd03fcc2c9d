"""Real toolkit models (random init) through the checkpoint exporters, export and LocalPredictor.

PP-LCNetV2_base (4 classes, PaddleClas code, PIR program) and the stock YOLOv3-MobileNetV1
(8 classes, PaddleDetection code, legacy program): a random-init .pdparams is exported with
`convert` (the CLI's code path: config dispatch, checkpoint exporter, interface reading, patch),
then the serving_server folder is loaded by paddle_serving_app's LocalPredictor and its outputs
are compared with paddle.inference run directly on the same files and input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle_serving_app.local_predict import LocalPredictor
from test_export_serving_folder import direct_predictor, run_direct

from export.checksums import verify_checksums
from export.convert import convert

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_CONFIG = ROOT / "train/configs/pplcnetv2_base_peach.yml"
DETECTOR_CONFIG = ROOT / "train/configs/traffic_light_default.yml"
# The stock architecture (MobileNetV1 x1.0 + YOLOv3FPN), on the project's dataset settings.
STOCK_YOLOV3_MOBILENET_V1 = """\
_BASE_: [{base}]
YOLOv3: {{backbone: MobileNet, neck: YOLOv3FPN, yolo_head: YOLOv3Head,
         post_process: BBoxPostProcess}}
MobileNet: {{scale: 1.0, feature_maps: [4, 6, 13], with_extra_blocks: false}}
"""

pytestmark = pytest.mark.slow


def random_classifier_checkpoint(path: Path) -> Path:
    from export.classifier_checkpoint import build_classifier, load_config

    paddle.seed(0)
    paddle.save(build_classifier(load_config(CLASSIFIER_CONFIG)).state_dict(), str(path))
    return path


def random_detector_checkpoint(config: Path, path: Path) -> Path:
    from ppdet.core.workspace import create, load_config

    paddle.seed(0)
    paddle.save(create(load_config(str(config)).architecture).state_dict(), str(path))
    return path


def assert_served_like_paddle_inference(
    serving_server: Path, feed: dict[str, np.ndarray], mem_optim: bool
) -> dict[str, np.ndarray]:
    served = LocalPredictor()
    served.load_model_config(str(serving_server), use_gpu=False, thread_num=1,
                             mem_optim=mem_optim)
    fetched = served.predict(feed=dict(feed), fetch=served.fetch_names_, batch=True)
    expected = run_direct(direct_predictor(serving_server), feed)
    assert len(fetched) == len(expected)
    for alias, want in zip(served.fetch_names_, expected, strict=True):
        assert fetched[alias].shape == want.shape
        assert fetched[alias].dtype == want.dtype
        assert np.abs(fetched[alias] - want).max(initial=0.0) <= 1e-5
    return fetched


def test_pp_lcnetv2_base_checkpoint_exports_and_serves(tmp_path: Path) -> None:
    weights = random_classifier_checkpoint(tmp_path / "peach.pdparams")
    out = convert(weights, tmp_path / "serving", ROOT / "prototxt_patches/peach.yml",
                  CLASSIFIER_CONFIG)
    server = out / "serving_server"
    assert "inference.pdiparams" in verify_checksums(server)

    image = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    fetched = assert_served_like_paddle_inference(server, {"x": image}, mem_optim=False)  # PIR
    probabilities = fetched["prediction"]
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_yolov3_mobilenet_v1_checkpoint_exports_and_serves(tmp_path: Path) -> None:
    config = tmp_path / "yolov3_mobilenet_v1_traffic_light.yml"
    config.write_text(STOCK_YOLOV3_MOBILENET_V1.format(base=DETECTOR_CONFIG), encoding="utf-8")
    weights = random_detector_checkpoint(config, tmp_path / "traffic_light.pdparams")
    out = convert(weights, tmp_path / "serving", ROOT / "prototxt_patches/traffic_light.yml",
                  config)
    server = out / "serving_server"
    assert "infer_cfg.yml" in verify_checksums(server)

    size = 320
    feed = {
        "im_shape": np.array([[size, size]], dtype=np.float32),
        "image": np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32),
        "scale_factor": np.ones((1, 2), dtype=np.float32),
    }
    fetched = assert_served_like_paddle_inference(server, feed, mem_optim=True)  # legacy
    assert fetched["boxes"].shape[1:] == (6,)
    assert fetched["boxes_num"].dtype == np.int32
    assert fetched["boxes_num"].sum() == len(fetched["boxes"])
    assert set(fetched["boxes"][:, 0].astype(int)) <= set(range(8))


@pytest.mark.integration
def test_exporting_a_checkpoint_warns_that_it_is_an_untrusted_pickle(tmp_path: Path) -> None:
    """paddle.load unpickles a .pdparams: the command says so before it loads one."""
    checkpoint = tmp_path / "downloaded.pdparams"
    checkpoint.write_bytes(b"not a checkpoint")
    exported = subprocess.run(
        [sys.executable, "-m", "export", str(checkpoint), "--config", str(CLASSIFIER_CONFIG),
         "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert exported.returncode != 0  # not a checkpoint: the load fails, after the warning
    assert (f"warning: {checkpoint} is a pickle: loading it runs any code it holds. Export "
            "only checkpoints you made or trust.") in exported.stderr.splitlines()[0]
