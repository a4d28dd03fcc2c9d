"""The Paddle Serving fixes the serve stage added to compat/serving.py (items 5-7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from upstream import run_python

from compat import serving as serving_fixes

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # a child interpreter or a real model each


class _FakeStub:
    def inference(self, request):  # type: ignore[no-untyped-def]
        return request


def test_pipeline_client_predict_keeps_stdout_clean(capsys: pytest.CaptureFixture[str]) -> None:
    from paddle_serving_server.pipeline import PipelineClient

    client = PipelineClient()
    client._stub = _FakeStub()  # predict without a server: the prints come before the call
    request = client.predict(feed_dict={"image": "abc"}, fetch=None)
    assert list(request.key) == ["image"]
    assert capsys.readouterr().out == ""  # upstream printed two "PipelineClient::predict" lines


def test_grpc_server_binds_the_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from paddle_serving_server.pipeline import pipeline_server

    assert pipeline_server.grpc.StatusCode is __import__("grpc").StatusCode  # rest delegated
    bound: list[str] = []

    class Server:
        def add_insecure_port(self, address: str) -> int:
            bound.append(address)
            return 1

    monkeypatch.setattr(pipeline_server.grpc, "_grpc", type("G", (), {"server": Server}))
    pipeline_server.grpc.server().add_insecure_port("[::]:9993")  # what pipeline_server.py:316 does
    monkeypatch.setenv(serving_fixes.RPC_HOST_ENV, "0.0.0.0")
    pipeline_server.grpc.server().add_insecure_port("[::]:9993")
    pipeline_server.grpc.server().add_insecure_port("localhost:9994")  # explicit: left alone
    assert bound == ["127.0.0.1:9993", "0.0.0.0:9993", "localhost:9994"]


LISTEN_ON_PORT = """
from concurrent import futures
from pathlib import Path
from paddle_serving_server.pipeline import pipeline_server
server = pipeline_server.grpc.server(futures.ThreadPoolExecutor(1))
port = server.add_insecure_port("[::]:0")
server.start()
rows = [line.split() for name in ("tcp", "tcp6")
        for line in Path("/proc/net", name).read_text().splitlines()[1:]]
print(*sorted({row[1].split(":")[0] for row in rows
               if row[3] == "0A" and int(row[1].split(":")[1], 16) == port}))
server.stop(0)
"""


@pytest.mark.parametrize(("host", "wildcard"), [(None, False), ("[::]", True)])
def test_rpc_listener_address(host: str | None, wildcard: bool) -> None:
    done = run_python(LISTEN_ON_PORT, **({serving_fixes.RPC_HOST_ENV: host} if host else {}))
    assert done.returncode == 0, done.stderr
    addresses = done.stdout.split()  # hex local addresses of the LISTEN sockets on that port
    assert addresses
    assert all(set(a) == {"0"} for a in addresses) is wildcard  # all-zero = every interface


def test_pipeline_import_leaves_the_programs_logging_alone(tmp_path: Path) -> None:
    code = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="OURS %(name)s %(message)s")
mine = logging.getLogger("mine")
import paddle_serving_server.pipeline
from paddle_serving_server.pipeline import logger as upstream
mine.info("still logging")
logging.getLogger("paddle_serving_server.pipeline.dag").warning("to the pipeline files")
print("root handlers", len(logging.getLogger().handlers))
logging.config.dictConfig(upstream.logger_config)  # what the upstream module does unscoped
mine.info("lost")
print("after upstream config:", mine.disabled)
"""
    done = run_python(code, SERVING_LOG_PATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "OURS mine still logging" in done.stdout and "root handlers 1" in done.stdout
    assert "to the pipeline files" not in done.stdout  # scoped to Paddle Serving's loggers
    assert "to the pipeline files" in (tmp_path / "PipelineServingLogs/pipeline.log").read_text()
    assert "after upstream config: True" in done.stdout and "OURS mine lost" not in done.stdout


def test_scoped_config_moves_root_handlers_to_serving_loggers() -> None:
    upstream = {"version": 1, "handlers": {}, "loggers": {"x.profiler": {"level": "INFO"}},
                "root": {"level": "DEBUG", "handlers": ["f_pipeline.log"]}}
    scoped = serving_fixes.scope_logging_config(upstream)
    assert "root" not in scoped and scoped["disable_existing_loggers"] is False
    assert scoped["loggers"]["paddle_serving_server"] == {
        "level": "WARNING", "handlers": ["f_pipeline.log"], "propagate": False}
    assert "x.profiler" in scoped["loggers"] and "root" in upstream  # input untouched
