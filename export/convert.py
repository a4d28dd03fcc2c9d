"""The export stage: inference model, checkpoint or serving folder -> patched serving folder.

Each step logs what it read and wrote on the `export` logger; `python -m export` shows it.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path

import yaml
from paddle_serving_app.proto.general_model_config_pb2 import GeneralModelConfig

from export import checksums
from export.errors import ExportError
from export.model_io import find_inference_model, read_interface
from export.onnx_models import write_onnx_models
from export.patch import Patch, apply_patch, load_patch
from export.serving_folder import (
    SERVER_DIR,
    build_config,
    check_description,
    check_local_predictor_contract,
    copy_serving_folder,
    existing_confs,
    is_serving_folder,
    read_config,
    write_config,
    write_serving_folder,
)
from model.spec import DESCRIPTION_FILE, ModelSpec

log = logging.getLogger("export")

CHECKPOINT_SUFFIX = ".pdparams"
# A config's top-level key tells which toolkit's model code it describes.
CHECKPOINT_EXPORTERS = {
    "architecture": "export.detector_checkpoint",  # PaddleDetection
    "Arch": "export.classifier_checkpoint",  # PaddleClas
}


def _patched(config: GeneralModelConfig, patch: Patch | None, label: str,
             description: ModelSpec | None) -> GeneralModelConfig:
    if patch is not None:
        for line in apply_patch(config, patch, label):
            log.info("  %s [%s] %s", patch.source.name, label, line)
    check_local_predictor_contract(config, label)
    if description is not None:
        source = description.folder / DESCRIPTION_FILE
        check_description(config, list(description.feeds), description.fetches, str(source),
                          label)
        log.info("  [%s] feeds and fetches match %s", label, source)
    return config


def _top_level_keys(config_path: Path, seen: frozenset[Path] = frozenset()) -> set[str]:
    """Keys of a toolkit config, following PaddleDetection's `_BASE_` includes."""
    if config_path in seen:
        raise ExportError(f"{config_path}: `_BASE_` includes form a cycle")
    try:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ExportError(f"{config_path}: cannot read the model config: {error}") from error
    if not isinstance(document, dict):
        raise ExportError(f"{config_path}: a model config is a YAML mapping")
    keys = set(document)
    for base in document.get("_BASE_", []):
        keys |= _top_level_keys((config_path.parent / base).resolve(), seen | {config_path})
    return keys


def checkpoint_exporter(config_path: Path) -> str:
    """The module that exports checkpoints of this config's toolkit."""
    keys = _top_level_keys(config_path.resolve())
    found = [module for key, module in CHECKPOINT_EXPORTERS.items() if key in keys]
    if len(found) != 1:
        raise ExportError(
            f"{config_path}: cannot tell the toolkit: a PaddleDetection config has a top-level "
            "`architecture:` key, a PaddleClas config `Arch:`"
        )
    return found[0]


def export_checkpoint(weights: Path, config_path: Path, workdir: Path) -> Path:
    """Training checkpoint + config -> inference model folder, through the toolkit's code."""
    module = checkpoint_exporter(config_path)
    log.info("exporting checkpoint %s with %s (%s)", weights, config_path, module)
    exporter = importlib.import_module(module).export_inference_model
    return Path(exporter(config_path, weights, workdir / "inference"))


def export_inference_folder(source: Path, out: Path, patch: Patch | None,
                            description: ModelSpec | None, onnx: str = "") -> None:
    """onnx: "" (Paddle program only), "fp32" (+ inference.onnx) or "int8" (+ both ONNX models,
    export.onnx_models)."""
    model = find_inference_model(source)
    log.info("read %s model %s + %s%s", "PIR" if model.is_pir else "legacy", model.program,
             model.params.name, "".join(f" + {p.name}" for p in model.extras))
    interface = read_interface(model)
    for kind, specs in (("feed", interface.feeds), ("fetch", interface.fetches)):
        for spec in specs:
            log.info("  %s %s %s %s", kind, spec.name, spec.dtype, list(spec.shape))
    config = _patched(build_config(interface), patch, "serving config", description)

    def onnx_models(server: Path) -> None:
        write_onnx_models(model, server, description, int8=onnx == "int8")

    written = write_serving_folder(model, config, out, onnx_models if onnx else None)
    for path in written.files:
        log.info("wrote %s", path)


def patch_serving_folder(source: Path, out: Path, patch: Patch | None,
                         description: ModelSpec | None) -> None:
    """Patch an existing serving folder's configs (text + binary twin), copying it to out first."""
    if out.resolve() == source.resolve():
        log.info("patching serving folder %s in place", source)
    else:
        copy_serving_folder(source, out)
        log.info("copied serving folder %s to %s", source, out)
    server = out / SERVER_DIR
    if (server / checksums.MANIFEST_NAME).is_file():  # as exported, before this patch
        log.info("verified %d model files against %s", len(checksums.verify_checksums(server)),
                 checksums.MANIFEST_NAME)
    for conf in existing_confs(out):
        config = _patched(read_config(conf), patch, conf.name, description)
        write_config(config, conf)
        log.info("wrote %s (+ binary twin)", conf)
    if server.is_dir():
        log.info("wrote %s", checksums.write_checksums(server))


def convert(source: Path, out: Path | None, patch_file: Path | None, config: Path | None,
            description: ModelSpec | None = None, onnx: str = "") -> Path:
    """Run the export stage; returns the serving folder written. description: the model.yml
    whose feeds and fetches the patched configs must match. onnx: see export_inference_folder
    (not for a serving folder SOURCE, which is only patched)."""
    patch = load_patch(patch_file) if patch_file else None
    if is_serving_folder(source):
        if onnx:
            raise ExportError(f"{source} is a serving folder, which is only patched: export the "
                              "ONNX models from its inference model folder or checkpoint")
        patch_serving_folder(source, out or source, patch, description)
        return out or source
    if out is None:
        raise ExportError("--out is required unless SOURCE is an existing serving folder")
    if source.suffix == CHECKPOINT_SUFFIX:
        if config is None:
            raise ExportError(f"{source} is a checkpoint: pass its model config with --config")
        with tempfile.TemporaryDirectory(prefix="export-") as workdir:
            export_inference_folder(export_checkpoint(source, config, Path(workdir)), out, patch,
                                    description, onnx)
        return out
    export_inference_folder(source, out, patch, description, onnx)
    return out
