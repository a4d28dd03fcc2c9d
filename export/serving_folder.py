"""Write and read Paddle Serving model folders (the GeneralModelConfig prototxt + binary twin).

A serving folder holds `serving_server/` (model files, serving_server_conf.prototxt, its binary
serving_server_conf.stream.prototxt twin, the checksum manifest) and `serving_client/`
(serving_client_conf.prototxt + .stream twin, same content). Paddle Serving's own converter
(paddle_serving_client.convert) imports paddle.fluid, gone since paddle 2.6, so this module is the
converter. The text file is the source of truth (LocalPredictor reads it); the binary twin is
regenerated from it on every write, so both always agree.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from paddle_serving_app.proto.general_model_config_pb2 import GeneralModelConfig

from export.checksums import write_checksums
from export.errors import ExportError
from export.model_io import InferenceModel, ModelInterface, TensorSpec

SERVER_DIR = "serving_server"
CLIENT_DIR = "serving_client"
SERVER_CONF = f"{SERVER_DIR}/serving_server_conf.prototxt"
CLIENT_CONF = f"{CLIENT_DIR}/serving_client_conf.prototxt"

# Paddle Serving's type codes (feed_type / fetch_type), as LocalPredictor.predict casts them.
SERVING_TYPE_CODES = {
    "int64": 0, "float32": 1, "int32": 2, "float64": 3, "int16": 4, "float16": 5,
    "uint16": 6, "uint8": 7, "int8": 8, "bool": 9, "complex64": 10, "complex128": 11,
}  # fmt: skip


def stream_twin(text_path: Path) -> Path:
    """serving_server_conf.prototxt -> serving_server_conf.stream.prototxt"""
    return text_path.with_name(text_path.name.removesuffix(".prototxt") + ".stream.prototxt")


def _type_code(spec: TensorSpec) -> int:
    if spec.dtype not in SERVING_TYPE_CODES:
        raise ExportError(f"tensor {spec.name}: dtype {spec.dtype} has no Paddle Serving type code")
    return SERVING_TYPE_CODES[spec.dtype]


def build_config(interface: ModelInterface) -> GeneralModelConfig:
    """One feed_var/fetch_var per model input/output, aliases = real names, shapes without batch."""
    config = GeneralModelConfig()
    for spec in interface.feeds:
        config.feed_var.add(name=spec.name, alias_name=spec.name, is_lod_tensor=spec.lod_level > 0,
                            feed_type=_type_code(spec), shape=spec.shape[1:])
    for spec in interface.fetches:
        config.fetch_var.add(name=spec.name, alias_name=spec.name, is_lod_tensor=spec.lod_level > 0,
                             fetch_type=_type_code(spec), shape=spec.shape[1:])
    return config


def write_config(config: GeneralModelConfig, text_path: Path) -> None:
    """Write the text prototxt and its binary .stream twin (both deterministic)."""
    text_path.parent.mkdir(parents=True, exist_ok=True)
    text_path.write_text(text_format.MessageToString(config), encoding="utf-8")
    stream_twin(text_path).write_bytes(config.SerializeToString(deterministic=True))


def read_config(text_path: Path) -> GeneralModelConfig:
    if not text_path.is_file():
        raise ExportError(f"{text_path}: no such file")
    try:
        return text_format.Parse(text_path.read_text(encoding="utf-8"), GeneralModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise ExportError(
            f"{text_path}: not a valid GeneralModelConfig prototxt ({error}); fix the file or "
            "re-export the model"
        ) from error


def existing_confs(folder: Path) -> list[Path]:
    """The server/client text configs present in a serving folder."""
    return [folder / conf for conf in (SERVER_CONF, CLIENT_CONF) if (folder / conf).is_file()]


def is_serving_folder(folder: Path) -> bool:
    return folder.is_dir() and bool(existing_confs(folder))


@dataclass(frozen=True)
class WrittenFolder:
    root: Path
    files: tuple[Path, ...]


def _replace_dir(built: Path, target: Path) -> None:
    """Swap a freshly built folder in, so no stale model file (a second program) survives."""
    if target.exists():
        if any(target.iterdir()) and not any(target.glob("*_conf.prototxt")):
            raise ExportError(f"{target}: exists and is not a serving folder; not replacing it")
        shutil.rmtree(target)
    built.rename(target)


def write_serving_folder(
    model: InferenceModel, config: GeneralModelConfig, out: Path
) -> WrittenFolder:
    """Create out/serving_server (model files + config + manifest) and out/serving_client."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        server, client = Path(scratch) / SERVER_DIR, Path(scratch) / CLIENT_DIR
        server.mkdir()
        for source in model.files:
            shutil.copyfile(source, server / source.name)
        write_config(config, Path(scratch) / SERVER_CONF)
        write_config(config, Path(scratch) / CLIENT_CONF)
        write_checksums(server)
        _replace_dir(server, out / SERVER_DIR)
        _replace_dir(client, out / CLIENT_DIR)
    files = sorted(p for d in (SERVER_DIR, CLIENT_DIR) for p in (out / d).iterdir())
    return WrittenFolder(root=out, files=tuple(files))


def copy_serving_folder(source: Path, out: Path) -> None:
    """Copy a user's serving folder (server and/or client part) to out, replacing older copies."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        for part in (SERVER_DIR, CLIENT_DIR):
            if (source / part).is_dir():
                shutil.copytree(source / part, Path(scratch) / part)
                _replace_dir(Path(scratch) / part, out / part)


def check_description(config: GeneralModelConfig, feeds: Sequence[str], fetches: Sequence[str],
                      description: str, label: str) -> None:
    """The description (models/<name>/model.yml) names the feeds and fetches the services use:
    they must be the patched config's aliases, the fetches in the model's output order."""
    feed_aliases = sorted(v.alias_name for v in config.feed_var)
    if sorted(feeds) != feed_aliases:
        raise ExportError(f"{description}: feeds {sorted(feeds)} do not match the {label}'s feed "
                          f"aliases {feed_aliases}; fix the description or the prototxt patch")
    fetch_aliases = [v.alias_name for v in config.fetch_var]
    if list(fetches) != fetch_aliases:
        raise ExportError(f"{description}: fetches {list(fetches)} do not match the {label}'s "
                          f"fetch aliases {fetch_aliases} (in model output order); fix the "
                          "description or the prototxt patch")


def check_local_predictor_contract(config: GeneralModelConfig, label: str) -> None:
    """Refuse configs that paddle_serving_app's LocalPredictor would serve wrongly.

    It looks feed types up by alias but feeds tensors by real name (local_predict.py ~L339), and it
    looks fetches up by real name, falling back to output order only when NO requested name is a
    real output (~L429): a mix silently drops the unmatched fetches.
    """
    renamed_feeds = [v.name for v in config.feed_var if v.alias_name != v.name]
    if renamed_feeds:
        raise ExportError(
            f"{label}: feed alias_name must equal the real input name for local_predictor, "
            f"but differs for {renamed_feeds}"
        )
    aliases = [v.alias_name for v in config.fetch_var]
    if len(set(aliases)) != len(aliases):
        raise ExportError(f"{label}: duplicate fetch alias_name in {aliases}")
    real_names = {v.name for v in config.fetch_var}
    by_name = [v.alias_name in real_names for v in config.fetch_var]
    if any(by_name) and not all(v.alias_name == v.name for v in config.fetch_var):
        raise ExportError(
            f"{label}: fetch aliases {aliases} mix real output names {sorted(real_names)} with "
            "other names; LocalPredictor would drop or swap outputs: alias either every fetch_var "
            "by its own name or none by any real output name"
        )
