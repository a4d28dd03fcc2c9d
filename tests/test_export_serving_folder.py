"""Serving-folder writer on tiny real Paddle models saved in the legacy and the PIR format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle.inference as paddle_infer
import pytest
from google.protobuf import text_format
from paddle_serving_app.local_predict import LocalPredictor
from paddle_serving_app.proto.general_model_config_pb2 import GeneralModelConfig

from export.checksums import verify_checksums
from export.convert import checkpoint_exporter, convert
from export.errors import ExportError
from export.model_io import find_inference_model
from export.serving_folder import CLIENT_CONF, SERVER_CONF, SERVING_TYPE_CODES, stream_twin

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # a child interpreter or a real model each
FORMATS = ("legacy", "pir")

# Two toys with the served models' interfaces: a 4-class softmax classifier on `x`, and a
# detector fed im_shape/image/scale_factor returning boxes [M, 6] float32 + a count [N] int32.
TINY_MODELS_SCRIPT = """
import sys
import paddle
paddle.seed(0)

class Classifier(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3)
        self.fc = paddle.nn.Linear(4, 4)

    def forward(self, x):
        return paddle.nn.functional.softmax(self.fc(self.conv(x).mean(axis=[2, 3])))

class Detector(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 6, 3)

    def forward(self, im_shape, image, scale_factor):
        boxes = self.conv(image).mean(axis=[2, 3]) * scale_factor[:, :1] + im_shape[:, :1]
        return boxes, (im_shape[:, 0] * 0 + 1).astype("int32")

def spec(name, shape):
    return paddle.static.InputSpec([None, *shape], "float32", name)

out = sys.argv[1]
paddle.jit.save(paddle.jit.to_static(Classifier(), input_spec=[spec("x", [3, 16, 16])],
                                     full_graph=True), f"{out}/classifier/inference")
detector_spec = [spec("im_shape", [2]), spec("image", [3, 16, 16]), spec("scale_factor", [2])]
paddle.jit.save(paddle.jit.to_static(Detector(), input_spec=detector_spec, full_graph=True),
                f"{out}/detector/inference")
"""
FEED_SHAPES = {"x": [3, 16, 16], "im_shape": [2], "image": [3, 16, 16], "scale_factor": [2]}
INFER_CFG = "mode: paddle\narch: YOLO\nPreprocess: []\nlabel_list: [red]\n"
POSITION_PATCH = """\
fetch_var:
  - {match: {position: 0}, set: {alias_name: boxes, is_lod_tensor: true}}
  - {match: {position: 1}, set: {alias_name: boxes_num}}
"""


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"legacy/classifier": folder, ...}; saved in subprocesses (the IR is chosen at import)."""
    root = tmp_path_factory.mktemp("tiny_models")
    script = root / "save_tiny_models.py"  # a file: to_static reads the layers' source code
    script.write_text(TINY_MODELS_SCRIPT, encoding="utf-8")
    for fmt in FORMATS:
        env = {**os.environ, "FLAGS_enable_pir_api": str(int(fmt == "pir")), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, str(script), str(root / fmt)], env=env, check=True,
                       capture_output=True, timeout=300)
        (root / fmt / "detector" / "infer_cfg.yml").write_text(INFER_CFG, encoding="utf-8")
    nets = ("classifier", "detector")
    return {f"{fmt}/{net}": root / fmt / net for fmt in FORMATS for net in nets}


def direct_predictor(model_dir: Path) -> paddle_infer.Predictor:
    model = find_inference_model(model_dir)
    config = paddle_infer.Config(str(model.program), str(model.params))
    config.disable_gpu()
    config.switch_ir_optim(False)  # as LocalPredictor's default: same kernels on both sides
    config.set_cpu_math_library_num_threads(1)
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


def run_direct(predictor: paddle_infer.Predictor, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feed[name])
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def random_feed(names: list[str], batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: rng.random((batch, *FEED_SHAPES[n]), dtype=np.float32) for n in names}


def read_text(path: Path) -> GeneralModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), GeneralModelConfig())


def all_files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.mark.parametrize("model", ["legacy/classifier", "pir/classifier", "legacy/detector",
                                   "pir/detector"])
def test_config_types_shapes_and_order_match_the_running_model(
    tiny_models: dict[str, Path], tmp_path: Path, model: str
) -> None:
    convert(tiny_models[model], tmp_path, None, None)
    config = read_text(tmp_path / SERVER_CONF)
    predictor = direct_predictor(tiny_models[model])

    feed_names = predictor.get_input_names()
    assert [v.name for v in config.feed_var] == feed_names
    assert [list(v.shape) for v in config.feed_var] == [FEED_SHAPES[n] for n in feed_names]
    assert {v.feed_type for v in config.feed_var} == {SERVING_TYPE_CODES["float32"]}
    outputs = run_direct(predictor, random_feed(predictor.get_input_names()))
    assert [v.name for v in config.fetch_var] == predictor.get_output_names()
    for var, output in zip(config.fetch_var, outputs, strict=True):
        assert var.fetch_type == SERVING_TYPE_CODES[str(output.dtype)]
        assert list(var.shape) == list(output.shape[1:])
        assert var.alias_name == var.name  # no patch given


