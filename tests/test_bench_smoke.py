"""The benchmark harness cannot rot: `python -m bench --smoke` on the shipped models (a few
seconds of load per run) must produce the table, the JSON and the PNG with error-free runs of every
variant, transport and concurrency. The figures themselves are not asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_helpers import QUIET_ENV, ROOT, Services, save_tiny_models

from bench.__main__ import cpu_field, vector_extensions, widest_extension
from bench.engines import VARIANTS, paired, rotations
from bench.inprocess import Strategy, Workers
from bench.loadgen import parse_http_response
from bench.stages import parse
from serving.control.layout import Layout
from serving.control.manager import free_ports
from serving.control.prepare import ensure_serving_folder

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


def test_stage_means_from_metrics_pages_taken_before_and_after_a_run() -> None:
    def page(predict_s: float, requests: int, images: int) -> str:
        return "\n".join([
            f'serving_stage_duration_seconds_sum{{service="peach",stage="predict"}} {predict_s}',
            f'serving_stage_duration_seconds_count{{service="peach",stage="predict"}} {requests}',
            'serving_stage_duration_seconds_bucket{service="peach",stage="predict",le="+Inf"} 1',
            f'serving_request_duration_seconds_sum{{service="peach",protocol="http"}} {predict_s}',
            f'serving_request_duration_seconds_count{{service="peach",protocol="http"}} {requests}',
            f'serving_batch_images_sum{{service="peach"}} {images}',
            f'serving_batch_images_count{{service="peach"}} {requests}'])

    before, after = parse(page(1.0, 100, 100)), parse(page(2.5, 200, 400))
    assert after.since(before).means() == {"batch:images": 3.0, "service:http": 15.0,
                                           "stage:predict": 15.0}
    assert before.means()["batch:images"] == 1.0


def test_machine_record_names_the_widest_vector_extension_of_the_host() -> None:
    cpuinfo = ("processor\t: 0\nmodel name\t: AMD EPYC\n"
               "flags\t\t: fpu sse2 fma avx avx2 avx512f avx512_vnni\nprocessor\t: 1\n")
    assert cpu_field(cpuinfo, "model name") == "AMD EPYC"
    assert vector_extensions(cpuinfo) == ["avx", "avx2", "avx512_vnni", "avx512f"]
    assert widest_extension(vector_extensions(cpuinfo)) == "avx512"
    assert widest_extension(vector_extensions(cpuinfo.replace(" avx512f avx512_vnni", ""))) \
        == "avx2"
    assert widest_extension([]) == "no AVX"


def test_paired_rounds_rotate_the_order_and_take_ratios_per_round() -> None:
    assert rotations(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                             ["a", "b", "c"]]
    calls: list[str] = []
    speeds = {"ref": iter([10.0, 20.0, 10.0]), "fast": iter([30.0, 40.0, 20.0])}

    def measure(name: str) -> float:
        calls.append(name)
        return next(speeds[name])

    result = paired(measure, ["ref", "fast"], rounds=3, higher_is_faster=True)
    assert calls == ["ref", "fast", "fast", "ref", "ref", "fast"]
    assert result["fast"]["speedup"] == {"median": 2.0, "min": 2.0, "max": 3.0}
    assert result["ref"]["speedup"]["median"] == 1.0
    assert result["fast"]["figure"]["median"] == 30.0


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
        (paired_round,) = model["paired"]["rounds"]  # --smoke: one round
        assert paired_round["errors"] == 0 and paired_round["served"] > 0, name
        assert model["paired"]["median_ratio"] == paired_round["ratio"], name
        assert model["paired"]["median_p50_overhead_ms"] == paired_round["p50_overhead_ms"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.service
def test_engines_bench_smoke_measures_every_engine_and_precision(tmp_path: Path) -> None:
    missing = [name for name in MODELS
               if not any((ROOT / "models" / name / "inference").glob("*.pdiparams"))]
    if missing:
        pytest.skip(f"no shipped inference model for {missing} (`make train` produces them)")
    done = subprocess.run([sys.executable, "-m", "bench.engines", "--smoke", "--out",
                           str(tmp_path)], cwd=ROOT, env=QUIET_ENV, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "engines.json").read_text())
    assert sorted(results["models"]) == sorted(MODELS)
    expected = [variant.partition(":")[0] for variant in VARIANTS]
    for name, model in results["models"].items():
        assert list(model["variants"]) == expected, name
        for variant, row in model["variants"].items():
            for figure in ("ms_per_image", "limit_img_s", "served_req_s"):
                assert row[figure]["figure"]["median"] > 0, (name, variant, figure)
            assert row["file_mb"] > 0 and set(row["accuracy"]) == {"val", "fresh"}
        assert model["variants"]["paddle"]["served_req_s"]["speedup"]["median"] == 1.0
    assert "| peach | onnxruntime | int8 |" in (tmp_path / "engines.md").read_text()


@pytest.mark.service
def test_a_service_that_stops_answering_ends_its_variant_not_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream's reference gateway has stopped accepting connections mid-run under 32 clients:
    the runs measured so far are kept and the failure is reported, the benchmark goes on."""
    import bench.__main__ as bench_main
    from bench.payloads import encode_payloads

    save_tiny_models(tmp_path / "models")
    layout = Layout(tmp_path / "models", tmp_path / "build")
    args = bench_main._parser().parse_args(
        ["--out", str(tmp_path / "out"), "--transports", "http", "--concurrency", "1,2",
         "--duration", "0.5", "--warmup", "0.2"])
    measure = bench_main.measure_served

    def measure_then_kill(args, service, *rest):  # type: ignore[no-untyped-def]
        figures = measure(args, service, *rest)
        os.killpg(service.pgid, signal.SIGKILL)
        return figures

    monkeypatch.setattr(bench_main, "measure_served", measure_then_kill)
    payloads = encode_payloads(layout.spec("peach").sample_images(2))
    variant = bench_main.bench_variant(args, layout, "peach", payloads, {},
                                       upstream_gateway=False)
    assert [(run["transport"], run["concurrency"]) for run in variant["runs"]] == [("http", 1)]
    assert variant["stopped_answering"].startswith("http at 2 clients: ConnectionRefusedError")
    report_model = {"inprocess": [], "inprocess_limit": None, "variants": {"project": variant}}
    bench_main.report.add_ratios(report_model, "reference")
    assert "STOPPED ANSWERING" in bench_main.report.table({"models": {"peach": report_model}})


