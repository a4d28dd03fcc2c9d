"""The error codes no other test produces: INTERNAL from a model that fails on some input while it
serves others, and TIMEOUT, which the services never send. (The others: bad input in
tests/test_service_reliability.py, NO_SERVICE there too, NOT_READY there and in
tests/test_admission.py, OVERLOADED and DRAINING in tests/test_admission.py, the HTTP front's
refusals in tests/test_http_front.py.)"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import ROOT, Services, set_runtime

from bench.soak import synthetic_jpeg
from model import settings
from model.errors import BY_NAME
from serving.control.manager import free_ports
from serving.pipeline import render_config
from serving.protocol import request_items


def _save_batch_of_one_classifier(models_dir: Path) -> None:
    """A classifier with the peach interface whose program only runs one image at a time:
    a predictor call of two images fails inside Paddle Inference."""
    import paddle
    from paddle import nn
    from paddle.nn import functional
    from paddle.static import InputSpec

    class BatchOfOne(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2D(3, 8, 3, stride=4), nn.Linear(8, 4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            pooled = functional.adaptive_avg_pool2d(functional.relu(self.conv(x)), 1)
            return functional.softmax(self.fc(paddle.reshape(pooled, [1, 8])))

    folder = models_dir / "peach"
    (folder / "inference").mkdir(parents=True)
    for file in ("model.yml", "label_list.txt"):
        shutil.copy(ROOT / "models" / "peach" / file, folder / file)
    layer = BatchOfOne()
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=[InputSpec([None, 3, 224, 224], "float32",
                                                                "x")], full_graph=True)
    paddle.jit.save(static, str(folder / "inference" / "inference"))
    set_runtime(folder, build_dag_each_worker=False, engine="paddle", precision="fp32")


@pytest.fixture(scope="module")
def failing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    models_dir = tmp_path_factory.mktemp("models")
    _save_batch_of_one_classifier(models_dir)
    running = Services(models_dir, tmp_path_factory.mktemp("build"),
                       {"peach": tuple(free_ports(2))})
    with running.started("peach", "--no-supervisor"):
        yield running


def _post(port: int, images: list[bytes]) -> tuple[int, dict]:
    items = request_items(images)
    body = json.dumps({"key": list(items), "value": list(items.values())}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/peach/prediction", data=body)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.mark.service
def test_a_prediction_that_fails_inside_the_model_is_internal_and_the_service_serves_on(
        failing_service: Services) -> None:
    port = failing_service.ports["peach"][0]
    status, answer = _post(port, [synthetic_jpeg(64, 64, 1)])
    assert (status, answer["err_no"]) == (200, 0)
    status, answer = _post(port, [synthetic_jpeg(64, 64, 1), synthetic_jpeg(64, 64, 2)])
    assert (status, answer["err_no"]) == (500, BY_NAME["INTERNAL"].err_no)
    assert "failed to predict" in answer["err_msg"]
    status, answer = _post(port, [synthetic_jpeg(64, 64, 3)])
    assert (status, answer["err_no"]) == (200, 0)


def test_timeout_is_never_sent_the_op_has_no_timeout() -> None:
    """6000 TIMEOUT is upstream's answer to an op `timeout`; the services configure none (a
    timed-out predictor call could not be stopped: serving/pipeline.py render_config)."""
    config = render_config("peach", settings.resolve(), 18080, 9993)
    assert config["op"]["peach"]["timeout"] == -1
    assert "never sent by this project's services" in BY_NAME["TIMEOUT"].meaning
