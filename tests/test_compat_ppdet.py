"""Each paddledet fix is needed (the upstream failure is reproduced without it) and works."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import paddle
import pytest
from upstream import run_python

import compat

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # a child interpreter or a real model each

# numpy 2.2 only warns where numpy >= 2.4 raises: make the warning the failure it becomes
STRICT_NUMPY = "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"


def run_without_compat(code: str) -> subprocess.CompletedProcess[str]:
    return run_python(code, with_compat=False)


YOLO_TARGET = """
import numpy as np
from ppdet.data.transform.batch_operators import Gt2YoloTarget
op = Gt2YoloTarget(anchors=[[10, 30]], anchor_masks=[[0]], downsample_ratios=[8], num_classes=2)
sample = {"image": np.zeros((3, 32, 32), np.float32),
          "gt_bbox": np.array([[0.5, 0.5, 0.3, 0.9]], np.float32),
          "gt_class": np.array([[1]], np.int32), "gt_score": np.array([[0.75]], np.float32)}
"""


def test_gt2yolotarget_scalar_assignment() -> None:
    broken = run_without_compat(YOLO_TARGET + STRICT_NUMPY + "op([sample])")
    assert broken.returncode != 0 and "ndim > 0" in broken.stderr

    namespace: dict = {}
    exec(YOLO_TARGET, namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        (sample,) = namespace["op"]([namespace["sample"]])
    target = sample["target0"]
    assert target[0, 5, 2, 2] == pytest.approx(0.75)  # the score, at the box centre cell
    assert target[0, 6 + 1, 2, 2] == 1.0


DETECTION_MAP = """
import numpy as np
from ppdet.metrics.map_utils import DetectionMAP
metric = DetectionMAP(class_num=2, map_type="integral", catid2name={0: "a", 1: "b"})
gt_box, gt_label = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([[0], [1]])
difficult = np.zeros((2, 1), np.int32)
bbox, score, label = np.array([[0, 0, 10, 10]], np.float32), np.array([0.9]), np.array([0.0])
"""
MAP_UPDATE = "metric.update(bbox, score, label, gt_box, gt_label, difficult)"


def test_detection_map_update_int_of_arrays() -> None:
    broken = run_without_compat(DETECTION_MAP + STRICT_NUMPY + MAP_UPDATE)
    assert broken.returncode != 0 and "ndim > 0" in broken.stderr

    namespace: dict = {}
    exec(DETECTION_MAP, namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        exec(MAP_UPDATE, namespace)
    metric = namespace["metric"]
    metric.accumulate()
    assert metric.get_map() == pytest.approx(0.5)  # class 0 found, class 1 missed


STATIC_NMS = """
import paddle
from ppdet.modeling import ops
paddle.enable_static()
boxes = paddle.static.data("boxes", [1, 3, 4], "float32")
scores = paddle.static.data("scores", [1, 2, 3], "float32")
out, count, _ = ops.multiclass_nms(boxes, scores, score_threshold=0.1, nms_top_k=10,
                                   keep_top_k=10, nms_threshold=0.5, background_label=-1)
"""


def test_multiclass_nms_under_pir() -> None:
    broken = run_without_compat(STATIC_NMS)
    assert broken.returncode != 0 and "should be one of [str, bytes, Variable]" in broken.stderr

    boxes = np.array([[[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.05], [0.05, 0.05, 0.7]]], np.float32)
    namespace: dict = {}
    try:
        exec(STATIC_NMS, namespace)
        executor = paddle.static.Executor(paddle.CPUPlace())
        out, count = executor.run(feed={"boxes": boxes, "scores": scores},
                                  fetch_list=[namespace["out"], namespace["count"]])
    finally:
        paddle.disable_static()
    assert count.tolist() == [2]  # box 1 suppressed by box 0 (class 0); box 2 alone in class 1
    np.testing.assert_allclose(out[:, :2], [[0, 0.9], [1, 0.7]], rtol=1e-6)


def test_trainer_export_builds_a_full_graph() -> None:
    layer = paddle.nn.Linear(2, 1)
    spec = [paddle.static.InputSpec([None, 2], "float32")]
    with pytest.raises(RuntimeError, match="full_graph=False"):
        _ = paddle.jit.to_static(layer, input_spec=spec).forward.main_program  # upstream call
    with compat.ppdet.full_graph_to_static():
        assert paddle.jit.to_static(layer, input_spec=spec).forward.main_program is not None

    from ppdet.engine import trainer

    assert "ppdet.engine.trainer:export_with_full_graph" in compat.applied
    assert trainer.Trainer._get_infer_cfg_and_input_spec.__wrapped__ is not None