@pytest.mark.integration
def test_inprocess_workers_run_several_windows_with_the_model_loaded_once(tmp_path: Path
                                                                          ) -> None:
    """The paired rounds alternate in-process and served windows seconds apart: the same worker
    processes must answer every window, each with its own figures."""
    models = tmp_path / "models"
    save_tiny_models(models)
    layout = Layout(models_dir=models, build_dir=tmp_path / "build",
                    patches_dir=ROOT / "prototxt_patches")
    ensure_serving_folder(layout, layout.spec("peach"))
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"jpegs_hex": [cv2.imencode(".jpg", pixels)[1].tobytes().hex()]}))
    with Workers(Strategy(2, 1, 2), models / "peach", layout.serving_server("peach"), images,
                 [], tmp_path / "inprocess.log") as workers:
        pids = [process.pid for process in workers.processes]
        windows = [workers.window(0.3, 0.1) for _ in range(3)]
        assert [process.poll() for process in workers.processes] == [None, None]
        assert [process.pid for process in workers.processes] == pids
    for window in windows:
        assert window["strategy"] == "2x1b2" and window["throughput"] > 0
        assert window["cpu_ms_per_image"] > 0 and window["p50_ms"] > 0
    assert all(process.poll() is not None for process in workers.processes)


@pytest.mark.service
def test_compare_measures_running_services_in_paired_rounds(tmp_path: Path) -> None:
    """bench.compare loads services it did not start: one service under two names gives both
    figures and ratios to the first; a target that does not answer ends the run with its name."""
    from bench.compare import main as compare_main

    save_tiny_models(tmp_path / "models")
    http_port, rpc_port, dead_port = free_ports(3)
    running = Services(tmp_path / "models", tmp_path / "build", {"peach": (http_port, rpc_port)})
    out = tmp_path / "compare.json"
    with running.started("peach", "--no-supervisor"):
        common = ["peach", "--models-dir", str(tmp_path / "models"), "--rounds", "2",
                  "--window", "0.5", "--concurrency", "2", "--images", "2"]
        answered = compare_main([*common, f"a=127.0.0.1:{http_port}",
                                 f"b=127.0.0.1:{http_port}", "--json", str(out)])
        refused = compare_main([*common, f"a=127.0.0.1:{http_port}",
                                f"gone=127.0.0.1:{dead_port}"])
    assert answered == 0 and refused == 1
    targets = json.loads(out.read_text())["targets"]
    assert list(targets) == ["a", "b"]
    assert targets["a"]["speedup"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert all(len(entry["rounds"]) == 2 and min(entry["rounds"]) > 0
               for entry in targets.values())
    assert targets["b"]["speedup"]["median"] > 0
