"""CI smoke test of the shipped default models: both services on free ports, driven by the two
client scripts over HTTP and RPC with freshly generated validation images; the predictions must be
right, bad input must be refused without harming the service, and stop must leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_helpers import ROOT, Services, in_process_results, run_client

from serving.control.manager import free_ports
from serving.protocol import http_url, post_http

pytestmark = pytest.mark.service
IMAGES_PER_MODEL = 20
SEED = 20240917  # not a training seed: images the models have never seen
CLASSIFIER_ACCURACY = 0.95
# Ground-truth lights found with IoU >= 0.5 and the right class. "Found" = the best-scoring
# returned box on the light (IoU >= 0.5) has the right class: a second, contradicting box (say
# RedLeft 0.55 beside RedRight 0.52 on one light) does not count as knowing the answer.
DETECTOR_RECALL = 0.80
IOU = 0.5
CLIENT_BATCH = 4


def _require_shipped_models() -> None:
    missing = [name for name in ("peach", "traffic_light")
               if not any((ROOT / "models" / name / "inference").glob("*.pdiparams"))]
    if missing:
        pytest.skip(f"no shipped inference model for {missing} in models/*/inference "
                    "(`make train` produces them)")


def _peach_images(folder: Path) -> dict[str, str]:
    from train.peach_data import generate_samples

    truth = {}
    for index, sample in enumerate(generate_samples("val", IMAGES_PER_MODEL, SEED)):
        path = folder / f"{index:02d}.jpg"
        path.write_bytes(sample.jpeg)
        truth[path.name] = sample.label
    return truth


def _traffic_light_images(folder: Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    from train.traffic_light_data import DatasetSpec, render_scene

    difficulty = next(s.difficulty for s in DatasetSpec().splits() if s.name == "valid")
    truth = {}
    for index in range(IMAGES_PER_MODEL):
        image, lights = render_scene(np.random.default_rng([SEED, index]), difficulty)
        path = folder / f"{index:02d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth[path.name] = [(light.label, light.box) for light in lights]
    return truth


def iou(a: list[float] | tuple[int, ...], b: list[float] | tuple[int, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    overlap = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def _predict(transport: str, name: str, port: int, folder: Path) -> dict[str, list[dict]]:
    done = run_client(transport, name, port, "--json", "--batch", str(CLIENT_BATCH), str(folder))
    assert done.returncode == 0, f"{transport} client on {name}: {done.stderr}"
    return {Path(o["image"]).name: o["predictions"] for o in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    _require_shipped_models()
    ports = free_ports(4)
    running = Services(ROOT / "models", tmp_path_factory.mktemp("build"),
                       {"peach": (ports[0], ports[1]), "traffic_light": (ports[2], ports[3])})
    pgids: list[int] = []
    try:
        started = running.cli("start", "--timeout", "600")
        pgids = [record["pid"] for record in running.records()]
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        stopped = running.cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not running.leftovers(pgids), "processes or ports left after stop"


def _in_process(services: Services, name: str, folder: Path) -> dict[str, list[dict]]:
    """The same images, batched as the client batches them, predicted in this process."""
    images = sorted(folder.iterdir())
    expected = {}
    for start in range(0, len(images), CLIENT_BATCH):
        group = images[start:start + CLIENT_BATCH]
        results = in_process_results(services.models_dir, services.build_dir, name,
                                     [image.read_bytes() for image in group])
        expected.update(zip((image.name for image in group), results.values(), strict=True))
    return expected


@pytest.mark.parametrize("transport", ["http", "rpc"])
@pytest.mark.parametrize("name", ["peach", "traffic_light"])
def test_shipped_models_answer_as_in_process(services: Services, tmp_path: Path, name: str,
                                             transport: str) -> None:
    make_images = _peach_images if name == "peach" else _traffic_light_images
    make_images(tmp_path)
    port = services.ports[name][0 if transport == "http" else 1]
    served = _predict(transport, name, port, tmp_path)
    expected = _in_process(services, name, tmp_path)
    assert sorted(served) == sorted(expected) and len(served) == IMAGES_PER_MODEL
    if name == "peach":
        assert all(served[image] for image in served), "every image gets its top-k"
    for image, ours in expected.items():
        assert len(served[image]) == len(ours), image
        for got, want in zip(served[image], ours, strict=True):
            assert got["class_id"] == want["class_id"], image
            assert got["score"] == pytest.approx(want["score"], abs=1e-5), image
            if "bbox" in want:
                np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-3)


@pytest.mark.parametrize("transport", ["http", "rpc"])
def test_classifier_labels_generated_peaches(services: Services, tmp_path: Path,
                                             transport: str) -> None:
    truth = _peach_images(tmp_path)
    port = services.ports["peach"][0 if transport == "http" else 1]
    predictions = _predict(transport, "peach", port, tmp_path)
    correct = sum(predictions[name][0]["label"] == label for name, label in truth.items())
    assert correct / len(truth) >= CLASSIFIER_ACCURACY, f"{correct}/{len(truth)} correct"


@pytest.mark.parametrize("transport", ["http", "rpc"])
def test_detector_finds_generated_lights(services: Services, tmp_path: Path,
                                         transport: str) -> None:
    truth = _traffic_light_images(tmp_path)
    port = services.ports["traffic_light"][0 if transport == "http" else 1]
    predictions = _predict(transport, "traffic_light", port, tmp_path)
    found = total = 0
    for name, lights in truth.items():
        for label, box in lights:
            total += 1
            on_light = [p for p in predictions[name] if iou(p["bbox"], box) >= IOU]
            found += bool(on_light) and max(on_light, key=lambda p: p["score"])["label"] == label
    assert total and found / total >= DETECTOR_RECALL, f"{found}/{total} lights found"


def test_non_image_is_refused_and_the_service_keeps_answering(services: Services,
                                                              tmp_path: Path) -> None:
    truth = _peach_images(tmp_path)
    for name, (http_port, _) in services.ports.items():
        url = http_url("127.0.0.1", http_port, name)
        refused = post_http(url, {"image": "bm90IGFuIGltYWdl"}, timeout=60)  # "not an image"
        assert refused["err_no"] != 0 and "not a decodable image" in refused["err_msg"]
        after = run_client("http", name, http_port, str(tmp_path / next(iter(truth))))
        assert after.returncode == 0, after.stderr
