"""The benchmark harness cannot rot: `python -m bench --smoke` on the shipped models (a few
seconds of load per run) must produce the table, the JSON and the PNG with error-free runs of every
variant, transport and concurrency. The figures themselves are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import QUIET_ENV, ROOT

from bench.inprocess import Strategy
from bench.loadgen import parse_http_response
from bench.stages import mean_ms

MODELS = ("peach", "traffic_light")


def test_http_response_parser_handles_lengths_chunks_and_partial_reads() -> None:
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert parse_http_response(whole) == (200, b"hello")
    assert parse_http_response(whole[:-1]) is None
    assert parse_http_response(whole[:10]) is None
    chunked = (b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert parse_http_response(chunked) == (503, b"abcde")
    assert parse_http_response(chunked[:-4]) is None


def test_stage_means_from_metrics_page() -> None:
    page = "\n".join([
        'serving_stage_duration_seconds_sum{service="peach",stage="predict"} 1.5',
        'serving_stage_duration_seconds_count{service="peach",stage="predict"} 100',
        'serving_stage_duration_seconds_bucket{service="peach",stage="predict",le="+Inf"} 100',
        'serving_request_duration_seconds_sum{service="peach",protocol="http"} 2',
        'serving_request_duration_seconds_count{service="peach",protocol="http"} 100'])
    assert mean_ms(page) == {"service:http": 20.0, "stage:predict": 15.0}


def test_inprocess_strategy_names() -> None:
    assert Strategy.parse("2x1") == Strategy(2, 1, 1)
    assert Strategy.parse("1x2b4").label == "1x2b4"
    with pytest.raises(ValueError, match="PxT"):
        Strategy.parse("two")


@pytest.mark.service
def test_bench_smoke_writes_table_json_and_plot(tmp_path: Path) -> None:
    missing = [name for name in MODELS
               if not any((ROOT / "models" / name / "inference").glob("*.pdiparams"))]
    if missing:
        pytest.skip(f"no shipped inference model for {missing} (`make train` produces them)")
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, env=QUIET_ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "variant    transport" in done.stdout
    results = json.loads((tmp_path / "bench.json").read_text())
    assert sorted(results["models"]) == sorted(MODELS)
    for name, model in results["models"].items():
        assert model["inprocess_limit"]["throughput"] > 0, name
        assert sorted(model["variants"]) == ["project", "reference"]
        for variant in model["variants"].values():
            runs = {(run["transport"], run["concurrency"]) for run in variant["runs"]}
            assert runs == {(t, c) for t in ("http", "rpc") for c in (1, 2)}
            for run in variant["runs"]:
                assert run["errors"] == 0, run["first_error"]
                assert run["requests"] > 0 and run["vs_reference"] is not None
            assert variant["memory_idle"]["rss_mb"] > 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
