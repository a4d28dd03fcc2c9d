"""The serve stage rebuilds a model's serving folders when what they were exported from changed
(a retrained model, an edited prototxt patch), and reuses them otherwise (`make models`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import ROOT, save_tiny_models

from serving.control.layout import Layout
from serving.control.prepare import INPUTS_FILE, ensure_serving_folder

pytestmark = pytest.mark.integration  # a child interpreter or a real model each


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    models = tmp_path / "models"
    save_tiny_models(models)
    shutil.rmtree(models / "traffic_light")  # one model is enough here
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "prototxt_patches", patches)
    return Layout(models_dir=models, build_dir=tmp_path / "build", patches_dir=patches)


def conf_mtime(layout: Layout) -> int:
    return (layout.serving_server("peach") / "serving_server_conf.prototxt").stat().st_mtime_ns


def test_built_once_then_reused_then_rebuilt_when_an_input_changes(layout: Layout) -> None:
    spec = layout.spec("peach")
    assert ensure_serving_folder(layout, spec) is True
    built = conf_mtime(layout)
    assert ensure_serving_folder(layout, spec) is False and conf_mtime(layout) == built

    params = spec.inference_dir / "inference.pdiparams"
    params.write_bytes(params.read_bytes() + b"")  # same bytes: still up to date
    assert ensure_serving_folder(layout, spec) is False

    patch = layout.patches_dir / "peach.yml"
    patch.write_text(patch.read_text() + "\n# edited\n")
    assert ensure_serving_folder(layout, spec) is True and conf_mtime(layout) != built
    assert ensure_serving_folder(layout, spec) is False

    (layout.serving_dir("peach") / INPUTS_FILE).unlink()  # built by an older version: rebuild
    assert ensure_serving_folder(layout, spec) is True


def test_prepare_command_reports_what_it_did(layout: Layout) -> None:
    command = [sys.executable, "-m", "serving", "prepare", "--models-dir", str(layout.models_dir),
               "--build-dir", str(layout.build_dir), "--patches-dir", str(layout.patches_dir)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "[peach] building the serving folder (missing)" in first.stdout
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "[peach] serving folder up to date" in second.stdout
