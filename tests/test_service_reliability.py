"""Reliability of the services on tiny random models (issue 6): health endpoints, Prometheus
metrics, error codes and HTTP statuses for every kind of bad input over HTTP and gRPC, limits,
a short mixed load with answers checked against in-process results, recovery by the supervisor
after a kill, graceful stop under load, loopback-only binding. The shared services run twice:
as one process, and in the default configuration (a worker process per core sharing the
ports), where a scrape or a health check reaches any worker."""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from paddle_serving_server.pipeline.proto import pipeline_service_pb2, pipeline_service_pb2_grpc
from service_helpers import (
    Services,
    metric_value,
    run_client,
    save_tiny_models,
    scrape_metrics,
    settled,
)

from bench.soak import (
    build_cases,
    hostile_ok,
    mismatch,
    png_bomb,
    rss_bytes,
    run_hostile,
    run_load,
    synthetic_jpeg,
)
from serving.control.layout import Layout
from serving.control.manager import Record, free_ports, running_records
from serving.protocol import decode_results, get_json, health_url, request_items

pytestmark = pytest.mark.service
MODELS = ("peach", "traffic_light")
LIMITS = {"max_body_bytes": 2_000_000, "max_image_bytes": 1_000_000,
          "max_image_pixels": 4_000_000, "max_request_pixels": 6_000_000, "max_images": 4}
CONFIGURATIONS = {"one worker": {"build_dag_each_worker": "false"},
                  "workers": {}}  # the defaults: a worker process per core
RUNTIME = [f"--runtime={key}={value}" for key, value in LIMITS.items()]
ONE_WORKER = [f"--runtime={key}={value}" for key, value in CONFIGURATIONS["one worker"].items()]
RESTART_LIMIT_S = 10.0
RSS_GROWTH_LIMIT = 200 << 20
WAIT_S = 30.0  # for a state every worker has published (once a second)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    save_tiny_models(models_dir)
    return models_dir


def _start(models_dir: Path, build_dir: Path, names: tuple[str, ...], *extra: str) -> Services:
    ports = free_ports(2 * len(names))
    running = Services(models_dir, build_dir,
                       {name: (ports[2 * i], ports[2 * i + 1]) for i, name in enumerate(names)})
    started = running.cli("start", *names, "--timeout", "300", *RUNTIME, *extra)
    assert started.returncode == 0, started.stdout + started.stderr
    return running


