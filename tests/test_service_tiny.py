"""Both pipeline services on tiny random models (seconds to build): the whole serve path
(export -> config.yml -> start -> HTTP/RPC -> clients -> stop), parity of HTTP, RPC and an
in-process predictor, error handling, start-up failure. Accuracy is test_service_smoke.py's job."""

from __future__ import annotations

import base64
import functools
import http.client
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from service_helpers import (
    ENGINE_RUNTIMES,
    Services,
    in_process_results,
    run_client,
    runtime_flags,
    save_tiny_models,
    settled,
)

from bench import stages
from bench.loadgen import parse_http_response
from model.spec import ModelSpec
from serving.control.manager import free_ports
from serving.control.prepare import INPUTS_FILE
from serving.protocol import decode_results, http_url, post_http, request_items
from serving.service_metrics import PUBLISH_EVERY_S

pytestmark = pytest.mark.service
MODELS = ("peach", "traffic_light")
def _jpeg(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.rectangle(pixels, (width // 4, height // 4), (width // 2, height // 2), (30, 30, 220), -1)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    save_tiny_models(models_dir)
    return models_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, (height, width) in enumerate([(240, 320), (480, 360), (300, 300)]):
        paths.append(folder / f"{index}.jpg")
        paths[-1].write_bytes(_jpeg(height, width, index))
    return paths


@pytest.fixture(scope="module")
def services(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Services:
    ports = free_ports(4)
    running = Services(tiny_models, tmp_path_factory.mktemp("build"),
                       {"peach": (ports[0], ports[1]), "traffic_light": (ports[2], ports[3])})
    with running.started("--timeout", "300"):
        yield running


@pytest.fixture(scope="module")
def engines_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build folder for every engine: each start adds the model files it needs."""
    return tmp_path_factory.mktemp("engines_build")


@pytest.fixture(scope="module", params=list(ENGINE_RUNTIMES))
def engine_services(request: pytest.FixtureRequest, tiny_models: Path, engines_build: Path
                    ) -> tuple[Services, dict[str, str]]:
    """Both services on one engine and precision (ENGINE_RUNTIMES), and those settings."""
    runtime = ENGINE_RUNTIMES[request.param]
    ports = free_ports(4)
    running = Services(tiny_models, engines_build,
                       {"peach": (ports[0], ports[1]), "traffic_light": (ports[2], ports[3])})
    with running.started("--timeout", "300", *runtime_flags(runtime)):
        yield running, runtime


def _http(services: Services, name: str, images: list[bytes]) -> dict:
    url = http_url("127.0.0.1", services.ports[name][0], name)
    return post_http(url, request_items(images), timeout=60)


def _rpc(services: Services, name: str, images: list[bytes]) -> dict:
    from paddle_serving_server.pipeline import PipelineClient

    client = PipelineClient()
    client.connect([f"127.0.0.1:{services.ports[name][1]}"])
    reply = client.predict(feed_dict=request_items(images), fetch=None)
    return {"err_no": reply.err_no, "err_msg": reply.err_msg, "key": list(reply.key),
            "value": list(reply.value)}



def _results(reply: dict) -> dict[str, list]:
    assert reply["err_no"] == 0, reply["err_msg"]
    return decode_results(reply["key"], reply["value"])


def test_start_wrote_config_logs_and_records(services: Services) -> None:
    for name in MODELS:
        serving_dir = services.build_dir / "serving" / name
        config = yaml.safe_load((serving_dir / "config.yml").read_text())
        assert (config["http_port"], config["rpc_port"]) == services.ports[name]
        assert config["op"][name]["batch_size"] == 4
        assert "model_config" not in config["op"][name]["local_service_conf"]  # no LocalPredictor
        assert (serving_dir / "PipelineServingLogs" / "pipeline.log").is_file()
        assert (services.build_dir / "logs" / f"{name}.log").is_file()
    assert sorted(r["name"] for r in services.records()) == sorted(MODELS)
    status = services.cli("status")
    assert status.returncode == 0 and status.stdout.count(", ready") == 2, status.stdout


def test_http_rpc_and_in_process_agree(engine_services: tuple[Services, dict[str, str]],
                                       images: list[Path]) -> None:
    services, runtime = engine_services
    data = [image.read_bytes() for image in images]
    for name in MODELS:
        http = _results(_http(services, name, data))
        rpc = _results(_rpc(services, name, data))
        local = in_process_results(services.models_dir, services.build_dir, name, data, runtime)
        assert list(local) == ["image_0", "image_1", "image_2"]
        _assert_same_results(http, local)
        _assert_same_results(rpc, local)


def _assert_same_results(served: dict[str, list], local: dict[str, list]) -> None:
    assert list(served) == list(local)
    for key in served:
        assert len(served[key]) == len(local[key]) > 0
        for theirs, ours in zip(served[key], local[key], strict=True):
            assert theirs["class_id"] == ours["class_id"]
            assert theirs["score"] == pytest.approx(ours["score"], abs=1e-5)
            if "bbox" in ours:
                np.testing.assert_allclose(theirs["bbox"], ours["bbox"], atol=1e-3)


def _closed_loop_clients(port: int, name: str, requests: list[list[bytes]], rounds: int
                         ) -> list[list[dict]]:
    """One keep-alive HTTP client per request, all at once, each sending its request `rounds`
    times in a row; their answers."""
    answers: list[list[dict]] = [[] for _ in requests]

    def client(index: int) -> None:
        items = request_items(requests[index])
        body = json.dumps({"key": list(items), "value": list(items.values())})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(rounds):
            connection.request("POST", f"/{name}/prediction", body,
                               {"Content-Type": "application/json"})
            answers[index].append(json.loads(connection.getresponse().read()))
        connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def _published(port: int, before: stages.Totals, requests: int) -> stages.Totals:
    """The metrics since `before` once every worker published its part of `requests`
    (each worker publishes once a second)."""
    deadline = time.monotonic() + 10 * PUBLISH_EVERY_S
    while True:
        served = stages.scrape(port).since(before)  # type: ignore[union-attr]
        if served.series.get(stages.BATCH, {}).get("count") == requests:
            return served
        assert time.monotonic() < deadline, f"not all {requests} requests published: {served}"
        time.sleep(0.1)


def test_requests_batched_together_each_get_their_own_answer(
        engine_services: tuple[Services, dict[str, str]], images: list[Path]) -> None:
    """Four keep-alive clients in a closed loop (two per worker): the Op merges their requests
    into shared predictor calls, and each answer still equals the in-process one for that
    request alone, whatever the number of images per request."""
    services, runtime = engine_services
    data = [image.read_bytes() for image in images]
    # any two of them fit one predictor call of batch_size 4, however the four connections are
    # spread over the two workers (a 2- and a 3-image request would each need a call of its own)
    requests = [[data[0]], [data[0], data[1], data[2]], [data[2]], [data[1]]]
    rounds = 8
    for name in MODELS:
        port = services.ports[name][0]
        expected = [in_process_results(services.models_dir, services.build_dir, name, request,
                                       runtime) for request in requests]
        before = settled(functools.partial(stages.scrape, port))
        answers = _closed_loop_clients(port, name, requests, rounds)
        for replies, local in zip(answers, expected, strict=True):
            assert len(replies) == rounds
            for reply in replies:
                _assert_same_results(_results(reply), local)
        served = _published(port, before, len(requests) * rounds)  # by both workers
        images_per_call = served.means()[stages.BATCH]
        unbatched = sum(map(len, requests)) / len(requests)  # 1.5: one request per call
        assert images_per_call > unbatched + 0.5, (name, images_per_call)


def test_detector_boxes_are_in_original_pixels_sorted_and_per_image(
        services: Services, images: list[Path]) -> None:
    results = _results(_http(services, "traffic_light", [p.read_bytes() for p in images]))
    threshold = ModelSpec.load(services.models_dir / "traffic_light").postprocess.params[
        "score_threshold"]
    for key, (height, width) in zip(results, [(240, 320), (480, 360), (300, 300)], strict=True):
        scores = [box["score"] for box in results[key]]
        assert scores and scores == sorted(scores, reverse=True)
        assert min(scores) >= threshold
        for box in results[key]:
            x1, y1, x2, y2 = box["bbox"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
    single = _results(_http(services, "traffic_light", [images[1].read_bytes()]))
    assert single["image"] == results["image_1"]  # batching does not change an image's answer


@pytest.mark.parametrize(("value", "message"), [
    ("%%% not base64 %%%", "invalid base64"),
    (base64.b64encode(b"just some text, not an image").decode(), "not a decodable image"),
])
def test_bad_payload_is_an_error_and_the_service_keeps_serving(
        services: Services, images: list[Path], value: str, message: str) -> None:
    for name in MODELS:
        for send in (_http, _rpc):
            url = http_url("127.0.0.1", services.ports[name][0], name)
            reply = (post_http(url, {"image": value}, timeout=30) if send is _http
                     else _rpc_raw(services, name, {"image": value}))
            assert reply["err_no"] != 0 and message in reply["err_msg"]
        assert _results(_http(services, name, [images[0].read_bytes()]))["image"]


def test_expect_100_continue_gets_its_interim_answer_before_the_body(
        services: Services, images: list[Path]) -> None:
    """curl sends `Expect: 100-continue` with large bodies and holds the body until it is told
    to continue (or a second has passed)."""
    items = request_items([images[0].read_bytes()])
    body = json.dumps({"key": list(items), "value": list(items.values())}).encode()
    head = (f"POST /peach/prediction HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
    with socket.create_connection(("127.0.0.1", services.ports["peach"][0]), timeout=5) as sock:
        sock.sendall(head.encode())
        assert sock.recv(1 << 10).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        received = bytearray()
        while (reply := parse_http_response(received)) is None:
            received += sock.recv(1 << 16)
    status, answer = reply
    assert status == 200 and json.loads(answer)["err_no"] == 0


def _rpc_raw(services: Services, name: str, items: dict[str, str]) -> dict:
    from paddle_serving_server.pipeline import PipelineClient

    client = PipelineClient()
    client.connect([f"127.0.0.1:{services.ports[name][1]}"])
    reply = client.predict(feed_dict=items, fetch=None)
    return {"err_no": reply.err_no, "err_msg": reply.err_msg}


def test_request_without_image_names_the_expected_keys(services: Services) -> None:
    url = http_url("127.0.0.1", services.ports["peach"][0], "peach")
    reply = post_http(url, {"picture": "abc"}, timeout=30)
    assert reply["err_no"] != 0 and "'image_0'" in reply["err_msg"]


@pytest.mark.parametrize("transport", ["http", "rpc"])
def test_clients_json_output_exit_codes_and_drawings(
        services: Services, images: list[Path], tmp_path: Path, transport: str) -> None:
    index = 0 if transport == "http" else 1
    for name in MODELS:
        port = services.ports[name][index]
        drawn = tmp_path / f"{transport}_{name}"
        done = run_client(transport, name, port, "--json", "--batch", "2", "--visualize",
                          str(drawn), str(images[0].parent))
        assert done.returncode == 0, done.stderr
        outcomes = json.loads(done.stdout)  # stdout is exactly one JSON document
        assert [Path(o["image"]).name for o in outcomes] == ["0.jpg", "1.jpg", "2.jpg"]
        assert all(o["ok"] and o["predictions"] for o in outcomes)
        assert sorted(p.name for p in drawn.iterdir()) == ["0.png", "1.png", "2.png"]
        human = run_client(transport, name, port, str(images[2]))
        assert human.returncode == 0 and human.stdout.startswith(str(images[2]))

    not_an_image = tmp_path / "broken.jpg"
    not_an_image.write_text("not an image")
    failed = run_client(transport, "peach", services.ports["peach"][index], str(images[0]),
                        str(not_an_image))
    assert failed.returncode == 1
    assert "FAILED err_no=5005" in failed.stdout and "not a decodable image" in failed.stdout
    closed = free_ports(1)[0]
    unreachable = run_client(transport, "peach", closed, "--timeout", "5", str(images[0]))
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr


@pytest.mark.parametrize(("manifest", "words"), [
    ("kept", "model files do not match model_checksums.sha256: modified: inference.pdiparams"),
    # checksums rewritten to match: the corruption reaches the engine's creation, which fails,
    # and the worker exits with the reason in its log.
    ("rewritten", "peach: cannot load the model from"),
])
def test_failed_start_reports_the_log_and_leaves_nothing(
        services: Services, tmp_path: Path, manifest: str, words: str) -> None:
    from export.checksums import write_checksums

    broken = Services(services.models_dir, tmp_path / "build", {"peach": tuple(free_ports(2))})
    serving_server = broken.build_dir / "serving" / "peach" / "serving_server"
    built = services.build_dir / "serving" / "peach"
    shutil.copytree(built / "serving_server", serving_server)
    shutil.copy(built / INPUTS_FILE, serving_server.parent)  # up to date: start will not re-export
    (serving_server / "inference.pdiparams").write_bytes(b"\0" * 64)  # corrupted after export
    if manifest == "rewritten":
        write_checksums(serving_server)
    # Paddle Inference: the engine that loads inference.pdiparams
    done = broken.cli("start", "peach", "--timeout", "120",
                      *runtime_flags(ENGINE_RUNTIMES["paddle"]))
    if done.returncode == 0:  # started after all: stop it before failing, leave nothing behind
        broken.cli("stop")
    assert done.returncode != 0
    assert "exited during start-up" in done.stderr and "last lines of" in done.stderr
    assert words in done.stderr  # the service's own words, from its log
    assert not broken.records() and not broken.leftovers([])
