"""sha256 manifest of a serving model's files: written at export, verified by services at load.

The manifest uses `sha256sum` format ("<hex>  <file>"), so `sha256sum -c model_checksums.sha256`
run inside serving_server/ checks it too. Its name must not end in .json: the compat LocalPredictor
model lookup treats any *.json in the folder as a PIR program.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from export.errors import ChecksumError

MANIFEST_NAME = "model_checksums.sha256"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(serving_server_dir: Path) -> dict[str, Path]:
    """Every file of the folder and its subfolders but the manifest, the configs included
    (the manifest is written after patching them), by path relative to the folder, sorted."""
    return {
        path.relative_to(serving_server_dir).as_posix(): path
        for path in sorted(serving_server_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def write_checksums(serving_server_dir: Path) -> Path:
    manifest = serving_server_dir / MANIFEST_NAME
    lines = [f"{_sha256(path)}  {name}\n"
             for name, path in model_files(serving_server_dir).items()]
    manifest.write_text("".join(lines), encoding="utf-8")
    return manifest


def _read_manifest(manifest: Path) -> dict[str, str]:
    expected: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        digest, separator, name = line.partition("  ")
        if not separator or len(digest) != 64:
            raise ChecksumError(f"{manifest}:{number}: not a '<sha256>  <file>' line: {line!r}")
        expected[name] = digest
    return expected


def verify_checksums(serving_server_dir: str | Path) -> list[str]:
    """Check every model file against the manifest; returns the verified names.

    Raises ChecksumError listing modified, missing and unlisted files (an unlisted *.pdmodel or
    *.json could be loaded instead of the exported program).
    """
    folder = Path(serving_server_dir)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise ChecksumError(
            f"{manifest} is missing: re-run `python -m export` on this folder to create it"
        )
    expected = _read_manifest(manifest)
    present = model_files(folder)
    problems = [f"missing: {name}" for name in sorted(expected.keys() - present.keys())]
    problems += [f"not in the manifest: {name}" for name in sorted(present.keys() - expected)]
    problems += [
        f"modified: {name}"
        for name in sorted(expected.keys() & present.keys())
        if _sha256(present[name]) != expected[name]
    ]
    if problems:
        summary = "; ".join(problems)
        raise ChecksumError(f"{folder}: model files do not match {MANIFEST_NAME}: {summary}")
    return sorted(expected)
