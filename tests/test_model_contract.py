"""The model contract's pure parts: descriptions, request checks, pre- and postprocessing, error
codes (no engine, no Paddle Serving)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from model.errors import CODES, RequestError, http_status, outcome
from model.model import Model, stack_padded
from model.postprocess import Detection, Postprocessor, TopK, build_postprocessor
from model.preprocess import use_image_threads
from model.request import Limits, check_image_header, decode_base64, image_keys
from model.spec import ModelSpec, ModelSpecError, read_labels

ROOT = Path(__file__).resolve().parents[1]
INFER_CFG = {"Preprocess": [
    {"type": "Resize", "target_size": [320, 320], "keep_ratio": False, "interp": 2},
    {"type": "NormalizeImage", "is_scale": True, "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225]},
    {"type": "Permute"}]}


def jpeg(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def model_copy(tmp_path: Path) -> callable:
    """Copy a shipped description (without weights) into a temp folder."""

    def copy(name: str, infer_cfg: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in ("model.yml", "label_list.txt"):
            shutil.copy(ROOT / "models" / name / file, folder / file)
        (folder / "inference").mkdir()
        if infer_cfg:
            (folder / "inference" / "infer_cfg.yml").write_text(yaml.safe_dump(INFER_CFG))
        return folder

    return copy


def test_shipped_descriptions_load_with_paths_relative_to_their_folder(model_copy) -> None:
    peach = ModelSpec.load(ROOT / "models" / "peach")
    assert peach.labels == ("R0", "B1", "M2", "S3")
    assert peach.inference_dir == ROOT / "models" / "peach" / "inference"
    assert peach.feeds == {"x": "image"} and peach.fetches == ("prediction",)
    assert (peach.service.http_port, peach.service.rpc_port) == (18080, 9993)
    lights = ModelSpec.load(ROOT / "models" / "traffic_light" / "model.yml")
    assert len(lights.labels) == 8 and lights.postprocess.type == "Detection"
    assert (lights.service.http_port, lights.service.rpc_port) == (18093, 9994)

    moved = ModelSpec.load(model_copy("peach"))
    assert moved.inference_dir == moved.folder / "inference" != peach.inference_dir


def test_detector_preprocessing_is_read_from_infer_cfg(model_copy, tmp_path: Path) -> None:
    spec = ModelSpec.load(model_copy("traffic_light", infer_cfg=True))
    assert [s["type"] for s in spec.preprocess_steps()] == ["Resize", "NormalizeImage", "Permute"]
    serving_server = tmp_path / "serving_server"
    serving_server.mkdir()
    (serving_server / "infer_cfg.yml").write_text(yaml.safe_dump(
        {"Preprocess": [{"type": "Permute"}]}))
    assert spec.preprocess_steps(serving_server) == [{"type": "Permute"}]  # serving copy wins
    (spec.inference_dir / "infer_cfg.yml").unlink()
    with pytest.raises(ModelSpecError, match=r"infer_cfg\.yml"):
        spec.preprocess_steps()


def test_bad_descriptions_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no model description"):
        ModelSpec.load(tmp_path)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    raw = yaml.safe_load((ROOT / "models/peach/model.yml").read_text())
    raw["labels"] = "labels.txt"
    with pytest.raises(ModelSpecError, match="unknown sources"):
        ModelSpec.from_mapping({**raw, "feeds": {"x": "pixels"}}, tmp_path)
    with pytest.raises(ModelSpecError, match="missing required field 'fetches'"):
        ModelSpec.from_mapping({k: v for k, v in raw.items() if k != "fetches"}, tmp_path)


def test_label_lists_in_both_toolkit_formats(tmp_path: Path) -> None:
    (tmp_path / "clas.txt").write_text("1 big one\n0 small\n")
    (tmp_path / "det.txt").write_text("Red\nGreen Left\n\n")
    assert read_labels(tmp_path / "clas.txt") == ("small", "big one")
    assert read_labels(tmp_path / "det.txt") == ("Red", "Green Left")


def test_image_keys_accept_both_client_shapes_in_index_order() -> None:
    assert image_keys({"image": "x"}) == ["image"]
    assert image_keys({"image_10": 1, "image_2": 1, "pipeline.profile": 1}) == \
        ["image_2", "image_10"]
    with pytest.raises(RequestError, match="no image in the request"):
        image_keys({})
    with pytest.raises(RequestError, match=r"unknown key\(s\) \['img'\]") as refused:
        image_keys({"img": "x", "image": "y"})
    assert refused.value.err_no == 5002
    with pytest.raises(RequestError, match="3 images in one request; the limit is 2"):
        image_keys({"image_0": 1, "image_1": 1, "image_2": 1}, max_images=2)


def test_base64_one_line_wrapped_or_bytes_decode_alike_and_size_counts_without_breaks(
        ) -> None:
    data = jpeg(64, 64)
    wrapped = base64.encodebytes(data).decode()  # MIME style: a line break every 76 chars
    assert "\n" in wrapped
    for value in (b64(data), wrapped, b64(data).encode(), f" {b64(data)}\n"):
        assert decode_base64("image", value) == data
    # the limit applies to the image bytes: line breaks do not push it over
    exact = Limits(max_image_bytes=len(data))
    assert decode_base64("image", wrapped, exact) == data
    with pytest.raises(RequestError, match=r"image: about \d+ bytes; the limit is 3000"):
        decode_base64("image", b64(data), Limits(max_image_bytes=3000))
    with pytest.raises(RequestError, match="image: invalid base64"):
        decode_base64("image", b64(data)[:-2] + "*=")


def unloaded_model(folder: Path) -> Model:
    """A described model without its engine: pre- and postprocessing only."""
    return Model(ModelSpec.load(folder), folder / "inference")


def test_classifier_model_batches_images_and_rejects_bad_ones(model_copy) -> None:
    model = unloaded_model(model_copy("peach"))
    prepared = model.preprocess({"image_0": b64(jpeg(300, 400)),
                                 "image_1": b64(jpeg(256, 256))})
    assert prepared.keys == ["image_0", "image_1"]
    feed = model.feed(prepared.samples)
    assert feed["x"].shape == (2, 3, 224, 224) and feed["x"].dtype == np.float32
    with pytest.raises(RequestError, match="image: invalid base64"):
        model.preprocess({"image": "%%% not base64 %%%"})
    with pytest.raises(RequestError, match="image_0: not a decodable image"):
        model.preprocess({"image_0": b64(b"GIF89a but not really")})
    with pytest.raises(RequestError, match="empty value"):
        model.preprocess({"image": ""})
    with pytest.raises(RuntimeError, match=r"predict\(\) before load\(\)"):
        model.predict(prepared.samples)


def test_detector_model_feeds_shape_and_scale_per_image(model_copy) -> None:
    model = unloaded_model(model_copy("traffic_light", infer_cfg=True))
    prepared = model.preprocess({"image_0": b64(jpeg(240, 480)), "image_1": b64(jpeg(640, 320))})
    feed = model.feed(prepared.samples)
    assert feed["image"].shape == (2, 3, 320, 320)
    np.testing.assert_allclose(feed["im_shape"], [[320, 320], [320, 320]])
    np.testing.assert_allclose(feed["scale_factor"], [[320 / 240, 320 / 480], [0.5, 1.0]])


def test_stack_padded_pads_bottom_right() -> None:
    batch = stack_padded([np.ones((3, 2, 4), np.float32), np.ones((3, 5, 3), np.float32)])
    assert batch.shape == (2, 3, 5, 4)
    assert batch[0, :, 2:].sum() == 0 and batch[1, :, :, 3].sum() == 0
    assert batch[0, :, :2, :4].min() == 1


def _results(postprocessor: Postprocessor, outputs: dict[str, np.ndarray], count: int
             ) -> list[list[dict]]:
    """What the service answers for a call on `count` images: split, then one result each."""
    return [postprocessor.image_result(part) for part in postprocessor.split(outputs, count)]


def test_topk_orders_by_probability() -> None:
    topk = TopK(["a", "b", "c"], ["prediction"], k=2)
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    result = _results(topk, {"prediction": probabilities}, 2)
    assert [[p["label"] for p in r] for r in result] == [["b", "c"], ["a", "c"]]
    assert result[0][0] == {"class_id": 1, "label": "b", "score": pytest.approx(0.7)}


def test_detection_splits_by_box_count_filters_and_sorts() -> None:
    detect = Detection(["Red", "Green"], ["boxes", "boxes_num"], score_threshold=0.3)
    boxes = np.array([[0, 0.4, 1, 2, 3, 4],     # image 0, grouped by class as NMS writes them
                      [1, 0.9, 5, 6, 7, 8],
                      [0, 0.2, 9, 9, 9, 9],     # below threshold
                      [1, 0.35, 10, 11, 12, 13]], np.float32)  # image 2
    result = _results(detect, {"boxes": boxes, "boxes_num": np.array([3, 0, 1], np.int32)}, 3)
    assert [[p["score"] for p in r] for r in result] == [
        [pytest.approx(0.9), pytest.approx(0.4)], [], [pytest.approx(0.35)]]
    assert result[0][0] == {"class_id": 1, "label": "Green", "score": pytest.approx(0.9),
                            "bbox": [5.0, 6.0, 7.0, 8.0]}
    parts = detect.split({"boxes": boxes, "boxes_num": np.array([3, 0, 1], np.int32)}, 3)
    assert [len(part) for part in parts] == [3, 0, 1]  # what a batched Op hands each request
    with pytest.raises(ValueError, match="inconsistent"):
        detect.split({"boxes": boxes, "boxes_num": np.array([5], np.int32)}, 1)
    empty = _results(detect, {"boxes": np.zeros((0, 6), np.float32),
                              "boxes_num": np.array([0])}, 1)
    assert empty == [[]]
    assert json.loads(json.dumps(result))  # JSON-ready


def test_unknown_postprocessor_is_refused() -> None:
    with pytest.raises(ValueError, match="known: \\['Detection', 'TopK'\\]"):
        build_postprocessor("Segmentation", ["a"], ["out"], {})


def test_image_threads_set_opencvs_pool() -> None:
    before = cv2.getNumThreads()
    try:
        use_image_threads(1)
        assert cv2.getNumThreads() == 1
        use_image_threads(2)
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_error_codes_are_unique_and_map_to_http_statuses() -> None:
    assert len({c.err_no for c in CODES}) == len({c.name for c in CODES}) == len(CODES)
    assert http_status(0) == 200 and outcome(0) == "ok"
    assert (http_status(5005), outcome(5005)) == (422, "client_error")
    assert (http_status(3001), outcome(3001)) == (503, "rejected")
    assert (http_status(8000), outcome(8000)) == (500, "server_error")  # unlisted upstream code


def test_pixel_limit_is_read_from_the_header_without_decoding() -> None:
    import time
    import zlib

    header_only = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    bomb = bytearray(header_only)
    bomb[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")  # IHDR width, height
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # the chunk's CRC
    started = time.perf_counter()
    with pytest.raises(RequestError, match="exceeds limit") as refused:
        check_image_header("image", bytes(bomb), Limits())
    assert refused.value.err_no == 5008 and time.perf_counter() - started < 0.5
    assert check_image_header("image", jpeg(30, 40), Limits()) == (40, 30)
    with pytest.raises(RequestError, match="40x30 = 1200 pixels; the limit is 1000"):
        check_image_header("image", jpeg(30, 40), Limits(max_image_pixels=1000))


@pytest.mark.integration
def test_load_refuses_a_description_that_names_other_inputs_or_outputs() -> None:
    spec = ModelSpec.load(ROOT / "models" / "peach")
    model_dir = ROOT / "models" / "peach" / "inference"
    with pytest.raises(ModelSpecError, match=r"feeds \['image'\] are not the model's inputs "
                                             r"\['x'\]"):
        Model(dataclasses.replace(spec, feeds={"image": "image"}), model_dir).load()
    with pytest.raises(ModelSpecError, match=r"names 2 fetches \['prediction', 'extra'\] for "
                                             r"the model's 1 outputs"):
        Model(dataclasses.replace(spec, fetches=("prediction", "extra")), model_dir).load()
    loaded = Model(spec, model_dir).load()
    assert loaded.ready
    result = json.loads(loaded({"image": b64(jpeg(256, 256))})["image"])
    assert sorted(entry["label"] for entry in result) == sorted(spec.labels)  # top-4 of 4
    assert result == sorted(result, key=lambda entry: -entry["score"])  # best first
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-4)
