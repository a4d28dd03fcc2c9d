"""The mechanism the fixes use: a meta-path finder that runs a fix right before or right after its
module loads, or replaces how a module is built."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable
from types import ModuleType

PostImportFix = Callable[[ModuleType], None]

_pre_import_steps: dict[str, list[Callable[[], None]]] = {}
_post_import_fixes: dict[str, list[PostImportFix]] = {}
_replacement_loaders: list[tuple[Callable[[str], bool], type[importlib.abc.Loader]]] = []
applied: list[str] = []  # "<module>:<fix>" in the order fixes ran
# Fix names (comma-separated) left out, to see what upstream does without one of them while the
# others still run (tests/upstream.py).
SKIP = "PADDLE_VISION_SERVING_COMPAT_SKIP"


def _skipped(name: str) -> bool:
    return name in os.environ.get(SKIP, "").split(",")


def after_import(module_name: str) -> Callable[[PostImportFix], PostImportFix]:
    """Register `fix(module)` to run once `module_name` has executed (now, if it already has)."""

    def register(fix: PostImportFix) -> PostImportFix:
        _post_import_fixes.setdefault(module_name, []).append(fix)
        if module_name in sys.modules:
            _run_fix(fix, sys.modules[module_name])
        return fix

    return register


def before_import(module_name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register `step()` to run once, just before `module_name` is first imported."""

    def register(step: Callable[[], None]) -> Callable[[], None]:
        _pre_import_steps.setdefault(module_name, []).append(step)
        return step

    return register


def replace_loader(matches: Callable[[str], bool], loader: type[importlib.abc.Loader]) -> None:
    """Build every module whose name `matches` with `loader(fullname, path)` instead of its own."""
    _replacement_loaders.append((matches, loader))


def _run_fix(fix: PostImportFix, module: ModuleType) -> None:
    if not _skipped(fix.__name__):
        fix(module)
        applied.append(f"{module.__name__}:{fix.__name__}")


class _FixingLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, fixes: list[PostImportFix]):
        self._wrapped = wrapped
        self._fixes = fixes

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        for fix in self._fixes:
            _run_fix(fix, module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        for step in _pre_import_steps.pop(fullname, []):
            step()
            applied.append(f"{fullname}:{step.__name__}")
        fixes = _post_import_fixes.get(fullname)
        replacement = next((ldr for match, ldr in _replacement_loaders if match(fullname)), None)
        if not fixes and replacement is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.origin is None:
            return spec
        if replacement is not None:
            spec.loader = replacement(fullname, spec.origin)
        if fixes:
            spec.loader = _FixingLoader(spec.loader, fixes)
        return spec


_finder = _Finder()


def installed() -> bool:
    return _finder in sys.meta_path


def install() -> None:
    if not installed():
        sys.meta_path.insert(0, _finder)
