"""Declarative prototxt patches: set client-facing fields of feed_var/fetch_var entries.

A patch file (prototxt_patches/<model>.yml, format in prototxt_patches/README.md) lists, per
section (feed_var, fetch_var), entries of the form

    - match: {names: [softmax_0.tmp_0, fetch_name_0], position: 0}
      set: {alias_name: prediction}

`names` matches a variable whose real name OR current alias is one of them (export formats name
the same output differently); `position` is the variable's index in its section; with both, the
variable at that position must also carry one of the names. Exactly one variable must match.
Only presentation fields can be set: names, types and shapes are read from the model itself.
Applying a patch twice changes nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from paddle_serving_app.proto.general_model_config_pb2 import FeedVar, FetchVar, GeneralModelConfig

from export.errors import ExportError

SECTIONS = ("feed_var", "fetch_var")
PATCHABLE_FIELDS: dict[str, type] = {"alias_name": str, "is_lod_tensor": bool}


@dataclass(frozen=True)
class Match:
    names: tuple[str, ...] = ()
    position: int | None = None

    def describe(self) -> str:
        parts = [f"name or alias in {list(self.names)}"] if self.names else []
        parts += [f"position {self.position}"] if self.position is not None else []
        return " at ".join(parts)


@dataclass(frozen=True)
class PatchEntry:
    section: str
    match: Match
    values: tuple[tuple[str, object], ...]  # (field, value), in file order


@dataclass(frozen=True)
class Patch:
    source: Path
    entries: tuple[PatchEntry, ...]


# --- reading and validating a patch file ---------------------------------------------------------


def _parse_match(raw: object, where: str) -> Match:
    if not isinstance(raw, dict) or not raw or set(raw) - {"names", "position"}:
        raise ExportError(f"{where}: `match` needs `names` (list of str) and/or `position` (int)")
    names = raw.get("names", [])
    position = raw.get("position")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ExportError(f"{where}: `match.names` must be a list of variable names or aliases")
    if position is not None and (type(position) is not int or position < 0):
        raise ExportError(f"{where}: `match.position` must be an integer >= 0")
    return Match(tuple(names), position)


def _parse_values(raw: object, where: str) -> tuple[tuple[str, object], ...]:
    if not isinstance(raw, dict) or not raw:
        raise ExportError(f"{where}: `set` must map field names to values")
    for field, value in raw.items():
        if field not in PATCHABLE_FIELDS:
            raise ExportError(
                f"{where}: field {field!r} cannot be patched (only {', '.join(PATCHABLE_FIELDS)}); "
                "names, types and shapes are read from the model itself"
            )
        wanted = PATCHABLE_FIELDS[field]
        if type(value) is not wanted or value == "":
            raise ExportError(f"{where}: {field} must be a non-empty {wanted.__name__}")
    return tuple(raw.items())


def _parse_entry(section: str, index: int, raw: object, source: Path) -> PatchEntry:
    where = f"{source}: {section}[{index}]"
    if not isinstance(raw, dict) or set(raw) != {"match", "set"}:
        raise ExportError(f"{where}: each entry needs exactly the keys `match` and `set`")
    return PatchEntry(section, _parse_match(raw["match"], where), _parse_values(raw["set"], where))


def load_patch(path: Path) -> Patch:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExportError(f"{path}: cannot read the patch file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ExportError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict) or not document or set(document) - set(SECTIONS):
        raise ExportError(f"{path}: a patch is a mapping with `feed_var` and/or `fetch_var` lists")
    entries = []
    for section in SECTIONS:
        raw_entries = document.get(section, [])
        if not isinstance(raw_entries, list):
            raise ExportError(f"{path}: `{section}` must be a list of entries")
        entries += [_parse_entry(section, i, raw, path) for i, raw in enumerate(raw_entries)]
    return Patch(path, tuple(entries))


# --- applying a patch to a config ----------------------------------------------------------------


def describe_vars(variables: Sequence[FeedVar | FetchVar]) -> str:
    return ", ".join(
        f"[{i}] {v.name}" + (f" (alias {v.alias_name})" if v.alias_name != v.name else "")
        for i, v in enumerate(variables)
    ) or "none"


def _matching_index(variables: Sequence[FeedVar | FetchVar], match: Match) -> int | None:
    candidates = range(len(variables)) if match.position is None else [match.position]
    found = [
        i
        for i in candidates
        if i < len(variables)
        and (not match.names or {variables[i].name, variables[i].alias_name} & set(match.names))
    ]
    return found[0] if len(found) == 1 else None


def _apply_entry(config: GeneralModelConfig, entry: PatchEntry, label: str) -> list[str]:
    variables = getattr(config, entry.section)
    index = _matching_index(variables, entry.match)
    if index is None:
        raise ExportError(
            f"{label}: no single {entry.section} matches {entry.match.describe()}; "
            f"the {entry.section} entries are: {describe_vars(variables)}"
        )
    variable = variables[index]
    changes = []
    for field, value in entry.values:
        old = getattr(variable, field)
        where = f"{entry.section}[{index}] {variable.name}: {field}"
        if old == value:
            changes.append(f"{where} already {json.dumps(value)}")
        else:
            setattr(variable, field, value)
            changes.append(f"{where} {json.dumps(old)} -> {json.dumps(value)}")
    return changes


def apply_patch(config: GeneralModelConfig, patch: Patch, label: str) -> list[str]:
    """Set the patch's fields in `config` (in place); returns one readable line per field."""
    return [line for entry in patch.entries for line in _apply_entry(config, entry, label)]
