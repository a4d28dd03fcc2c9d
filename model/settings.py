"""Runtime settings: one typed table (the fields of `Settings`: name, type, default and why), from
which every way of setting them is derived: the `runtime:` section of models/<name>/model.yml,
`--runtime key=value` on the command line, the checks and the help text (`python -m serving
settings`). What each default buys, measured: docs/benchmarks.md.

Scope "model" settings shape how the model runs in its process, so in-process runs (the benchmark's
limit, the soak's reference answers) use them too; scope "service" ones shape the pipeline service.
A default of None is shown and set as `auto`: the consumer decides from the machine or the model.
A setting with `choices` takes one of them and nothing else.
"""

from __future__ import annotations

import os
import textwrap
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from model.request import Limits

AUTO = "auto"
MODEL, SERVICE = "model", "service"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class SettingsError(ValueError):
    """A runtime setting that does not exist or has a value of the wrong kind."""


def _setting(default: Any, why: str, scope: str = MODEL, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"why": why, "scope": scope, "choices": choices})


ENGINES = ("paddle", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Settings:
    # --- the model in its process ----------------------------------------------------------
    engine: str = _setting("paddle", "what runs the model: Paddle Inference, ONNX Runtime or "
                           "OpenVINO (the last two from the ONNX model the export writes). "
                           "ir_optim, use_mkldnn and mem_optim concern paddle only",
                           choices=ENGINES)
    precision: str = _setting("fp32", "int8: the post-training quantised ONNX model the export "
                              "writes (onnxruntime or openvino; OpenVINO runs the detector's "
                              "INT8 model far less accurately); accuracy and speed of each: "
                              "docs/benchmarks.md", choices=PRECISIONS)
    thread_num: int = _setting(1, "math threads per predictor; a service runs one worker per "
                               "core, and a second thread spins while the worker does Python "
                               "work, costing CPU the other worker needs")
    image_threads: int = _setting(1, "OpenCV threads for decoding and resizing; with one worker "
                                  "per core, more only compete with the other worker")
    ir_optim: bool = _setting(True, "Paddle Inference's graph optimisation passes (operator "
                              "fusion): shorter predictor calls")
    use_mkldnn: bool = _setting(True, "oneDNN CPU kernels: several times faster predictor calls. "
                                "A model whose program crashes with them sets false in its "
                                "model.yml")
    mem_optim: bool | None = _setting(None, "Paddle's memory_optimize_pass; auto: on for legacy "
                                      "programs, off for PIR ones, whose predictor creation "
                                      "fails with it")
    reuse_freed_memory: bool = _setting(True, "keep freed image buffers mapped for the next "
                                        "request (glibc mallopt) instead of paying fresh page "
                                        "faults for them on every request")
    free_intermediate_tensors: bool = _setting(False, "let Paddle free intermediate tensors "
                                               "after each call; its collector thread spins and "
                                               "preempts the predicting thread")
    pin_workers: bool = _setting(True, "with several worker processes, each runs on its own "
                                 "share of the cores, so its model stays in that core's caches")
    max_images: int = _setting(32, "images in one request")
    max_image_bytes: int = _setting(8 << 20, "bytes of one encoded image")
    max_image_pixels: int = _setting(25_000_000, "width x height of one image, read from its "
                                     "header before decoding (decompression bombs are refused)")
    max_request_pixels: int = _setting(100_000_000, "width x height of all the images of one "
                                       "request, added up from their headers before any is "
                                       "decoded")
    # --- the service -----------------------------------------------------------------------
    worker_num: int | None = _setting(None, "worker processes, each a whole pipeline (fronts, "
                                      "DAG, model); auto: one per usable core, because a "
                                      "predictor call holds the GIL", SERVICE)
    build_dag_each_worker: bool = _setting(True, "worker_num whole pipelines in forked "
                                           "processes; false: one process with upstream's gRPC "
                                           "threads", SERVICE)
    is_thread_op: bool = _setting(True, "the model runs in a thread of its worker; process ops "
                                  "pass every request through multiprocessing-Manager "
                                  "channels, several ms of CPU each", SERVICE)
    concurrency: int = _setting(1, "model instances per worker (process ops only: thread ops "
                                "would share one model, which is not thread-safe)", SERVICE)
    batch_size: int = _setting(4, "images per predictor call, from requests arriving together; "
                               "a request with more images is split into several calls",
                               SERVICE)
    max_batch_pixels: int = _setting(100_000_000, "width x height of all the images of the "
                                     "requests batched together (read from their headers "
                                     "before any is decoded); at least max_request_pixels",
                                     SERVICE)
    auto_batching_timeout: int = _setting(10, "ms a partial batch may wait for more requests, "
                                          "and only while its worker has more active clients "
                                          "than the batch holds", SERVICE)
    host: str = _setting("127.0.0.1", "interface both ports bind (0.0.0.0: every interface)",
                         SERVICE)
    drain_timeout_s: int = _setting(10, "on SIGTERM, the longest wait for in-flight requests",
                                    SERVICE)
    max_inflight: int = _setting(256, "requests in flight per worker process before 503 "
                                 "OVERLOADED", SERVICE)
    max_body_bytes: int = _setting(16 << 20, "bytes of an HTTP body or gRPC message", SERVICE)
    max_connections: int = _setting(256, "open HTTP connections per worker process, each served "
                                    "by a thread of a bounded pool; past it, a prediction is "
                                    "answered 503 OVERLOADED (health and metrics still are)",
                                    SERVICE)
    keepalive_timeout_s: int = _setting(30, "an idle HTTP keep-alive connection is closed after "
                                        "this long, freeing its thread", SERVICE)
    header_timeout_s: int = _setting(10, "an HTTP request head not complete this long after its "
                                     "first byte is answered 408 and its connection closed",
                                     SERVICE)
    body_timeout_s: int = _setting(30, "an HTTP request body not complete this long after its "
                                   "head is answered 408 and its connection closed", SERVICE)

    def __post_init__(self) -> None:
        for item in fields(self):
            choices = item.metadata["choices"]
            if choices and getattr(self, item.name) not in choices:
                raise SettingsError(f"runtime {item.name}: expected one of {', '.join(choices)}, "
                                    f"got {getattr(self, item.name)!r}")
        if self.precision == "int8" and self.engine == "paddle":
            raise SettingsError("precision=int8 needs engine=onnxruntime or engine=openvino: the "
                                "INT8 model is an ONNX model (Paddle Inference runs fp32 only)")
        if self.is_thread_op and self.concurrency > 1:
            raise SettingsError("concurrency > 1 needs is_thread_op=false (thread ops share one "
                                "model, and a predictor is not thread-safe)")
        if self.max_batch_pixels < self.max_request_pixels:
            raise SettingsError(f"max_batch_pixels ({self.max_batch_pixels}) must be at least "
                                f"max_request_pixels ({self.max_request_pixels}): every "
                                "admissible request must fit in a batch")

    @property
    def worker_count(self) -> int:
        """worker_num, `auto` resolved to this process's usable cores."""
        return self.worker_num or len(os.sched_getaffinity(0))

    @property
    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, max_images=self.max_images,
                      max_image_bytes=self.max_image_bytes,
                      max_image_pixels=self.max_image_pixels,
                      max_request_pixels=self.max_request_pixels)


