"""Fixes for paddledet 2.6.0 on paddlepaddle 3.x and numpy 2, each with its root cause."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType

from compat import hooks

# --- 1. Trainer.export needs a full static graph ------------------------------------------------
# ppdet/engine/trainer.py:1127-1133 (_get_infer_cfg_and_input_spec) converts the model with
# `paddle.jit.to_static(model, input_spec=...)` and then reads `forward.main_program`. paddle 3
# defaults to full_graph=False (bytecode translation), where main_program raises "Can't call
# main_program when full_graph=False". The method runs with to_static defaulting to full_graph.


@contextlib.contextmanager
def full_graph_to_static() -> Iterator[None]:
    """Within the block, paddle.jit.to_static builds a full graph unless told otherwise."""
    import paddle

    original = paddle.jit.to_static
    paddle.jit.to_static = functools.partial(original, full_graph=True)
    try:
        yield
    finally:
        paddle.jit.to_static = original


def export_with_full_graph(trainer_module: ModuleType) -> None:
    trainer = trainer_module.Trainer
    original = trainer._get_infer_cfg_and_input_spec

    @functools.wraps(original)
    def get_infer_cfg_and_input_spec(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with full_graph_to_static():
            return original(self, *args, **kwargs)

    trainer._get_infer_cfg_and_input_spec = get_infer_cfg_and_input_spec


# --- 2. Gt2YoloTarget writes a shape-(1,) array into a scalar slot --------------------------
# ppdet/data/transform/batch_operators.py:217,250 (Gt2YoloTarget.__call__) takes `score =
# gt_score[b]` from the (n, 1) gt_score and assigns it to `target[..., 5, gj, gi]`: numpy 2.x
# warns "Conversion of an array with ndim > 0 to a scalar", numpy >= 2.4 raises, which kills the
# loader thread and hangs training. The op pops gt_score when done, so flattening it to (n,)
# beforehand changes nothing else.


def flat_gt_score(samples: list[dict]) -> list[dict]:
    import numpy as np

    for sample in samples:
        boxes = len(sample["gt_bbox"])
        score = sample.get("gt_score", np.ones(boxes, np.float32))
        sample["gt_score"] = np.asarray(score, np.float32).reshape(boxes)
    return samples


def yolo_target_with_flat_scores(operators: ModuleType) -> None:
    original = operators.Gt2YoloTarget.__call__

    @functools.wraps(original)
    def call(self, samples, context=None):  # type: ignore[no-untyped-def]
        return original(self, flat_gt_score(samples), context)

    operators.Gt2YoloTarget.__call__ = call


# --- 3. DetectionMAP.update calls int() on shape-(1,) arrays ----------------------------------
# ppdet/metrics/map_utils.py:194-196,217 (DetectionMAP.update) iterates the (n, 1) gt_label and
# difficult arrays and calls int() on each row: numpy 2.x warns, numpy >= 2.4 raises TypeError and
# evaluation crashes. Both arrays are only read row by row there, so they are passed flat.


def map_update_with_flat_labels(map_utils: ModuleType) -> None:
    import numpy as np

    original = map_utils.DetectionMAP.update

    @functools.wraps(original)
    def update(self, bbox, score, label, gt_box, gt_label, difficult=None):  # type: ignore[no-untyped-def]
        if difficult is not None:
            difficult = np.asarray(difficult).reshape(-1)
        return original(self, bbox, score, label, gt_box, np.asarray(gt_label).reshape(-1),
                        difficult)

    map_utils.DetectionMAP.update = update


# --- 4. multiclass_nms cannot be exported as a PIR program -------------------------------------
# ppdet/modeling/ops.py:586-625 (multiclass_nms) builds the static graph with the legacy
# LayerHelper.append_op("multiclass_nms3"), which rejects PIR Values ("must be Variable"), so a PIR
# export (paddle 3's default) of any model using MultiClassNMS fails. Under PIR the same op is
# paddle._C_ops.multiclass_nms3; the eager and legacy-static paths stay upstream's.


def pir_multiclass_nms(ops: ModuleType) -> None:
    original = ops.multiclass_nms

    @functools.wraps(original)
    def multiclass_nms(bboxes, scores, score_threshold, nms_top_k, keep_top_k,  # type: ignore[no-untyped-def]
                       nms_threshold=0.3, normalized=True, nms_eta=1.0, background_label=-1,
                       return_index=False, return_rois_num=True, rois_num=None, name=None):
        import paddle

        if not paddle.framework.in_pir_mode():
            return original(bboxes, scores, score_threshold, nms_top_k, keep_top_k,
                            nms_threshold, normalized, nms_eta, background_label, return_index,
                            return_rois_num, rois_num, name)
        output, index, nms_rois_num = paddle._C_ops.multiclass_nms3(
            bboxes, scores, rois_num, score_threshold, nms_top_k, keep_top_k, nms_threshold,
            normalized, nms_eta, background_label)
        return (output, nms_rois_num if return_rois_num else None,
                index if return_index else None)

    ops.multiclass_nms = multiclass_nms


def install() -> None:
    """Registers the post-import fixes of this module (see compat.hooks.after_import)."""
    hooks.after_import("ppdet.engine.trainer")(export_with_full_graph)
    hooks.after_import("ppdet.data.transform.batch_operators")(yolo_target_with_flat_scores)
    hooks.after_import("ppdet.metrics.map_utils")(map_update_with_flat_labels)
    hooks.after_import("ppdet.modeling.ops")(pir_multiclass_nms)
