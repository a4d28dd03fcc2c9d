"""bench.profile's accounting: py-spy collapsed stacks -> milliseconds per request per stage.
(The sampling itself needs ptrace on a live service; it is run by hand, docs/benchmarks.md.)"""

from __future__ import annotations

from bench import profile

OP = "_run_process (paddle_serving_server/pipeline/operator.py:1191)"
HANDLER = "Model.preprocess (model/model.py:78)"
DECODE = "decode_checked (model/request.py:63)"
PREDICT = "PaddleEngine.run (model/engine.py:55)"
HTTP = "HttpServer._serve_one (serving/http_front.py:222)"
BODY = "_parse_body (serving/http_front.py:325)"


def test_a_sample_goes_to_the_innermost_named_stage() -> None:
    assert profile.stage_of([OP, HANDLER, DECODE, "b64decode (base64.py:88)"]) == \
        "decode: base64 + JPEG + limits"
    assert profile.stage_of([OP, HANDLER, "Preprocessor.from_array (x.py:1)"]) == \
        "preprocess: resize, crop, normalize"
    assert profile.stage_of([OP, PREDICT]) == "predict (the engine)"
    assert profile.stage_of([HTTP, BODY, "loads (json/__init__.py:346)"]) == \
        "HTTP request: headers + JSON body"
    assert profile.stage_of([OP, "_run_postprocess (threading.py:320)"]) == \
        "pipeline plumbing: DAG + channels + ops"
    assert profile.stage_of(["run (threading.py:1010)"]) == profile.OTHER
    assert profile.stage_of([OP, "Condition.wait (threading.py:331)"]) == profile.WAITING


def test_collapsed_counts_become_milliseconds_per_request() -> None:
    collapsed = "\n".join([
        f"{OP};{PREDICT} 300",
        f"{OP};{HANDLER};{DECODE} 50",
        f"{HTTP};{BODY} 50",
        f"{OP};{PREDICT} 100",  # the same stack again (another process) adds up
        f"{HTTP};Connection._receive (serving/http_front.py:70) 20",  # waiting: not counted
        "garbage line without a count",
    ])
    samples = profile.parse_collapsed(collapsed)
    assert samples == {"predict (the engine)": 400,
                       "decode: base64 + JPEG + limits": 50,
                       "HTTP request: headers + JSON body": 50, profile.WAITING: 20}
    times = profile.stage_times(samples, rate_hz=100, requests=10)
    assert times[0].stage == "predict (the engine)"
    by_stage = {t.stage: t for t in times}
    # 400 samples at 100 Hz = 4 s over 10 requests = 400 ms each; shares of 520 samples
    assert by_stage["predict (the engine)"].ms_per_request == 400.0
    assert by_stage["decode: base64 + JPEG + limits"].share == 50 / 520
    text = profile.table(times, cpu_ms_per_request=520.0, throughput=2.5, sampled="busy")
    assert "total busy, without waiting" in text and " 500.00" in text
    assert "520.00 ms per request" in text