_TYPES: dict[str, Any] = typing.get_type_hints(Settings)
KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
_FIELDS = {f.name: f for f in fields(Settings)}


def resolve(*layers: Mapping[str, Any]) -> Settings:
    """The defaults, overridden by each layer in turn (a model.yml `runtime:` mapping, then the
    `--runtime` pairs); values may be typed (YAML) or text (command line)."""
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in _TYPES:
                raise SettingsError(f"unknown runtime setting {key!r}; known: {sorted(KEYS)} "
                                    "(`python -m serving settings` explains each)")
            values[key] = _parse(key, value)
    return Settings(**values)


def _parse(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    allows_auto = type(None) in typing.get_args(kind)
    if allows_auto and (value is None or str(value).lower() == AUTO):
        return None
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if base is bool:
        return _parse_bool(key, value)
    if base is int:
        return _parse_count(key, value)
    return str(value)


def _parse_bool(key: str, value: Any) -> bool:
    text = str(value).lower()
    if text not in _TRUE + _FALSE:
        raise SettingsError(f"runtime {key}: expected true or false, got {value!r}")
    return text in _TRUE


def _parse_count(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"runtime {key}: expected an integer, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise SettingsError(f"runtime {key}: expected an integer >= 1, got {value!r}")
    return number


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings (the command line's --runtime) -> a layer for resolve()."""
    layer = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--runtime expects key=value, got {pair!r}")
        layer[key.strip()] = value.strip()
    return layer


def as_text(settings: Settings) -> str:
    """key=value pairs, every setting, `auto` where the consumer decides."""
    return ", ".join(f"{f.name}={_shown(getattr(settings, f.name))}" for f in fields(settings))


def help_text() -> str:
    """Every setting with its type, default and why, grouped by scope."""
    lines = []
    for scope in (MODEL, SERVICE):
        lines.append(f"{scope} settings:")
        for item in fields(Settings):
            if item.metadata["scope"] == scope:
                lines.append(f"  {item.name} = {_shown(item.default)}  ({_kind(item.name)})")
                lines.append(textwrap.fill(item.metadata["why"], 96, initial_indent=" " * 6,
                                           subsequent_indent=" " * 6))
    return "\n".join(lines)


def _kind(key: str) -> str:
    choices = _FIELDS[key].metadata["choices"]
    if choices:
        return " | ".join(choices)
    kind = _TYPES[key]
    names = [t.__name__ for t in typing.get_args(kind) or (kind,) if t is not type(None)]
    return " or ".join(names + ([AUTO] if type(None) in typing.get_args(kind) else []))


def _shown(value: Any) -> str:
    if value is None:
        return AUTO
    return str(value).lower() if isinstance(value, bool) else str(value)
