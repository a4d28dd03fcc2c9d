"""Each paddle2onnx and OpenVINO fix is needed (the upstream failure is reproduced without it, in a
child interpreter with the fixes off, or by calling upstream directly) and works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from upstream import ROOT, run_python

from compat.openvino import EXACT_PRECISION
from compat.paddle2onnx import float_attributes
from export.model_io import find_inference_model
from export.onnx import export_onnx
from export.onnx_models import engine_model, image_feeds
from export.parity import check_parity
from model.spec import ModelSpec

pytestmark = pytest.mark.integration  # a child interpreter or a real model each

# A one-op PIR program (paddle 3 saves PIR json) exported with paddle2onnx; prints the ONNX
# model's nodes as JSON lines {op, attributes}. paddle2onnx ends the process (sys.exit) when the
# conversion fails.
ONE_OP_EXPORT = """
import json, tempfile
from pathlib import Path
import paddle, paddle2onnx
from paddle.nn import functional
from paddle.static import InputSpec

class OneOp(paddle.nn.Layer):
    def forward(self, x):
        return {op}

folder = Path(tempfile.mkdtemp())
static = paddle.jit.to_static(OneOp(), input_spec=[InputSpec([1, 2, 4, 4], "float32", "x")],
                              full_graph=True)
paddle.jit.save(static, str(folder / "m"))
paddle2onnx.export(str(folder / "m.json"), str(folder / "m.pdiparams"),
                   save_file=str(folder / "m.onnx"), opset_version=13)
import onnx
for node in onnx.load(str(folder / "m.onnx")).graph.node:
    print(json.dumps({{"op": node.op_type, "attributes": {{
        a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
        if a.type == onnx.AttributeProto.FLOAT}}}}))
"""
LEAKY_RELU = ONE_OP_EXPORT.format(op="functional.leaky_relu(x, 0.1)")
UPSAMPLE = ONE_OP_EXPORT.format(op="functional.interpolate(x, scale_factor=2, mode='nearest')")


def run_script(code: str, folder: Path, with_compat: bool = True
               ) -> subprocess.CompletedProcess[str]:
    """`code` from a file (paddle.jit.to_static reads the layer's source)."""
    script = folder / ("upstream.py" if not with_compat else "fixed.py")
    script.write_text(code)
    return run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')",
                      with_compat=with_compat)


def onnx_nodes(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_leaky_relu_slope_is_silently_lost_upstream_and_kept_with_the_fix(tmp_path: Path
                                                                          ) -> None:
    broken = run_script(LEAKY_RELU, tmp_path, with_compat=False)
    fixed = run_script(LEAKY_RELU, tmp_path)
    assert broken.returncode == 0 and fixed.returncode == 0, broken.stderr + fixed.stderr
    (upstream,) = [n for n in onnx_nodes(broken.stdout) if n["op"] == "LeakyRelu"]
    (ours,) = [n for n in onnx_nodes(fixed.stdout) if n["op"] == "LeakyRelu"]
    # the double read as a float gives whatever bits lie there (2.5e-43 and 1.0e-26 seen), and
    # no error is raised
    assert upstream["attributes"]["alpha"] != pytest.approx(0.1, rel=1e-3)
    assert ours["attributes"]["alpha"] == pytest.approx(0.1)


def test_upsampling_scale_fails_upstream_and_converts_with_the_fix(tmp_path: Path) -> None:
    broken = run_script(UPSAMPLE, tmp_path, with_compat=False)
    assert broken.returncode != 0
    assert "MUST be ir::FloatAttribute" in broken.stdout + broken.stderr
    fixed = run_script(UPSAMPLE, tmp_path)
    assert "Resize" in [node["op"] for node in onnx_nodes(fixed.stdout)], fixed.stderr[-2000:]


def test_only_the_attributes_read_as_float_become_float32(tmp_path: Path) -> None:
    program = tmp_path / "in.json"
    ops = [{"#": "1.leaky_relu", "A": [{"N": "negative_slope",
                                        "AT": {"#": "0.a_f64", "D": 0.1}}]},
           {"#": "1.nearest_interp", "A": [{"N": "scale", "AT": {"#": "0.a_array", "D": [
               {"#": "0.a_f64", "D": 2.0}, {"#": "0.a_f64", "D": 2.0}]}}]},
           {"#": "1.full", "A": [{"N": "value", "AT": {"#": "0.a_f64", "D": 0.1}}]}]
    program.write_text(json.dumps({"program": {"regions": [{"blocks": [{"ops": ops}]}]}}))
    patched = float_attributes(program, tmp_path / "out.json")
    leaky, interp, full = json.loads(patched.read_text())["program"]["regions"][0]["blocks"][0][
        "ops"]
    assert leaky["A"][0]["AT"] == {"#": "0.a_f32", "D": float(np.float32(0.1))}
    assert [e["#"] for e in interp["A"][0]["AT"]["D"]] == ["0.a_f32", "0.a_f32"]
    assert full["A"][0]["AT"] == {"#": "0.a_f64", "D": 0.1}  # paddle2onnx reads it as double
    program.write_text(json.dumps({"program": {"regions": [{"blocks": [{"ops": [full]}]}]}}))
    assert float_attributes(program, tmp_path / "out.json") == program


POLYGRAPHY_SWITCH = """
import os, tempfile
from pathlib import Path
import paddle2onnx
folder = Path(tempfile.mkdtemp())
paddle2onnx.export("models/peach/inference/inference.json",
                   "models/peach/inference/inference.pdiparams",
                   save_file=str(folder / "m.onnx"), opset_version=13)
print("autoinstall", os.environ.get("POLYGRAPHY_AUTOINSTALL_DEPS"))
"""


def pip_freeze() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True,
                          text=True, check=True, timeout=120).stdout


