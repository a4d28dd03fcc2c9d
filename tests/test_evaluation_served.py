"""The evaluation scores a model as it is served (its serving_server/ files, engine and
precision), and a study folder on Paddle Inference FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation import peach_scenes
from evaluation.inference import load_predict, served_model_files
from model import settings
from model.engine import ONNX_FILES
from model.spec import ModelSpec

pytestmark = pytest.mark.integration  # exports the served folder and loads two engines

ROOT = Path(__file__).resolve().parents[1]
PEACH = ROOT / "models" / "peach"


def peach_images(folder: Path, count: int) -> list[bytes]:
    peach_scenes.write_set(folder, count, seed=11)
    lines = (folder / peach_scenes.LIST_FILE).read_text().splitlines()
    return [(folder / line.split()[0]).read_bytes() for line in lines]


def test_the_served_int8_model_is_scored_and_a_study_folder_runs_on_paddle(tmp_path: Path
                                                                          ) -> None:
    spec = ModelSpec.load(PEACH)
    served = settings.resolve(spec.runtime)
    assert (served.engine, served.precision) == ("onnxruntime", "int8")  # peach's model.yml
    assert (served_model_files(spec, {}) / ONNX_FILES["int8"]).is_file()

    images = peach_images(tmp_path / "set", 8)
    as_served = load_predict(PEACH)(images)
    on_paddle = load_predict(PEACH, inference_dir=spec.inference_dir)(images)

    assert len(as_served) == len(on_paddle) == 8
    top_served = [result[0] for result in as_served]
    top_paddle = [result[0] for result in on_paddle]
    assert sum(a["class_id"] == b["class_id"] for a, b in zip(top_served, top_paddle,
                                                               strict=True)) >= 6
    # INT8 probabilities differ from FP32 ones: the two runs used different engines
    differences = [abs(a["score"] - b["score"]) for a, b in zip(top_served, top_paddle,
                                                                 strict=True)]
    assert np.max(differences) > 1e-4
