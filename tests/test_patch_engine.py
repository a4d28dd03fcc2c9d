"""The prototxt patch engine on serving folders written from the tutorials' text (older Serving)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from google.protobuf import text_format
from paddle_serving_app.proto.general_model_config_pb2 import GeneralModelConfig

from export.checksums import MANIFEST_NAME, verify_checksums
from export.convert import convert
from export.errors import ExportError
from export.patch import load_patch
from export.serving_folder import CLIENT_CONF, SERVER_CONF, stream_twin

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "prototxt_patches"

# The traffic-light tutorial (seeds/000): PaddleDetection `--export_serving_model=True` output,
# before the hand edit to `is_lod_tensor: true`; the box count named as PaddleDetection 2.x does.
TUTORIAL_TRAFFIC_LIGHT_CONF = """\
feed_var {
  name: "im_shape"
  alias_name: "im_shape"
  is_lod_tensor: false
  feed_type: 1
  shape: 2
}
feed_var {
  name: "image"
  alias_name: "image"
  is_lod_tensor: false
  feed_type: 1
  shape: 3
  shape: 608
  shape: 608
}
feed_var {
  name: "scale_factor"
  alias_name: "scale_factor"
  is_lod_tensor: false
  feed_type: 1
  shape: 2
}
fetch_var {
  name: "multiclass_nms3_0.tmp_0"
  alias_name: "multiclass_nms3_0.tmp_0"
  is_lod_tensor: false
  fetch_type: 1
  shape: 6
}
fetch_var {
  name: "multiclass_nms3_0.tmp_2"
  alias_name: "multiclass_nms3_0.tmp_2"
  is_lod_tensor: false
  fetch_type: 2
}
"""

# The peach tutorial (seeds/004): paddle_serving_client.convert output of an older paddle.
TUTORIAL_PEACH_CONF = """\
feed_var {
  name: "x"
  alias_name: "x"
  is_lod_tensor: false
  feed_type: 1
  shape: 3
  shape: 224
  shape: 224
}
fetch_var {
  name: "softmax_1.tmp_0"
  alias_name: "softmax_1.tmp_0"
  is_lod_tensor: false
  fetch_type: 1
  shape: 4
}
"""


def write_old_serving_folder(root: Path, conf_text: str) -> Path:
    """A serving folder as older Serving wrote it: text confs, binary twins, model files."""
    for conf in (SERVER_CONF, CLIENT_CONF):
        path = root / conf
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(conf_text, encoding="utf-8")
        config = text_format.Parse(conf_text, GeneralModelConfig())
        stream_twin(path).write_bytes(config.SerializeToString())
    (root / "serving_server" / "model.pdmodel").write_bytes(b"program bytes")
    (root / "serving_server" / "model.pdiparams").write_bytes(b"weight bytes")
    return root


def parse_both(text_path: Path) -> tuple[GeneralModelConfig, GeneralModelConfig]:
    text = text_format.Parse(text_path.read_text(encoding="utf-8"), GeneralModelConfig())
    binary = GeneralModelConfig.FromString(stream_twin(text_path).read_bytes())
    return text, binary


def conf_bytes(root: Path) -> dict[str, bytes]:
    paths = [root / c for c in (SERVER_CONF, CLIENT_CONF)]
    return {str(p): p.read_bytes() for path in paths for p in (path, stream_twin(path))}


@pytest.fixture
def traffic_light_folder(tmp_path: Path) -> Path:
    return write_old_serving_folder(tmp_path / "yolov3_mobilenet_v1_trafficlight",
                                    TUTORIAL_TRAFFIC_LIGHT_CONF)


def test_tutorial_traffic_light_folder_is_patched_in_place_text_and_twins(
    traffic_light_folder: Path,
) -> None:
    convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)

    for conf in (SERVER_CONF, CLIENT_CONF):
        text, binary = parse_both(traffic_light_folder / conf)
        assert text == binary
        boxes, boxes_num = text.fetch_var
        assert (boxes.name, boxes.alias_name, boxes.is_lod_tensor) == (
            "multiclass_nms3_0.tmp_0", "boxes", True)
        assert (boxes_num.name, boxes_num.alias_name, boxes_num.is_lod_tensor) == (
            "multiclass_nms3_0.tmp_2", "boxes_num", False)
        assert [v.alias_name for v in text.feed_var] == ["im_shape", "image", "scale_factor"]
        assert list(text.feed_var[1].shape) == [3, 608, 608]  # untouched by the patch
    assert verify_checksums(traffic_light_folder / "serving_server") == [
        "model.pdiparams", "model.pdmodel", "serving_server_conf.prototxt",
        "serving_server_conf.stream.prototxt"]


def test_patching_twice_changes_nothing(traffic_light_folder: Path, caplog) -> None:
    convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)
    first = conf_bytes(traffic_light_folder)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="export"):
        convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)
    assert conf_bytes(traffic_light_folder) == first
    patch_lines = [r.getMessage() for r in caplog.records if "traffic_light.yml" in r.getMessage()]
    assert patch_lines and all("already" in line for line in patch_lines)
    assert any(MANIFEST_NAME in r.getMessage() and "verified" in r.getMessage()
               for r in caplog.records)


def test_patch_to_out_leaves_the_source_untouched(traffic_light_folder: Path, tmp_path: Path):
    before = conf_bytes(traffic_light_folder)
    out = tmp_path / "patched"
    convert(traffic_light_folder, out, PATCHES / "traffic_light.yml", None)
    assert conf_bytes(traffic_light_folder) == before
    assert parse_both(out / SERVER_CONF)[0].fetch_var[0].alias_name == "boxes"
    assert (out / "serving_server" / "model.pdiparams").read_bytes() == b"weight bytes"


def test_tutorial_peach_folder_gets_the_prediction_alias(tmp_path: Path) -> None:
    folder = write_old_serving_folder(tmp_path / "peach", TUTORIAL_PEACH_CONF)
    convert(folder, None, PATCHES / "peach.yml", None)
    text, binary = parse_both(folder / CLIENT_CONF)
    assert text == binary
    assert [(v.name, v.alias_name) for v in text.fetch_var] == [("softmax_1.tmp_0", "prediction")]


def test_patch_naming_a_missing_variable_lists_the_existing_ones(tmp_path: Path) -> None:
    folder = write_old_serving_folder(tmp_path / "peach", TUTORIAL_PEACH_CONF)
    before = conf_bytes(folder)
    with pytest.raises(ExportError) as error:
        convert(folder, None, PATCHES / "traffic_light.yml", None)
    message = str(error.value)
    assert "multiclass_nms3_0.tmp_0" in message  # what the patch wanted
    assert "[0] softmax_1.tmp_0" in message  # what exists
    assert conf_bytes(folder) == before


def test_position_cross_checks_the_names(traffic_light_folder: Path, tmp_path: Path) -> None:
    swapped = tmp_path / "swapped.yml"
    swapped.write_text("fetch_var:\n  - match: {names: [multiclass_nms3_0.tmp_0], position: 1}\n"
                       "    set: {alias_name: boxes}\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"\[1\] multiclass_nms3_0.tmp_2"):
        convert(traffic_light_folder, None, swapped, None)


def test_malformed_prototxt_error_names_the_file(traffic_light_folder: Path) -> None:
    conf = traffic_light_folder / SERVER_CONF
    conf.write_text(TUTORIAL_TRAFFIC_LIGHT_CONF.replace("fetch_type: 2", "fetch_type two"),
                    encoding="utf-8")
    with pytest.raises(ExportError, match="not a valid GeneralModelConfig") as error:
        convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)
    assert str(conf) in str(error.value)


@pytest.mark.parametrize(
    ("patch_text", "complaint"),
    [
        ("fetch_var: [\n", "not valid YAML"),
        ("fetch_vars: []\n", "feed_var` and/or `fetch_var"),
        ("fetch_var:\n  - match: {position: 0}\n    set: {name: boxes}\n", "cannot be patched"),
        ("fetch_var:\n  - match: {position: 0}\n    set: {is_lod_tensor: 'yes'}\n", "bool"),
        ("fetch_var:\n  - match: {position: -1}\n    set: {alias_name: a}\n", "position"),
        ("fetch_var:\n  - set: {alias_name: a}\n", "exactly the keys `match` and `set`"),
    ],
)
def test_malformed_patch_error_names_the_file(tmp_path: Path, patch_text: str, complaint: str):
    patch = tmp_path / "bad.yml"
    patch.write_text(patch_text, encoding="utf-8")
    with pytest.raises(ExportError, match=complaint) as error:
        load_patch(patch)
    assert str(patch) in str(error.value)


@pytest.mark.parametrize(
    ("patch_text", "complaint"),
    [  # LocalPredictor looks feed types up by alias but feeds by real name
        ("feed_var:\n  - match: {names: [image]}\n    set: {alias_name: picture}\n",
         "feed alias_name must equal the real input name"),
        # one fetch found by real name, the other by nothing: LocalPredictor would drop it
        ("fetch_var:\n  - match: {position: 0}\n    set: {alias_name: boxes}\n", "mix real output"),
        ("fetch_var:\n  - match: {position: 0}\n    set: {alias_name: multiclass_nms3_0.tmp_2}\n",
         "duplicate fetch alias_name"),
    ],
)
def test_patches_that_local_predictor_would_misserve_are_refused(
    traffic_light_folder: Path, tmp_path: Path, patch_text: str, complaint: str
) -> None:
    patch = tmp_path / "risky.yml"
    patch.write_text(patch_text, encoding="utf-8")
    with pytest.raises(ExportError, match=complaint):
        convert(traffic_light_folder, None, patch, None)


def test_tampered_model_file_fails_the_manifest_check(traffic_light_folder: Path) -> None:
    convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)
    server = traffic_light_folder / "serving_server"
    (server / "model.pdiparams").write_bytes(b"other weights")
    (server / "extra.pdmodel").write_bytes(b"a second program")
    (server / "model.pdmodel").unlink()
    with pytest.raises(ExportError) as error:
        verify_checksums(server)
    message = str(error.value)
    assert "modified: model.pdiparams" in message
    assert "not in the manifest: extra.pdmodel" in message
    assert "missing: model.pdmodel" in message


def test_an_edited_alias_or_a_file_in_a_subfolder_fails_the_manifest_check(
        traffic_light_folder: Path) -> None:
    """The configs (patched first) and every subfolder are checksummed too: an alias edited by
    hand after the export would make the service read another output."""
    convert(traffic_light_folder, None, PATCHES / "traffic_light.yml", None)
    server = traffic_light_folder / "serving_server"
    conf = server / "serving_server_conf.prototxt"
    conf.write_text(conf.read_text().replace('alias_name: "boxes"', 'alias_name: "other"'))
    (server / "variables").mkdir()
    (server / "variables" / "weights").write_bytes(b"loaded by some engines")
    with pytest.raises(ExportError) as error:
        verify_checksums(server)
    assert "modified: serving_server_conf.prototxt" in str(error.value)
    assert "not in the manifest: variables/weights" in str(error.value)
