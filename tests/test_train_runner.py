"""`make train`'s runner (python -m train): side-by-side trainings, their logs, the verdicts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from train import __main__ as runner

pytestmark = pytest.mark.integration  # a child interpreter or a real model each


def test_last_line_follows_progress_bars(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("start\nepoch 1:  10%\repoch 1:  20%\repoch 1:  30%\r\n\n")
    assert runner.last_line(log) == "epoch 1:  30%"
    log.write_text("")
    assert runner.last_line(log) == "(no output yet)"


def test_result_line_compares_with_the_target(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"val_top1": 0.965}))
    assert runner.result_line("peach", metrics) == \
        "peach: validation top-1 0.965 (meets the target 0.95)"
    metrics.write_text(json.dumps({"valid_map50": 0.5}))
    assert "0.500 (BELOW the target 0.80)" in runner.result_line("traffic_light", metrics)
    assert "no validation mAP@0.5" in runner.result_line("traffic_light", tmp_path / "none")


def test_runs_trainers_side_by_side_and_reports_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "fake_trainers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # each fake trainer waits for the other to have started: only a parallel runner finishes
    for name, other, status in (("a", "b", 0), ("b", "a", 3)):
        (package / f"{name}.py").write_text(
            "import pathlib, sys, time\n"
            f"pathlib.Path({str(tmp_path)!r}, '{name}.started').touch()\n"
            f"while not pathlib.Path({str(tmp_path)!r}, '{other}.started').exists():\n"
            "    time.sleep(0.05)\n"
            f"print('{name} done'); sys.exit({status})\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setattr(runner, "TRAINERS", {"peach": "fake_trainers.a",
                                             "traffic_light": "fake_trainers.b"})
    monkeypatch.setattr(runner, "STATUS_EVERY_S", 0.2)
    monkeypatch.chdir(tmp_path)
    status = runner.main(["--log-dir", str(tmp_path / "logs")])
    assert status == 3
    assert (tmp_path / "logs" / "peach.log").read_text() == "a done\n"
    out, err = capsys.readouterr()
    assert "traffic_light: exit 3" in out and "peach: exit 0" in out
    assert "traffic_light failed" in err and "b done" in err
    assert "peach: no validation top-1" in out  # the fake wrote no metrics.json
