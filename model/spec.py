"""A model's declarative description (models/<name>/model.yml) as a typed, validated object.

Every path in the file is relative to the model folder, so tests can point at a temporary folder
laid out like models/<name>/. The export, serve and benchmark stages read nothing else about a
model.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model import settings

DESCRIPTION_FILE = "model.yml"
TASKS = ("classification", "detection")
FEED_SOURCES = ("image", "im_shape", "scale_factor")  # what preprocessing produces per image


class ModelSpecError(ValueError):
    """The description is missing a field or contradicts itself."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # POST /<name>/prediction
    http_port: int
    rpc_port: int


@dataclass(frozen=True)
class PostprocessSpec:
    type: str  # a key of model.postprocess.POSTPROCESSORS
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    name: str
    task: str
    architecture: str
    labels: tuple[str, ...]
    inference_dir: Path
    prototxt_patch: str
    preprocess: tuple[dict[str, Any], ...] | str  # steps, or a file name (infer_cfg.yml)
    feeds: dict[str, str]  # model input alias -> one of FEED_SOURCES
    fetches: tuple[str, ...]  # fetch aliases in model output order
    postprocess: PostprocessSpec
    service: ServiceSpec
    runtime: dict[str, Any] = field(default_factory=dict)  # keys of model.settings.Settings
    samples: str = ""  # "module:function" making sample JPEGs: f(count) -> list[bytes]

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        """Load from a model folder (or its model.yml)."""
        path = Path(path)
        file = path if path.is_file() else path / DESCRIPTION_FILE
        if not file.is_file():
            raise ModelSpecError(f"{file}: no model description (expected {DESCRIPTION_FILE})")
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        return cls.from_mapping(raw, file.parent.resolve(), source=str(file))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], folder: Path, source: str = "model.yml"
                     ) -> ModelSpec:
        def need(key: str) -> Any:
            if key not in raw:
                raise ModelSpecError(f"{source}: missing required field {key!r}")
            return raw[key]

        task = need("task")
        if task not in TASKS:
            raise ModelSpecError(f"{source}: task {task!r} is not one of {TASKS}")
        feeds = {str(k): str(v) for k, v in need("feeds").items()}
        unknown = sorted(set(feeds.values()) - set(FEED_SOURCES))
        if unknown:
            raise ModelSpecError(f"{source}: feeds use unknown sources {unknown}; "
                                 f"known: {FEED_SOURCES}")
        post = dict(need("postprocess"))
        service = need("service")
        preprocess = need("preprocess")
        runtime = dict(raw.get("runtime") or {})
        try:
            settings.resolve(runtime)
        except settings.SettingsError as error:
            raise ModelSpecError(f"{source}: runtime: {error}") from None
        return cls(
            folder=folder,
            name=str(need("name")),
            task=task,
            architecture=str(raw.get("architecture", "")),
            labels=read_labels(folder / need("labels")),
            inference_dir=folder / need("inference_model"),
            prototxt_patch=str(raw.get("prototxt_patch", raw["name"])),
            preprocess=preprocess if isinstance(preprocess, str) else tuple(preprocess),
            feeds=feeds,
            fetches=tuple(need("fetches")),
            postprocess=PostprocessSpec(type=post.pop("type"), params=post),
            service=ServiceSpec(name=str(service["name"]), http_port=int(service["http_port"]),
                                rpc_port=int(service["rpc_port"])),
            runtime=runtime,
            samples=str(raw.get("samples", "")),
        )

    def preprocess_steps(self, model_dir: Path | None = None) -> list[dict[str, Any]]:
        """The preprocessing steps; a file reference (PaddleDetection's infer_cfg.yml) is read
        from the model folder being served (model_dir) when it holds a copy, else from the
        inference model folder."""
        if not isinstance(self.preprocess, str):
            return [dict(step) for step in self.preprocess]
        candidates = [d / self.preprocess for d in (model_dir, self.inference_dir) if d]
        for candidate in candidates:
            if candidate.is_file():
                infer_cfg = yaml.safe_load(candidate.read_text(encoding="utf-8"))
                return [dict(step) for step in infer_cfg["Preprocess"]]
        raise ModelSpecError(f"{self.name}: preprocessing file {self.preprocess!r} not found in "
                             f"{[str(c.parent) for c in candidates]}")


    def sample_images(self, count: int) -> list[bytes]:
        """`count` sample JPEGs from the generator the description names (`samples:`), for
        benchmarks and tests."""
        return _sample_generator(self.samples, self.name)(count)


def _sample_generator(reference: str, model: str) -> Callable[[int], list[bytes]]:
    module_name, _, function = reference.partition(":")
    if not (module_name and function):
        raise ModelSpecError(f"{model}: no sample images: set `samples: module:function` in its "
                             "model.yml (a function of count returning JPEG bytes)")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ModelSpecError(f"{model}: samples {reference!r} cannot be loaded: {error}") from None


_ID_NAME = re.compile(r"^\s*(\d+)\s+(\S.*?)\s*$")


def read_labels(path: Path) -> tuple[str, ...]:
    """PaddleClas "id name" lines or PaddleDetection one-name-per-line, in class-id order."""
    if not path.is_file():
        raise ModelSpecError(f"label list {path} not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    matches = [_ID_NAME.match(line) for line in lines]
    if lines and all(matches):
        by_id = {int(m.group(1)): m.group(2) for m in matches if m}
        if sorted(by_id) != list(range(len(by_id))):
            raise ModelSpecError(f"{path}: class ids must be 0..{len(by_id) - 1}")
        return tuple(by_id[i] for i in range(len(by_id)))
    return tuple(line.strip() for line in lines)
