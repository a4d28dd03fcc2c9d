"""Each compatibility fix is needed (the upstream failure is reproduced) and works."""

from __future__ import annotations

import sysconfig
import types
from pathlib import Path

import pytest
from upstream import run_python

import compat
from compat import serving as serving_fixes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_legacy_pb2_modules_fail_without_compat_and_load_with_it() -> None:
    broken = run_python("import paddle_serving_app.proto.general_model_config_pb2",
                        with_compat=False)
    assert broken.returncode != 0
    assert "Descriptors cannot be created directly" in broken.stderr

    from google.protobuf import text_format
    from paddle_serving_app.proto import general_model_config_pb2 as app_pb2
    from paddle_serving_server.proto import general_model_config_pb2 as server_pb2

    config = text_format.Parse(
        'feed_var { name: "x" alias_name: "x" feed_type: 1 shape: 3 }', app_pb2.GeneralModelConfig()
    )
    assert list(config.feed_var[0].shape) == [3]
    assert server_pb2.GeneralModelConfig is app_pb2.GeneralModelConfig  # one descriptor pool entry


def test_pipeline_service_pb2_round_trips() -> None:
    from paddle_serving_server.pipeline.proto import pipeline_service_pb2 as pb2

    request = pb2.Request(key=["image"], value=["abc"], name="peach", logid=7)
    assert pb2.Request.FromString(request.SerializeToString()) == request


@pytest.mark.integration
def test_serving_client_stand_in_explains_itself() -> None:
    absent = run_python("import paddle_serving_client", with_compat=False)
    assert "No module named 'paddle_serving_client'" in absent.stderr  # really absent
    import paddle_serving_client

    try:
        paddle_serving_client.Client()
    except RuntimeError as error:
        assert "local_predictor" in str(error)
    else:
        raise AssertionError("stand-in Client must refuse to be used")


def test_numpy_star_import_shadowing_is_removed() -> None:
    victim = types.ModuleType("victim")
    exec("from numpy import *", victim.__dict__)
    assert victim.__dict__["max"] is not max  # the upstream bug: numpy.max replaces builtins.max
    serving_fixes.unshadow_builtins(victim)
    assert "max" not in victim.__dict__ and "round" not in victim.__dict__

    from paddle_serving_server.pipeline import operator, pipeline_client

    for module in (operator, pipeline_client):
        assert "max" not in vars(module) and "bool" not in vars(module)
    operator.Op(name="compat_probe", retry=1)  # raised AxisError at operator.py:102 before


@pytest.mark.integration
def test_local_predictor_finds_pir_json_programs(tmp_path: Path) -> None:
    (tmp_path / "inference.json").write_text("{}")
    (tmp_path / "inference.pdiparams").write_bytes(b"")
    lookup = ("from paddle_serving_app.local_predict import LocalPredictor\n"  # a method upstream
              f"print(LocalPredictor.search_suffix_files(None, {str(tmp_path)!r}, '*.pdmodel'))")
    upstream = run_python(lookup, skip=("accept_pir_program_files",))
    assert upstream.returncode == 0 and upstream.stdout.strip() == "[]", upstream.stderr
    from paddle_serving_app.local_predict import LocalPredictor

    assert LocalPredictor.search_suffix_files(str(tmp_path), "*.pdmodel") == [
        str(tmp_path / "inference.json")
    ]
    assert LocalPredictor.search_suffix_files(str(tmp_path), "*.pdiparams") == [
        str(tmp_path / "inference.pdiparams")
    ]


@pytest.mark.integration
def test_pipeline_client_prints_nothing_per_call() -> None:
    """Upstream prints two timestamp lines per predict (one before it even connects)."""
    call = ("from paddle_serving_server.pipeline import PipelineClient\n"
            "client = PipelineClient()\nclient.connect(['127.0.0.1:1'])\n"
            "client.predict(feed_dict={'image': 'x'}, fetch=None, asyn=True)\n")
    upstream = run_python(call, skip=("silence_client_prints",))
    assert upstream.returncode == 0, upstream.stderr
    assert upstream.stdout.startswith("PipelineClient::predict pack_data time:")
    fixed = run_python(call)
    assert fixed.returncode == 0 and fixed.stdout == "", fixed.stderr


@pytest.mark.integration
def test_paddle_imported_before_grpc_works_on_the_pinned_paddle() -> None:
    """Paddle issue 70538 (a segfault in zlib's inflateReset2 when paddle 2.6 was imported before
    grpc) does not happen with the pinned paddle: no fix orders the imports."""
    code = ("import paddle, grpc\nfrom concurrent import futures\n"
            "server = grpc.server(futures.ThreadPoolExecutor(1))\n"
            "port = server.add_insecure_port('127.0.0.1:0')\nserver.start()\n"
            "channel = grpc.insecure_channel(f'127.0.0.1:{port}', "
            "compression=grpc.Compression.Gzip)\n"
            "call = channel.unary_unary('/nothing/here')\n"
            "try:\n    call(b'x' * 100000, timeout=30)\n"
            "except grpc.RpcError as error:\n    print(error.code().name)\n")
    upstream = run_python(code, with_compat=False)
    assert upstream.returncode == 0, upstream.stderr[-2000:]
    assert upstream.stdout.strip() == "UNIMPLEMENTED"  # the compressed call went through


def test_fixes_report_what_ran() -> None:
    import paddle_serving_app.local_predict  # noqa: F401

    assert "paddle_serving_app.local_predict:accept_pir_program_files" in compat.applied


def test_the_start_up_hook_is_installed_in_the_venv() -> None:
    installed = Path(sysconfig.get_path("purelib")) / "paddle_vision_serving_compat.pth"
    assert installed.read_text() == (ROOT / "compat/paddle_vision_serving_compat.pth").read_text()


@pytest.mark.integration
def test_an_upstream_style_script_works_in_the_venv_without_importing_the_project() -> None:
    """What PaddleClas's deploy/paddleserving/pipeline_rpc_client.py does first."""
    script = ("from paddle_serving_server.pipeline import PipelineClient\n"
              "client = PipelineClient()\nprint('client ready')\n")
    upstream = run_python(script, with_compat=False)
    assert "Descriptors cannot be created directly" in upstream.stderr
    fixed = run_python(script)
    assert fixed.returncode == 0 and fixed.stdout.strip() == "client ready", fixed.stderr
