"""Per-request and per-call budgets, enforced before the work they bound: the decoded pixels of a
request (all its images' headers are read before any is decoded), the images and pixels of the
requests batched into one predictor call."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable

import pytest
from paddle_serving_server.pipeline.channel import ChannelData, ChannelDataType, ThreadChannel
from upstream import run_python

from bench.soak import png_bomb
from model.errors import RequestError
from model.request import Limits, check_request
from serving.pipeline import collect_batches

OP = "model"
LONG = 10.0  # seconds no test may sit out (see tests/test_batching.py)
BOMB = base64.b64encode(png_bomb(5000, 5000)).decode()  # 25 MP: at the per-image limit


def test_a_request_over_the_pixel_budget_is_refused_naming_both_figures() -> None:
    request = {f"image_{i}": BOMB for i in range(8)}
    with pytest.raises(RequestError) as refused:
        check_request(request, Limits(max_request_pixels=100_000_000))
    assert refused.value.err_no == 5008
    assert str(refused.value) == ("8 images of 200000000 pixels in all; the limit is "
                                  "100000000 pixels per request")
    checked = check_request({f"image_{i}": BOMB for i in range(4)},
                            Limits(max_request_pixels=100_000_000))
    assert [(image.key, image.pixels) for image in checked] == \
        [(f"image_{i}", 25_000_000) for i in range(4)]


@pytest.mark.integration
def test_eight_bombs_in_one_request_cost_no_memory() -> None:
    """The issue's reproduction: eight blank 5000 x 5000 1-bit PNGs (33 KB of body), through the
    model's preprocessing with the default settings, in a fresh interpreter (peak RSS)."""
    code = """
import base64, json, resource
from pathlib import Path
from bench.soak import png_bomb
from model.errors import RequestError
from model.model import Model
from model.spec import ModelSpec
model = Model(ModelSpec.load("models/peach"), Path("models/peach/inference"))
bomb = base64.b64encode(png_bomb(5000, 5000)).decode()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    model.preprocess({f"image_{i}": bomb for i in range(8)})
    outcome = "decoded"
except RequestError as error:
    outcome = f"{error.err_no}: {error}"
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "peak_growth_mb": grown / 1024}))
"""
    child = run_python(code)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"peak RSS growth: {result['peak_growth_mb']:.0f} MB ({result['outcome']})")
    assert result["outcome"].startswith("5008: 8 images of 200000000 pixels in all")
    assert result["peak_growth_mb"] < 20


def _channel() -> ThreadChannel:
    channel = ThreadChannel(name="model_input")
    channel.add_producer("@read")
    channel.add_consumer(OP)
    return channel


def _push(channel: ThreadChannel, *image_counts: int) -> None:
    for data_id, count in enumerate(image_counts, start=1):
        request = {f"image_{i}": str(data_id) for i in range(count)}
        channel.push(ChannelData(ChannelDataType.DICT.value, dictdata=request, data_id=data_id,
                                 log_id=data_id), "@read")


def _image_count(item: dict) -> tuple[int, int]:
    """(images, pixels) of a queued request: here 1 MP per image."""
    images = len(item["@read"].dictdata)
    return images, images * 1_000_000


def _batches(channel: ThreadChannel, count: int, batch_size: int, max_pixels: int,
             cost: Callable[[dict], tuple[int, int]] = _image_count) -> list[list[int]]:
    batches = collect_batches(channel, OP, batch_size, LONG, lambda: 0, cost, max_pixels)
    return [[item["@read"].id for item in next(batches)] for _ in range(count)]


def test_batches_count_images_not_requests() -> None:
    """Four 3-image requests at batch_size 4 are four predictor calls, not one of 12 images."""
    channel = _channel()
    _push(channel, 3, 3, 3, 3, 1, 1, 2, 1)
    assert _batches(channel, 5, 4, 10**9) == [[1], [2], [3], [4, 5], [6, 7, 8]]


def test_a_batch_stops_before_its_pixel_budget() -> None:
    channel = _channel()
    _push(channel, 1, 1, 1, 1, 1)
    assert _batches(channel, 3, 8, 2_000_000) == [[1, 2], [3, 4], [5]]


def test_a_request_larger_than_a_batch_is_a_batch_of_its_own_at_once() -> None:
    channel = _channel()
    _push(channel, 32)
    finished = threading.Event()
    batches: list[list[int]] = []

    def collect() -> None:
        batches.extend(_batches(channel, 1, 4, 10**9))
        finished.set()

    threading.Thread(target=collect, daemon=True).start()
    assert finished.wait(LONG / 2), "a request over batch_size waited for company"
    assert batches == [[1]]