def _stop(running: Services) -> None:
    pgids = [record["pid"] for record in running.records()]
    stopped = running.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not running.leftovers(pgids), "processes or ports left after stop"
    assert not (running.build_dir / "run" / "supervisor.pid").exists()


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def services(request: pytest.FixtureRequest, tiny_models: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Services:
    configuration = [f"--runtime={key}={value}"
                     for key, value in CONFIGURATIONS[request.param].items()]
    running = _start(tiny_models, tmp_path_factory.mktemp("build"), MODELS, *configuration)
    try:
        yield running
    finally:
        _stop(running)


def _records(services: Services) -> dict[str, Record]:
    return {r.name: r for r in running_records(Layout(services.models_dir, services.build_dir))}


def _http(port: int, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _body(items: dict[str, str]) -> bytes:
    return json.dumps({"key": list(items), "value": list(items.values())}).encode()


def _rpc(port: int, items: dict[str, str], name: str) -> pipeline_service_pb2.Response:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        return stub.inference(pipeline_service_pb2.Request(
            key=list(items), value=list(items.values()), name=name), timeout=60)


def _counters(port: int) -> dict[tuple[str, frozenset], float]:
    """The request and stage counters of a scrape (gauges such as memory change at rest)."""
    return {key: value for key, value in scrape_metrics(port).items()
            if key[0] in ("serving_requests_total", "serving_stage_duration_seconds_count")}


def _scrape_until(port: int, reached: Callable[[dict], bool]) -> dict:
    """Scrape until `reached` holds (the other workers publish their values once a second);
    the last scrape, asserted by the caller."""
    deadline = time.monotonic() + WAIT_S
    while not reached(samples := scrape_metrics(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return samples


# --- health --------------------------------------------------------------------------------------


def test_health_endpoints_answer_live_and_ready(services: Services) -> None:
    for name, (http_port, _) in services.ports.items():
        assert get_json(health_url("127.0.0.1", http_port, "live"), 5) == (200,
                                                                          {"status": "alive"})
        assert get_json(health_url("127.0.0.1", http_port), 5) == (200, {"status": "ready",
                                                                         "reason": ""}), name
        status, body = _http(http_port, "/nothing/here", b"{}")
        assert status == 404 and "/health/ready" in body["error"]


def test_ready_is_503_until_the_model_answers(tiny_models: Path, tmp_path: Path) -> None:
    """Watch a starting service from its first second: live at once, ready only once loaded."""
    running = Services(tiny_models, tmp_path / "build", {"peach": tuple(free_ports(2))})
    http_port = running.ports["peach"][0]
    process = running.popen_run("peach", *RUNTIME, *ONE_WORKER, "--runtime=is_thread_op=true")
    seen: list[tuple[int, str]] = []
    predictions: list[tuple[int, int]] = []
    items = request_items([synthetic_jpeg(64, 64, 1)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not seen or seen[-1][0] != 200):
            try:
                status, body = get_json(health_url("127.0.0.1", http_port), 5)
                seen.append((status, body["reason"]))
                if status == 503:
                    status, answer = _http(http_port, "/peach/prediction", _body(items))
                    predictions.append((status, answer["err_no"]))
            except OSError:  # not listening yet
                assert process.poll() is None, "the service exited during start-up"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0  # drained and exited cleanly
    assert seen[-1] == (200, ""), seen[-5:]
    assert seen[0] == (503, "starting: the model is loading"), seen[:5]
    assert predictions[0] == (503, 3003)  # NOT_READY, a prediction while the model loads


def test_connections_open_during_the_load_are_not_taken_for_pipeline_workers(
        tiny_models: Path, tmp_path: Path) -> None:
    """Clients connect while the pipeline is being built (their handler threads start then) and
    leave after: the service stays ready. Readiness once took every thread started during the
    build for a pipeline worker, and those ended handler threads for dead ones (503 for good)."""
    running = Services(tiny_models, tmp_path / "build", {"peach": tuple(free_ports(2))})
    http_port = running.ports["peach"][0]
    process = running.popen_run("peach", *RUNTIME, *ONE_WORKER, "--runtime=is_thread_op=true")
    lingering: list[socket.socket] = []
    seen: list[tuple[int, dict]] = []
    try:
        deadline = time.monotonic() + 120
        while not seen or seen[-1][0] != 200:  # a new lingering connection every 10 ms
            assert process.poll() is None and time.monotonic() < deadline, seen[-3:]
            with contextlib.suppress(OSError):
                lingering.append(socket.create_connection(("127.0.0.1", http_port), timeout=5))
                lingering[-1].sendall(b"GET /health/live HTTP/1.1\r\n")  # no blank line: waits
                seen.append(get_json(health_url("127.0.0.1", http_port), 5))
            time.sleep(0.01)
        for connection in lingering:
            connection.close()
        # until their connection threads read the end of the stream and are done: only the
        # scrape's own connection is left
        _scrape_until(http_port,
                      lambda samples: metric_value(samples, "serving_http_connections") == 1)
        answers = [get_json(health_url("127.0.0.1", http_port), 5) for _ in range(3)]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert seen[0] == (503, {"status": "not ready", "reason": "starting: the model is loading"})
    assert answers == [(200, {"status": "ready", "reason": ""})] * 3, answers


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_count_outcomes_and_time_every_stage(services: Services) -> None:
    http_port, rpc_port = services.ports["peach"]
    before = settled(lambda: _counters(http_port))
    good = request_items([synthetic_jpeg(240, 320, 1)])
    assert _http(http_port, "/peach/prediction", _body(good))[0] == 200
    assert _http(http_port, "/peach/prediction", _body({"image": "%%%"}))[0] == 400
    assert _rpc(rpc_port, good, "peach").err_no == 0
    answers = {("http", "ok", "0"): 1, ("http", "client_error", "5003"): 1, ("grpc", "ok", "0"): 1}

    def moved(samples: dict, protocol: str, outcome: str, code: str) -> float:
        labels = {"service": "peach", "protocol": protocol, "outcome": outcome, "code": code}
        return (metric_value(samples, "serving_requests_total", **labels)
                - metric_value(before, "serving_requests_total", **labels))

    def all_counted(samples: dict) -> bool:  # by every worker that served one of them
        return all(moved(samples, *labels) == count for labels, count in answers.items()) and all(
            metric_value(samples, "serving_stage_duration_seconds_count", service="peach",
                         stage=stage)
            - metric_value(before, "serving_stage_duration_seconds_count", service="peach",
                           stage=stage) == 2 for stage in ("decode", "postprocess"))

    after = _scrape_until(http_port, all_counted)
    assert {labels: moved(after, *labels) for labels in answers} == answers
    for stage in ("decode", "preprocess", "predict", "postprocess"):
        labels = {"service": "peach", "stage": stage}
        count = metric_value(after, "serving_stage_duration_seconds_count", **labels)
        assert count - metric_value(before, "serving_stage_duration_seconds_count", **labels) == 2
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                         if k[0] == "serving_stage_duration_seconds_bucket"
                         and dict(k[1]).items() >= labels.items())
        assert [b for b, _ in buckets][-1] == float("inf") and buckets[-1][1] == count
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
        assert metric_value(after, "serving_stage_duration_seconds_sum", **labels) > 0
    assert metric_value(after, "serving_ready") == 1
    assert metric_value(after, "process_resident_memory_bytes") > 50e6


# --- bad input -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bad_inputs() -> dict[str, tuple[dict[str, str], int, int, str]]:
    """name -> (request items, err_no, HTTP status, words the message must contain)."""
    jpeg = _b64(synthetic_jpeg(64, 64, 3))
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big_file = _b64(cv2.imencode(".png", noise)[1].tobytes())  # ~1.5 MB > max_image_bytes
    wide = _b64(cv2.imencode(".jpg", np.zeros((2000, 2500, 3), np.uint8))[1].tobytes())
    return {
        "not an image": ({"image": _b64(b"plain text, not an image")}, 5005, 422,
                         "image: not a decodable image"),
        "invalid base64": ({"image": "%%% not base64 %%%"}, 5003, 400, "image: invalid base64"),
        "truncated base64": ({"image": jpeg[:-3]}, 5003, 400, "image: invalid base64"),
        "empty value": ({"image": " \n"}, 5004, 400, "image: empty value"),
        "0-byte image": ({"image": _b64(b"")}, 5004, 400, "image: empty value"),
        "padding only": ({"image": "===="}, 5003, 400, "image: invalid base64"),
        "decompression bomb": ({"image": _b64(png_bomb(20000, 20000))}, 5008, 413,
                               "image: Image size (400000000 pixels) exceeds limit"),
        # under Pillow's own cap (2 x 89 MP): the project's limit must catch it
        "bomb under Pillow's cap": ({"image": _b64(png_bomb(10000, 10000))}, 5008, 413,
                                    "image: 10000x10000 = 100000000 pixels; the limit is "
                                    "4000000 pixels"),
        "request over its pixel budget": (
            {f"image_{i}": _b64(png_bomb(2000, 2000)) for i in range(2)}, 5008, 413,
            "2 images of 8000000 pixels in all; the limit is 6000000 pixels per request"),
        "too many pixels": ({"image": wide}, 5008, 413,
                            "image: 2500x2000 = 5000000 pixels; the limit is 4000000"),
        "image over the size limit": ({"image": big_file}, 5007, 413,
                                      "the limit is 1000000 bytes per image"),
        "too many images": ({f"image_{i}": jpeg for i in range(5)}, 5006, 413,
                            "5 images in one request; the limit is 4"),
        "missing image key": ({}, 5001, 400, "no image in the request"),
        "unknown key": ({"image": jpeg, "picture": jpeg}, 5002, 400,
                        "unknown key(s) ['picture']"),
    }


def _correct_answer(services: Services, name: str) -> None:
    records = _records(services)
    case = build_cases(Layout(services.models_dir, services.build_dir), [records[name]], 1)[0]
    http_port, rpc_port = services.ports[name]
    status, answer = _http(http_port, f"/{name}/prediction", _body(case.items))
    assert status == 200 and answer["err_no"] == 0
    assert mismatch(case.expected, decode_results(answer["key"], answer["value"])) is None
    reply = _rpc(rpc_port, case.items, name)
    assert reply.err_no == 0
    assert mismatch(case.expected, decode_results(list(reply.key), list(reply.value))) is None


def test_every_bad_input_gets_its_code_over_http_and_rpc(services: Services) -> None:
    records = _records(services)
    rss_before = {name: rss_bytes(records[name].pid) for name in MODELS}
    cases = _bad_inputs()
    for name in MODELS:
        http_port, rpc_port = services.ports[name]
        for label, (items, err_no, status, words) in cases.items():
            for _ in range(3):  # repeated: memory must not grow with them
                code, answer = _http(http_port, f"/{name}/prediction", _body(items))
                assert (code, answer["err_no"]) == (status, err_no), (label, answer)
                assert words in answer["err_msg"], (label, answer["err_msg"])
                assert set(answer) == {"err_no", "err_msg", "key", "value", "tensors", "logid"}
                reply = _rpc(rpc_port, items, name)
                assert reply.err_no == err_no and words in reply.err_msg, (label, reply)
        _correct_answer(services, name)
    for name in MODELS:
        growth = rss_bytes(records[name].pid) - rss_before[name]
        assert growth < RSS_GROWTH_LIMIT, f"{name}: RSS grew {growth / 2**20:.0f} MB"


def test_malformed_requests_wrong_service_and_oversized_body(services: Services) -> None:
    http_port, rpc_port = services.ports["peach"]
    jpeg = request_items([synthetic_jpeg(64, 64, 4)])
    malformed = {b"not json": "the body is not JSON",
                 b'["a list"]': "expected a JSON object",
                 b'{"key": ["image"]}': '"key" and "value" must both be lists',
                 b'{"key": ["image", "x"], "value": ["a"]}': '"key" has 2 items but "value"'}
    for body, words in malformed.items():
        status, answer = _http(http_port, "/peach/prediction", body)
        assert (status, answer["err_no"]) == (400, 5000) and words in answer["err_msg"]

    status, answer = _http(http_port, "/traffic_light/prediction", _body(jpeg))
    assert (status, answer["err_no"]) == (404, 3002)
    assert "no service 'traffic_light' here; this port serves 'peach'" in answer["err_msg"]
    assert _rpc(rpc_port, jpeg, "traffic_light").err_no == 3002

    oversized = {"image": "A" * 2_100_000}
    status, answer = _http(http_port, "/peach/prediction", _body(oversized))
    assert (status, answer["err_no"]) == (413, 5009)
    assert "the limit is 2000000 bytes" in answer["err_msg"]
    with pytest.raises(grpc.RpcError) as refused:
        _rpc(rpc_port, oversized, "peach")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in refused.value.details()
    _correct_answer(services, "peach")


def test_rpc_client_tells_a_refused_message_from_an_unreachable_service(
        services: Services, tmp_path: Path) -> None:
    """gRPC refuses a message over max_body_bytes (RESOURCE_EXHAUSTED): the client reports a
    failed image (exit 1), not an unreachable service (exit 2)."""
    noise = np.random.default_rng(1).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    big = tmp_path / "big.png"
    big.write_bytes(cv2.imencode(".png", noise)[1].tobytes())  # ~3 MB > 2 MB
    refused = run_client("rpc", "peach", services.ports["peach"][1], str(big))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "err_no=-1: gRPC RESOURCE_EXHAUSTED" in refused.stdout
    unreachable = run_client("rpc", "peach", free_ports(1)[0], str(big), "--timeout", "3")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr


UPSTREAM_RPC_CLIENT = """\
# As PaddleClas's deploy/paddleserving/pipeline_rpc_client.py: nothing of the project imported.
import base64
import sys

from paddle_serving_server.pipeline import PipelineClient

client = PipelineClient()
client.connect(["127.0.0.1:" + sys.argv[1]])
with open(sys.argv[2], "rb") as file:
    image = base64.b64encode(file.read()).decode("utf8")
ret = client.predict(feed_dict={"image": image}, fetch=["label", "prob"])
print(ret.err_no, list(ret.key))
"""


def test_an_upstream_style_rpc_client_script_works_unchanged(
        services: Services, tmp_path: Path) -> None:
    """Run from a folder of its own, by the venv's interpreter alone: the compatibility fixes
    come from the venv's start-up hook, not from an import of the project."""
    script, image = tmp_path / "pipeline_rpc_client.py", tmp_path / "peach.jpg"
    script.write_text(UPSTREAM_RPC_CLIENT)
    image.write_bytes(synthetic_jpeg(240, 320, 7))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    ran = subprocess.run([sys.executable, str(script), str(services.ports["peach"][1]),
                          str(image)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == "0 ['image']"  # and no per-call timestamp lines


# --- load, binding -------------------------------------------------------------------------------


def test_short_mixed_load_loses_nothing_and_answers_right(services: Services) -> None:
    """The soak's mix, shortened: 1,200 requests at concurrency 32, with 20 slow clients and 10
    decompression bombs among them."""
    records = _records(services)
    cases = build_cases(Layout(services.models_dir, services.build_dir), list(records.values()))
    hostile: dict = {}
    hostile_thread = threading.Thread(target=lambda: hostile.update(outcomes=run_hostile(
        list(records.values()), slow_clients=20, bombs=10, spread_s=5.0,
        bomb_images=LIMITS["max_images"])))
    hostile_thread.start()
    tally = run_load({r.service: r for r in records.values()}, cases, requests=1200,
                     concurrency=32)
    hostile_thread.join()
    assert (tally.lost, tally.wrong, tally.refused) == (0, 0, 0), tally.examples
    assert hostile_ok(hostile["outcomes"]), hostile["outcomes"]
    assert sum(hostile["outcomes"].values()) == 30
    assert tally.ok == 1200
    assert set(tally.by_route) == {f"{n}/{p}" for n in MODELS for p in ("http", "grpc")}


def _listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the LISTEN sockets these processes hold (/proc/net/tcp{,6})."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.append(_decode_address(fields[1]))
    return addresses


def _decode_address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return f"{'.'.join(str(b) for b in raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # per-word little endian
    if words[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped
        return f"::ffff:{'.'.join(str(b) for b in words[12:])}:{int(port, 16)}"
    return f"[{words.hex()}]:{int(port, 16)}"


def test_every_listening_socket_is_loopback(services: Services) -> None:
    pids = set()
    for record in _records(services).values():
        pids |= {int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                 if _pgid(p) == record.pid}
    addresses = _listening_addresses(pids)
    expected_ports = {port for pair in services.ports.values() for port in pair}
    assert {int(a.rsplit(":", 1)[1]) for a in addresses} == expected_ports, addresses
    assert all(a.startswith(("127.0.0.1:", "::ffff:127.0.0.1:")) for a in addresses), addresses


def test_host_binds_both_ports_to_that_interface_and_the_tools_follow(
        tiny_models: Path, tmp_path: Path) -> None:
    """--host 127.0.0.2 (a loopback address other than the default): both ports bind there, and
    start (readiness, the timed prediction), status and stop reach the service there."""
    running = _start(tiny_models, tmp_path / "build", ("peach",), *ONE_WORKER, "--host",
                     "127.0.0.2", "--no-supervisor")
    try:
        (record,) = _records(running).values()
        pids = {int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                if _pgid(p) == record.pid}
        addresses = {address.removeprefix("::ffff:") for address in _listening_addresses(pids)}
        assert addresses == {f"127.0.0.2:{port}" for port in running.ports["peach"]}
        status = running.cli("status")
        assert status.returncode == 0 and "http://127.0.0.2:" in status.stdout, status.stdout
        answer = _http_at("127.0.0.2", running.ports["peach"][0])
        assert answer["err_no"] == 0
    finally:
        _stop(running)


def _http_at(host: str, port: int) -> dict:
    items = request_items([synthetic_jpeg(64, 64, 9)])
    request = urllib.request.Request(f"http://{host}:{port}/peach/prediction", data=_body(items))
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _pgid(stat: Path) -> int:
    try:
        return int(stat.read_text().rpartition(")")[2].split()[2])
    except OSError:
        return -1


# --- recovery, graceful stop ---------------------------------------------------------------------


def _wait_ready_again(services: Services, name: str, old_pid: int, deadline: float) -> Record:
    while time.monotonic() < deadline:
        record = _records(services).get(name)
        if record is not None and record.pid != old_pid:
            try:
                if get_json(health_url("127.0.0.1", record.http_port), 2)[0] == 200:
                    return record
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"{name} not restarted and ready in time; supervisor log:\n"
                         + (services.build_dir / "logs" / "supervisor.log").read_text())


def test_supervisor_restarts_a_killed_service(services: Services) -> None:
    old = _records(services)["peach"]
    killed = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)
    record = _wait_ready_again(services, "peach", old.pid, killed + RESTART_LIMIT_S)
    print(f"peach ready again {time.monotonic() - killed:.1f} s after SIGKILL")
    _correct_answer(services, "peach")
    assert record.http_port == old.http_port and record.runtime == old.runtime


@pytest.fixture(scope="module")
def process_op_service(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> Services:
    """The classifier with process ops (the op runs in a child process of the service)."""
    running = _start(tiny_models, tmp_path_factory.mktemp("build_process_ops"), ("peach",),
                     *ONE_WORKER, "--runtime=is_thread_op=false")
    try:
        yield running
    finally:
        _stop(running)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except OSError:
            continue
    return children


def test_dead_op_process_makes_the_service_unready_and_it_is_restarted(
        process_op_service: Services) -> None:
    services = process_op_service
    old = _records(services)["peach"]
    op_process = max(_children(old.pid), key=rss_bytes_of)  # the one holding the model
    killed = time.monotonic()
    os.kill(op_process, signal.SIGKILL)
    _status, body = _wait_for(lambda: get_json(health_url("127.0.0.1", old.http_port), 2),
                             lambda answer: answer[0] == 503, killed + 5)
    assert "pipeline worker(s) died" in body["reason"]
    _wait_ready_again(services, "peach", old.pid, killed + RESTART_LIMIT_S)
    _correct_answer(services, "peach")


def rss_bytes_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0


def _wait_for(read: Callable[[], tuple], done: Callable[[tuple], bool], deadline: float
              ) -> tuple:
    last: tuple = ()
    while time.monotonic() < deadline:
        try:
            last = read()
        except OSError as error:
            last = (0, {"reason": str(error)})
        if done(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; last {last}")


def test_stop_under_load_answers_every_accepted_request(process_op_service: Services) -> None:
    services = process_op_service
    record = _records(services)["peach"]
    cases = build_cases(Layout(services.models_dir, services.build_dir), [record])
    accepted_before = metric_value(scrape_metrics(record.http_port),
                                   "serving_requests_accepted_total")
    outcome, stop = {}, threading.Event()
    load = threading.Thread(target=lambda: outcome.update(tally=run_load(
        {record.service: record}, cases, requests=10**6, concurrency=32, stop=stop)))
    load.start()
    _wait_for(lambda: (metric_value(scrape_metrics(record.http_port), "serving_requests_total",
                              service="peach", protocol="grpc", outcome="ok", code="0"),),
              lambda answer: answer[0] >= 50, time.monotonic() + 120)
    _stop(services)  # what `make stop` does, while 32 clients keep sending
    stop.set()
    load.join(120)
    tally = outcome["tally"]
    accepted, answered = map(int, re.search(
        r"(\d+) requests accepted, (\d+) answered, 0 abandoned",
        Path(record.log).read_text()).groups())
    assert (tally.lost, tally.wrong) == (0, 0), [e for e in tally.examples
                                                 if not e.startswith("refused")]
    assert tally.refused > 0  # the load really ran into the stop
    # every request the service admitted was answered, correctly, to a client that got it
    assert accepted == answered and accepted - accepted_before == tally.ok


def test_metrics_of_worker_processes_add_up(tiny_models: Path, tmp_path: Path) -> None:
    """With build_dag_each_worker, several processes share the port: any scrape must report the
    whole service (the workers publish their values to each other)."""
    running = _start(tiny_models, tmp_path / "build", ("peach",),
                     "--runtime=build_dag_each_worker=true", "--runtime=worker_num=2",
                     "--no-supervisor")
    try:
        http_port = running.ports["peach"][0]
        items = request_items([synthetic_jpeg(64, 64, 5)])
        for _ in range(12):  # a new connection each: the kernel spreads them over the workers
            assert _http(http_port, "/peach/prediction", _body(items))[0] == 200
        # until every worker has published: a worker answers from its own values live and from
        # the others' as they last published them (once a second)
        settled(lambda: _counters(http_port))
        for _ in range(4):  # whichever worker answers the scrape
            samples = scrape_metrics(http_port)
            assert metric_value(samples, "serving_requests_total", service="peach", protocol="http",
                          outcome="ok", code="0") == 13  # + the start-up timing prediction
            assert metric_value(samples, "serving_stage_duration_seconds_count", service="peach",
                          stage="predict") == 13
            assert metric_value(samples, "serving_ready") == 1
    finally:
        _stop(running)


def test_stop_also_stops_a_service_the_supervisor_restarted_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` stops the supervisor first; if it was just restarting a service, the restart
    replaced the record, and the new process must be stopped too, not left running orphaned."""
    import serving.__main__ as cli

    layout = Layout(models_dir=tmp_path / "models", build_dir=tmp_path / "build")
    http_port, rpc_port = free_ports(2)
    gone = subprocess.Popen(["true"])
    gone.wait()
    Record("peach", "peach", gone.pid, http_port, rpc_port, str(tmp_path / "old.log"),
           time.time()).save(layout.pid_file("peach"))
    restarted: list[subprocess.Popen] = []

    def stop_supervisor_mid_restart(layout: Layout) -> None:
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        restarted.append(process)
        Record("peach", "peach", process.pid, http_port, rpc_port, str(tmp_path / "new.log"),
               time.time()).save(layout.pid_file("peach"))

    monkeypatch.setattr(cli, "_stop_supervisor", stop_supervisor_mid_restart)
    monkeypatch.setattr(cli, "supervisor_pid", lambda layout: None)
    try:
        assert cli.stop(layout, argparse.Namespace(models=[])) == 0
        (process,) = restarted
        assert process.wait(timeout=10) == -signal.SIGTERM
        assert running_records(layout) == []
    finally:
        for process in restarted:
            process.kill()
            process.wait()
