"""Helpers of the tests that start real pipeline services (tests/test_service_*.py): free ports,
the `python -m serving` CLI against a temporary build folder, the client scripts, leftovers,
/metrics scrapes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from serving.control.manager import group_alive, port_listening
from serving.service_metrics import PUBLISH_EVERY_S

ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# The runtime settings of each engine and precision, as `--runtime` pairs: the served parity
# tests run once per entry.
ENGINE_RUNTIMES = {
    "paddle": {"engine": "paddle", "precision": "fp32"},
    "onnxruntime": {"engine": "onnxruntime", "precision": "fp32"},
    "onnxruntime-int8": {"engine": "onnxruntime", "precision": "int8"},
    "openvino": {"engine": "openvino", "precision": "fp32"},
    "openvino-int8": {"engine": "openvino", "precision": "int8"},
}


def runtime_flags(runtime: dict[str, str]) -> list[str]:
    return [f"--runtime={key}={value}" for key, value in runtime.items()]


@dataclass
class Services:
    """`python -m serving` with its own models and build folders and free ports."""

    models_dir: Path
    build_dir: Path
    ports: dict[str, tuple[int, int]]  # name -> (http, rpc)

    def cli(self, command: str, *extra: str, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
        folders = ["--models-dir", str(self.models_dir), "--build-dir", str(self.build_dir)]
        port_flags = [f"--port={n}={h}:{r}" for n, (h, r) in self.ports.items()]
        args = [*folders, *(port_flags if command == "start" else []), *extra]
        return subprocess.run([sys.executable, "-m", "serving", command, *args], cwd=ROOT,
                              env=QUIET_ENV, capture_output=True, text=True, timeout=timeout)

    def popen_run(self, name: str, *extra: str) -> subprocess.Popen:
        """`python -m serving run` of one model in the foreground, as a child of the test."""
        http, rpc = self.ports[name]
        return subprocess.Popen(
            [sys.executable, "-m", "serving", "run", "--model", name, "--models-dir",
             str(self.models_dir), "--build-dir", str(self.build_dir),
             f"--port={name}={http}:{rpc}", *extra], cwd=ROOT, env=QUIET_ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.build_dir / "run").glob("*.json")]

    @contextlib.contextmanager
    def started(self, *start_args: str) -> Iterator[Services]:
        """`python -m serving start ...` for the test's duration; on exit stop, and assert that no
        process group or port is left."""
        try:
            started = self.cli("start", *start_args)
            assert started.returncode == 0, started.stdout + started.stderr
            yield self
        finally:
            pgids = [record["pid"] for record in self.records()]
            self.cli("stop")
            assert not self.leftovers(pgids)

    def leftovers(self, pgids: list[int]) -> list[str]:
        """Process groups still alive or ports still bound."""
        left = [f"process group {pgid}" for pgid in pgids if group_alive(pgid)]
        return left + [f"port {port}" for pair in self.ports.values() for port in pair
                       if port_listening(port)]


def in_process_results(models_dir: Path, build_dir: Path, name: str, images: list[bytes],
                       runtime: dict[str, str] | None = None) -> dict[str, list]:
    """What the service should answer for `images` (one request), computed in this process by
    the model contract with the service's runtime settings (model.yml, then `runtime`)."""
    from model import settings
    from model.model import Model
    from model.spec import ModelSpec
    from serving.protocol import request_items

    spec = ModelSpec.load(models_dir / name)
    serving_server = build_dir / "serving" / name / "serving_server"
    model = Model(spec, serving_server, settings.resolve(spec.runtime, runtime or {})).load()
    return {key: json.loads(value) for key, value in model(request_items(images)).items()}


def run_client(transport: str, service: str, port: int, *args: str
               ) -> subprocess.CompletedProcess[str]:
    script = ROOT / "clients" / f"pipeline_{transport}_client.py"
    return subprocess.run([sys.executable, str(script), "--service", service, "--port", str(port),
                           *args], cwd=ROOT, env=QUIET_ENV, capture_output=True, text=True,
                          timeout=300)


def set_runtime(model_folder: Path, **values: object) -> None:
    """Set keys of the `runtime:` section of a model folder's model.yml."""
    description = model_folder / "model.yml"
    raw = yaml.safe_load(description.read_text())
    raw["runtime"] = {**(raw.get("runtime") or {}), **values}
    description.write_text(yaml.safe_dump(raw, sort_keys=False))