def test_text_and_binary_twins_round_trip(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    patch = ROOT / "prototxt_patches/traffic_light.yml"
    convert(tiny_models["pir/detector"], tmp_path, patch, None)
    server = read_text(tmp_path / SERVER_CONF)
    for conf in (SERVER_CONF, CLIENT_CONF):
        binary = GeneralModelConfig.FromString(stream_twin(tmp_path / conf).read_bytes())
        assert binary == server
        assert text_format.MessageToString(binary) == (tmp_path / conf).read_text(encoding="utf-8")
    assert [(v.alias_name, v.is_lod_tensor) for v in server.fetch_var] == [
        ("boxes", True), ("boxes_num", False)]


def test_exporting_twice_gives_identical_bytes(tiny_models: dict[str, Path], tmp_path: Path):
    patch = ROOT / "prototxt_patches/peach.yml"
    convert(tiny_models["legacy/classifier"], tmp_path / "first", patch, None)
    convert(tiny_models["legacy/classifier"], tmp_path / "second", patch, None)
    first, second = all_files(tmp_path / "first"), all_files(tmp_path / "second")
    assert first == second
    assert "serving_server/serving_server_conf.stream.prototxt" in first


def test_model_files_infer_cfg_and_checksums_are_written(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    convert(tiny_models["legacy/detector"], tmp_path, None, None)
    assert verify_checksums(tmp_path / "serving_server") == [
        "infer_cfg.yml", "inference.pdiparams", "inference.pdmodel",
        "serving_server_conf.prototxt", "serving_server_conf.stream.prototxt"]
    assert (tmp_path / "serving_server/infer_cfg.yml").read_text(encoding="utf-8") == INFER_CFG
    # re-exporting another format into the same place leaves no stale program behind
    convert(tiny_models["pir/detector"], tmp_path, None, None)
    programs = sorted(p.name for p in (tmp_path / "serving_server").glob("inference.*"))
    assert programs == ["inference.json", "inference.pdiparams"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_predictor_serves_what_paddle_inference_computes(
    tiny_models: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    patches = {"classifier": ROOT / "prototxt_patches/peach.yml", "detector": tmp_path / "pos.yml"}
    patches["detector"].write_text(POSITION_PATCH, encoding="utf-8")
    for net, patch in patches.items():
        model_dir = tiny_models[f"{fmt}/{net}"]
        convert(model_dir, tmp_path / net, patch, None)
        served = LocalPredictor()
        served.load_model_config(str(tmp_path / net / "serving_server"), use_gpu=False,
                                 thread_num=1, mem_optim=fmt == "legacy")
        predictor = direct_predictor(model_dir)
        feed = random_feed(predictor.get_input_names())
        expected = run_direct(predictor, feed)
        fetched = served.predict(feed=dict(feed), fetch=served.fetch_names_, batch=True)
        assert list(fetched) == served.fetch_names_ != predictor.get_output_names()
        for alias, want in zip(served.fetch_names_, expected, strict=True):
            assert fetched[alias].dtype == want.dtype
            assert np.abs(fetched[alias] - want).max() <= 1e-5


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_logs_what_it_read_patched_and_wrote(tiny_models: dict[str, Path], tmp_path: Path):
    done = run_cli(str(tiny_models["pir/classifier"]), "--patch", "prototxt_patches/peach.yml",
                   "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "read PIR model" in done.stderr
    assert '"fetch_name_0" -> "prediction"' in done.stderr
    assert f"wrote {tmp_path}/serving_server/serving_server_conf.prototxt" in done.stderr


def test_cli_checks_the_patched_aliases_against_the_description(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """--model: the description's feeds and fetches must be the patched config's aliases."""
    source = str(tiny_models["pir/classifier"])
    args = ["--patch", "prototxt_patches/peach.yml", "--model", "models/peach"]
    matching = run_cli(source, *args, "--out", str(tmp_path / "ok"))
    assert matching.returncode == 0, matching.stderr
    assert "feeds and fetches match" in matching.stderr
    description = tmp_path / "described"
    description.mkdir()
    (description / "label_list.txt").write_text("0 a\n1 b\n")
    (description / "model.yml").write_text((ROOT / "models/peach/model.yml").read_text()
                                           .replace("fetches: [prediction]", "fetches: [probs]"))
    refused = run_cli(source, "--patch", "prototxt_patches/peach.yml", "--model",
                      str(description), "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert (f"{description}/model.yml: fetches ['probs'] do not match the serving config's "
            "fetch aliases ['prediction']") in refused.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["no/such/folder", "--out", "x"], "no/such/folder: no such folder"),
        (["models", "--out", "x"], "expected exactly one program file"),
        (["some.pdparams", "--out", "x"], "pass its model config with --config"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(args: list[str], complaint: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("program", "content"), [("inference.pdmodel", b"garbage"),
                                                  ("inference.json", b'{"broken": ')])
def test_unreadable_program_is_reported_with_its_path(tmp_path: Path, program: str, content: bytes):
    model = tmp_path / "model"
    model.mkdir()
    (model / program).write_bytes(content)
    (model / "inference.pdiparams").write_bytes(b"")
    with pytest.raises(ExportError, match="paddle cannot load this program") as error:
        convert(model, tmp_path / "out", None, None)
    assert str(model / program) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_checkpoint_config_picks_the_toolkit(tmp_path: Path) -> None:
    (tmp_path / "base.yml").write_text("architecture: YOLOv3\n", encoding="utf-8")
    (tmp_path / "det.yml").write_text("_BASE_: [base.yml]\nweights: w\n", encoding="utf-8")
    (tmp_path / "cls.yml").write_text("Global: {}\nArch: {name: PPLCNetV2_base}\n",
                                      encoding="utf-8")
    (tmp_path / "other.yml").write_text("model: something\n", encoding="utf-8")
    assert checkpoint_exporter(tmp_path / "det.yml") == "export.detector_checkpoint"
    assert checkpoint_exporter(tmp_path / "cls.yml") == "export.classifier_checkpoint"
    with pytest.raises(ExportError, match="cannot tell the toolkit"):
        checkpoint_exporter(tmp_path / "other.yml")
