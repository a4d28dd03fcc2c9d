"""The export stage run for the serve stage: build/serving/<name>/ (serving_server/ and
serving_client/) is exported from the description's inference model, again only when what the
export reads has changed (a retrained model, an edited patch or description, new export code) or
when the runtime settings ask for a model file it lacks (the ONNX models of the onnxruntime and
openvino engines: inference.onnx for fp32, inference_int8.onnx too for int8)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from model import settings
from model.spec import DESCRIPTION_FILE, ModelSpec
from serving.control.layout import ROOT, Layout
from serving.control.manager import ServingError

INPUTS_FILE = "export_inputs.sha256"  # in build/serving/<name>/: what the folders were built from
# The ONNX models a folder holds, each level including the ones before it, and the export flag
# that writes them.
ONNX_LEVELS = {"": (), "fp32": ("--onnx",), "int8": ("--int8",)}


def export_inputs_digest(layout: Layout, spec: ModelSpec) -> str:
    """sha256 over everything the export stage reads: the inference model files, the prototxt
    patch, the description it is checked against, and the export code itself."""
    files = [*sorted(p for p in spec.inference_dir.rglob("*") if p.is_file()),
             layout.patch_file(spec), spec.folder / DESCRIPTION_FILE,
             *sorted((ROOT / "export").glob("*.py")), ROOT / "compat" / "paddle2onnx.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def onnx_level(spec: ModelSpec, runtime: Mapping[str, str]) -> str:
    """The ONNX models the resolved settings need: "" (none), "fp32" or "int8"."""
    resolved = settings.resolve(spec.runtime, runtime)
    return "" if resolved.engine == "paddle" else resolved.precision


def _recorded(record_file: Path) -> tuple[str, str]:
    """(inputs digest, ONNX level) a folder was built with; ("", "") if unknown."""
    if not record_file.is_file():
        return "", ""
    digest, _, level = record_file.read_text().strip().partition(" ")
    return digest, level if level in ONNX_LEVELS else ""


def ensure_serving_folder(layout: Layout, spec: ModelSpec,
                          runtime: Mapping[str, str] | None = None) -> bool:
    """Build build/serving/<name>/ with the export stage when it is missing, was built from
    other inputs, or lacks the ONNX models the settings (model.yml, then `runtime`) need; True
    if it (re)built. A rebuild keeps the ONNX models the folder had, so switching engines back
    and forth does not export again."""
    if not spec.inference_dir.is_dir():
        raise ServingError(f"[{spec.name}] no inference model at {spec.inference_dir}: train the "
                           "default models (`make train`) or put an exported model there")
    serving_dir = layout.serving_dir(spec.name)
    wanted = export_inputs_digest(layout, spec)
    record = serving_dir / INPUTS_FILE
    built = (layout.serving_server(spec.name) / "serving_server_conf.prototxt").is_file()
    digest, had = _recorded(record) if built else ("", "")
    levels = list(ONNX_LEVELS)
    needed = onnx_level(spec, runtime or {})
    if digest == wanted and levels.index(had) >= levels.index(needed):
        return False
    level = max(needed, had, key=levels.index)
    for stale in ("serving_server", "serving_client"):
        shutil.rmtree(serving_dir / stale, ignore_errors=True)
    command = [sys.executable, "-m", "export", str(spec.inference_dir),
               "--patch", str(layout.patch_file(spec)),
               "--model", str(spec.folder / DESCRIPTION_FILE),
               "--out", str(serving_dir), *ONNX_LEVELS[level]]
    reason = ("its inputs changed" if digest != wanted else f"the {needed} ONNX model is asked "
              "for") if built else "missing"
    print(f"[{spec.name}] building the serving folder ({reason}): {' '.join(command)}",
          flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise ServingError(f"[{spec.name}] export failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    record.write_text(f"{wanted} {level}".strip() + "\n")
    return True


def ensure_serving_folder_for(layout: Layout, spec: ModelSpec,
                              runtimes: Sequence[Mapping[str, str]]) -> None:
    """One serving folder with every model file any of `runtimes` needs: built once, for the
    neediest first (a rebuild keeps what the folder had)."""
    levels = list(ONNX_LEVELS)
    for runtime in sorted(runtimes, key=lambda r: levels.index(onnx_level(spec, r)),
                          reverse=True):
        ensure_serving_folder(layout, spec, runtime)