def test_export_tells_nothing_to_install_packages_and_leaves_the_venv_unchanged() -> None:
    broken = run_python(POLYGRAPHY_SWITCH, with_compat=False)
    assert "autoinstall 1" in broken.stdout, broken.stderr[-2000:]  # polygraphy would pip-install
    before = pip_freeze()
    fixed = run_python(POLYGRAPHY_SWITCH)
    assert "autoinstall None" in fixed.stdout, fixed.stderr[-2000:]
    assert pip_freeze() == before


@pytest.fixture(scope="module")
def traffic_light_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped detector's Paddle files with its ONNX translation beside them."""
    folder = tmp_path_factory.mktemp("traffic_light")
    model = find_inference_model(ROOT / "models" / "traffic_light" / "inference")
    for path in model.files:
        (folder / path.name).write_bytes(path.read_bytes())
    export_onnx(model, folder / "inference.onnx")
    return folder


def test_the_nms_graph_answers_one_image_per_call_so_engines_run_it_per_image(
        traffic_light_onnx: Path) -> None:
    import onnxruntime

    spec = ModelSpec.load(ROOT / "models" / "traffic_light")
    paddle = engine_model(spec, traffic_light_onnx, "paddle").load()
    batch = image_feeds(paddle, spec.sample_images(4), per_call=4)
    session = onnxruntime.InferenceSession(str(traffic_light_onnx / "inference.onnx"))
    with pytest.raises(Exception, match="Concat"):  # upstream: the graph itself, 4 images
        session.run(None, batch[0])
    ours = engine_model(spec, traffic_light_onnx, "onnxruntime").load()
    report = check_parity(paddle.engine, ours.engine, batch, spec.task)
    assert report.passed and report.images == 4 and report.boxes > 0, vars(report)


def bf16_host() -> bool:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags")).split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.skipif(not bf16_host(), reason="OpenVINO runs FP32 as BF16 only on CPUs with "
                    "AVX512_BF16 or AMX; this one has neither")
def test_openvino_runs_fp32_as_bf16_unless_told_f32(tmp_path: Path) -> None:
    import openvino

    spec = ModelSpec.load(ROOT / "models" / "peach")
    model = find_inference_model(spec.inference_dir)
    onnx_path = export_onnx(model, tmp_path / "inference.onnx")
    for path in model.files:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    paddle = engine_model(spec, tmp_path, "paddle").load()
    (feed,) = image_feeds(paddle, spec.sample_images(8), per_call=8)
    want = paddle.engine.run(feed)[0]
    core = openvino.Core()
    differences = {}
    for label, config in (("default", {}), ("f32", EXACT_PRECISION)):
        compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        got = np.array(compiled.create_infer_request().infer(feed)[compiled.outputs[0]])
        differences[label] = float(np.abs(got - want).max())
    assert differences["default"] > 1e-3 and differences["f32"] <= 1e-5, differences
