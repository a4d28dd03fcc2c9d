"""Fixes for paddleclas 2.6.0 on paddlepaddle 3.x and numpy 2, each with its root cause."""

from __future__ import annotations

import importlib.abc
import types

from compat import hooks

# --- 1. `import paddleclas.ppcls.arch` drags in the retrieval demo and faiss ---------------------
# paddleclas/__init__.py:16 imports the `PaddleClas` quick-start wrapper (paddleclas.py:35), which
# imports deploy/python/predict_system.py:19 `import faiss` (image retrieval; faiss-cpu and
# prettytable are not in the lock, and the wrapper downloads models anyway). The wheel holds the
# architectures as the subpackage paddleclas.ppcls.arch, so reaching them runs the parent
# __init__ first and fails with "No module named 'faiss'". Only the subpackages are used here:
# the `paddleclas` package itself is loaded as a bare package (its __path__, no __init__ code).


class _BarePackageLoader(importlib.abc.Loader):
    """Creates the package module with its search path but does not execute its __init__.py."""

    def __init__(self, fullname: str, origin: str):
        self._origin = origin

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return None  # default module creation; the import system sets __path__ from the spec

    def exec_module(self, module: types.ModuleType) -> None:
        module.__file__ = self._origin


def _is_paddleclas_package(fullname: str) -> bool:
    return fullname == "paddleclas"


def install() -> None:
    """Registers the fixes of this module (see compat.hooks)."""
    hooks.replace_loader(_is_paddleclas_package, _BarePackageLoader)
