"""The export stage run for the serve stage: build/serving/<name>/ (serving_server/ and
serving_client/) is exported from the description's inference model, again only when what the
export reads has changed (a retrained model, an edited patch or description, new export code)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

from model.spec import DESCRIPTION_FILE, ModelSpec
from serving.control.layout import ROOT, Layout
from serving.control.manager import ServingError

INPUTS_FILE = "export_inputs.sha256"  # in build/serving/<name>/: what the folders were built from


def export_inputs_digest(layout: Layout, spec: ModelSpec) -> str:
    """sha256 over everything the export stage reads: the inference model files, the prototxt
    patch, the description it is checked against, and the export code itself."""
    files = [*sorted(p for p in spec.inference_dir.rglob("*") if p.is_file()),
             layout.patch_file(spec), spec.folder / DESCRIPTION_FILE,
             *sorted((ROOT / "export").glob("*.py"))]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def ensure_serving_folder(layout: Layout, spec: ModelSpec) -> bool:
    """Build build/serving/<name>/ with the export stage when it is missing or was built from
    other inputs; True if it (re)built."""
    if not spec.inference_dir.is_dir():
        raise ServingError(f"[{spec.name}] no inference model at {spec.inference_dir}: train the "
                           "default models (`make train`) or put an exported model there")
    serving_dir = layout.serving_dir(spec.name)
    wanted = export_inputs_digest(layout, spec)
    record = serving_dir / INPUTS_FILE
    built = (layout.serving_server(spec.name) / "serving_server_conf.prototxt").is_file()
    if built and record.is_file() and record.read_text().strip() == wanted:
        return False
    for stale in ("serving_server", "serving_client"):
        shutil.rmtree(serving_dir / stale, ignore_errors=True)
    command = [sys.executable, "-m", "export", str(spec.inference_dir),
               "--patch", str(layout.patch_file(spec)),
               "--model", str(spec.folder / DESCRIPTION_FILE),
               "--out", str(serving_dir)]
    reason = "its inputs changed" if built else "missing"
    print(f"[{spec.name}] building the serving folder ({reason}): {' '.join(command)}",
          flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise ServingError(f"[{spec.name}] export failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    record.write_text(wanted + "\n")
    return True