INFER_CFG = {"mode": "paddle", "arch": "YOLO", "Preprocess": [
    {"type": "Resize", "target_size": [320, 320], "keep_ratio": False, "interp": 2},
    {"type": "NormalizeImage", "is_scale": True, "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225]},
    {"type": "Permute"}]}


def save_tiny_models(models_dir: Path) -> None:
    """Random-init models with the real interfaces: classifier x -> softmax [N, 4]; detector
    (im_shape, image, scale_factor) -> NMS boxes [M, 6] + boxes per image [N] int32."""
    import paddle
    from paddle import nn
    from paddle.nn import functional
    from paddle.static import InputSpec
    from ppdet.modeling.ops import multiclass_nms

    paddle.seed(7)

    class Classifier(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2D(3, 8, 3, stride=4), nn.Linear(8, 4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            pooled = functional.adaptive_avg_pool2d(functional.relu(self.conv(x)), 1)
            return functional.softmax(self.fc(pooled.flatten(1)) * 5)

    class Detector(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2D(3, 3 * (5 + 8), 3, stride=32, padding=1)

        def forward(self, im_shape, image, scale_factor):  # type: ignore[no-untyped-def]
            size = (im_shape / scale_factor).astype("int32")
            boxes, scores = paddle.vision.ops.yolo_box(
                self.head(image), size, anchors=[10, 13, 16, 30, 33, 23], class_num=8,
                conf_thresh=0.0, downsample_ratio=32, clip_bbox=True)
            out, count, _ = multiclass_nms(  # YOLOv3's NMS op (multiclass_nms3)
                boxes, scores.transpose([0, 2, 1]), score_threshold=0.01, nms_top_k=100,
                keep_top_k=20, nms_threshold=0.45)
            return out, count

    specs = {"peach": [InputSpec([None, 3, 224, 224], "float32", "x")],
             "traffic_light": [InputSpec([None, 2], "float32", "im_shape"),
                               InputSpec([None, 3, 320, 320], "float32", "image"),
                               InputSpec([None, 2], "float32", "scale_factor")]}
    for name, layer in (("peach", Classifier()), ("traffic_light", Detector())):
        folder = models_dir / name
        (folder / "inference").mkdir(parents=True)
        for file in ("model.yml", "label_list.txt"):
            shutil.copy(ROOT / "models" / name / file, folder / file)
        if name == "traffic_light":  # a PIR detector: oneDNN off, as for PIR YOLOv3 exports
            set_runtime(folder, use_mkldnn=False)
        layer.eval()
        static = paddle.jit.to_static(layer, input_spec=specs[name], full_graph=True)
        paddle.jit.save(static, str(folder / "inference" / "inference"))
    (models_dir / "traffic_light/inference/infer_cfg.yml").write_text(yaml.safe_dump(INFER_CFG))


Scraped = TypeVar("Scraped")


def settled(scrape: Callable[[], Scraped], deadline_s: float = 60.0) -> Scraped:
    """A scrape of a service at rest holding every worker's part: its values stayed the same for
    two publishing periods (each worker publishes once a period, so what was answered before
    the first of those scrapes is in them). Metrics taken right after a request may miss the
    other workers' part of it, which would then count in the next test's figures."""
    deadline = time.monotonic() + deadline_s
    last, since = scrape(), time.monotonic()
    while time.monotonic() - since < 2 * PUBLISH_EVERY_S:
        assert time.monotonic() < deadline, "the metrics kept changing with no request sent"
        time.sleep(0.1)
        current = scrape()
        if current != last:
            last, since = current, time.monotonic()
    return last


def scrape_metrics(port: int) -> dict[tuple[str, frozenset], float]:
    """A service's /metrics page, parsed independently of serving.metrics: {(name, labels):
    value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        match = re.fullmatch(r'([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)', line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        assert re.sub(r"_(bucket|sum|count)$", "", name) in typed, f"{name} has no # TYPE"
        samples[(name, pairs)] = float(value)
    return samples


def metric_value(samples: dict, name: str, **labels: str) -> float:
    """One sample of a scrape (0 when absent, as an unincremented counter)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
