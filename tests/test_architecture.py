"""The layout's rules (docs/architecture.md), read from the code's own imports: the model contract
and training never depend on the serving stage or on Paddle Serving, one adapter module owns
Paddle Serving's pipeline, and nothing edits sys.path or imports compat by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compat", "model", "export", "serving", "clients", "bench", "train", "deploy",
            "evaluation")
MAX_SERVING_LINES = 400


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path in sources(package) for module in sorted(imported_modules(path))
            if module.split(".")[0] in forbidden or module.startswith(forbidden)]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("model", ("serving", "export", "bench", "clients", "train", "paddle_serving_server",
               "paddle_serving_app", "paddle_serving_client")),
    ("train", ("serving", "bench", "clients", "paddle_serving_server")),
    ("export", ("serving", "bench", "clients", "train")),
    ("serving", ("bench", "clients", "train", "evaluation")),
    ("evaluation", ("bench", "clients", "export", "paddle_serving_server")),
])
def test_imports_point_down_the_flow(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == []


def test_only_the_adapter_module_touches_paddle_servings_pipeline() -> None:
    touching = [str(path.relative_to(ROOT)) for path in sources("serving")
                if any(module.startswith("paddle_serving") for module in imported_modules(path))]
    assert touching == ["serving/pipeline.py"]


def test_no_entry_point_edits_the_import_path_or_imports_compat_by_hand() -> None:
    found = []
    for package in PACKAGES:
        for path in sources(package):
            text = path.read_text(encoding="utf-8")
            if "sys.path" in text or "PYTHONPATH" in text:
                found.append(f"{path.relative_to(ROOT)}: edits the import path")
            if package != "compat" and "compat" in imported_modules(path):
                found.append(f"{path.relative_to(ROOT)}: imports compat")
    assert found == []


def test_no_serving_module_is_too_long_to_read() -> None:
    long = {str(path.relative_to(ROOT)): lines for path in sources("serving")
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_SERVING_LINES}
    assert long == {}
