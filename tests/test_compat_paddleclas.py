"""compat.paddleclas: each fix is needed (the upstream failure is reproduced) and works."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from upstream import run_python

pytestmark = pytest.mark.integration  # a child interpreter or a real model each

ROOT = Path(__file__).resolve().parents[1]


def test_arch_package_imports_without_the_faiss_wrapper() -> None:
    stock = run_python("import paddleclas.ppcls.arch", with_compat=False)
    assert stock.returncode != 0  # paddleclas/__init__.py -> predict_system.py: import faiss
    assert "No module named 'faiss'" in stock.stderr

    from paddleclas.ppcls.arch import build_model  # in this process compat is installed

    model = build_model({"Arch": {"name": "PPLCNetV2_base", "class_num": 4, "pretrained": False}})
    assert type(model).__name__ == "PPLCNetV2"
    assert "faiss" not in sys.modules
    assert not hasattr(sys.modules["paddleclas"], "PaddleClas")  # its __init__ did not run
