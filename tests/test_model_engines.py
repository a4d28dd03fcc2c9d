"""The engine seam of the model contract: `engine` and `precision` choose what runs the model, a
wrong choice or a missing package is refused with what to do, and every engine answers through
the same Model (preprocessing, feeds, postprocessing) as Paddle Inference does."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import ROOT, save_tiny_models

from export.convert import convert
from model import settings
from model.engine import EngineNotInstalled, OnnxRuntimeEngine, OpenVinoEngine, PaddleEngine
from model.model import Model
from model.spec import ModelSpec


def test_engine_and_precision_take_one_of_their_choices() -> None:
    assert (settings.resolve().engine, settings.resolve().precision) == ("paddle", "fp32")
    chosen = settings.resolve({"engine": "openvino"}, {"precision": "int8"})
    assert (chosen.engine, chosen.precision) == ("openvino", "int8")
    with pytest.raises(settings.SettingsError,
                       match="engine: expected one of paddle, onnxruntime, openvino, got 'tvm'"):
        settings.resolve({"engine": "tvm"})
    with pytest.raises(settings.SettingsError, match="precision: expected one of fp32, int8"):
        settings.resolve({"engine": "onnxruntime", "precision": "fp16"})
    help_text = settings.help_text()
    assert "engine = paddle  (paddle | onnxruntime | openvino)" in help_text
    assert "precision = fp32  (fp32 | int8)" in help_text


def test_int8_on_paddle_inference_is_refused_with_the_engines_that_have_it() -> None:
    with pytest.raises(settings.SettingsError, match="int8 needs engine=onnxruntime or "
                                                     "engine=openvino"):
        settings.resolve({"precision": "int8"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """Tiny random-init models and their serving folders with both ONNX models."""
    models = tmp_path_factory.mktemp("models")
    save_tiny_models(models)
    folders = {}
    for name in ("peach", "traffic_light"):
        spec = ModelSpec.load(models / name)
        out = convert(spec.inference_dir, tmp_path_factory.mktemp(name),
                      ROOT / "prototxt_patches" / f"{name}.yml", None, spec, onnx="int8")
        folders[name] = out / "serving_server"
    return models, folders


ENGINE_CLASSES = {"paddle": PaddleEngine, "onnxruntime": OnnxRuntimeEngine,
                  "openvino": OpenVinoEngine}


@pytest.mark.integration
@pytest.mark.parametrize("name", ["peach", "traffic_light"])
def test_every_engine_serves_the_same_request_through_the_same_model(
        tiny: tuple[Path, dict[str, Path]], name: str) -> None:
    models, folders = tiny
    spec = ModelSpec.load(models / name)
    request = {f"image_{i}": base64.b64encode(jpeg).decode()
               for i, jpeg in enumerate(spec.sample_images(3))}
    answers = {}
    for engine, precision in (("paddle", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                              ("onnxruntime", "int8"), ("openvino", "int8")):
        resolved = settings.resolve(spec.runtime, {"engine": engine, "precision": precision})
        model = Model(spec, folders[name], resolved).load()
        assert isinstance(model.engine, ENGINE_CLASSES[engine])
        answers[engine, precision] = {key: json.loads(value)
                                      for key, value in model(request).items()}
    reference = answers["paddle", "fp32"]
    for (engine, precision), answer in answers.items():
        assert list(answer) == ["image_0", "image_1", "image_2"], engine
        if precision == "fp32":  # INT8 answers differ by design; their accuracy is tested apart
            for key, results in answer.items():
                assert [r["class_id"] for r in results] == \
                    [r["class_id"] for r in reference[key]], (engine, key)
                assert [r["score"] for r in results] == pytest.approx(
                    [r["score"] for r in reference[key]], abs=1e-5), (engine, key)


@pytest.mark.integration
def test_an_engine_whose_package_is_missing_says_to_run_make_install(
        tiny: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    models, folders = tiny
    spec = ModelSpec.load(models / "peach")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    model = Model(spec, folders["peach"], settings.resolve({"engine": "onnxruntime"}))
    with pytest.raises(EngineNotInstalled, match=r"'onnxruntime'.*`make install`"):
        model.load()
    assert not model.ready


@pytest.mark.integration
def test_a_folder_without_the_onnx_model_says_how_to_export_it(
        tiny: tuple[Path, dict[str, Path]]) -> None:
    models, _ = tiny
    spec = ModelSpec.load(models / "peach")
    model = Model(spec, spec.inference_dir, settings.resolve({"engine": "openvino",
                                                              "precision": "int8"}))
    with pytest.raises(FileNotFoundError, match=r"no inference_int8\.onnx.*--onnx --int8"):
        model.load()


# A worker's start, as a service worker does it (process settings, then the model), then one
# request; prints whether paddle was imported.
WORKER_START = """
import base64, sys
from pathlib import Path
from model import settings
from model.model import Model
from model.process import configure_process
from model.spec import ModelSpec
spec = ModelSpec.load(Path(sys.argv[1]))
resolved = settings.resolve(spec.runtime, {"engine": sys.argv[3], "precision": "fp32"})
configure_process(resolved)
model = Model(spec, Path(sys.argv[2]), resolved).load()
model({"image": base64.b64encode(spec.sample_images(1)[0]).decode()})
print("paddle imported:", "paddle" in sys.modules)
"""


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["paddle", "onnxruntime", "openvino"])
def test_only_the_paddle_engine_imports_paddle_into_a_worker(
        tiny: tuple[Path, dict[str, Path]], engine: str) -> None:
    models, folders = tiny
    done = subprocess.run([sys.executable, "-c", WORKER_START, str(models / "peach"),
                           str(folders["peach"]), engine], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"paddle imported: {engine == 'paddle'}" in done.stdout
