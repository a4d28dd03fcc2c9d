"""The serve stage's pure parts: the rendered config.yml, ports."""

from __future__ import annotations

import pytest

from model import settings
from serving.control.layout import Layout, parse_port_flags, ports_for


def test_rendered_config_passes_the_pipeline_checker_and_builds_no_local_predictor() -> None:
    from paddle_serving_server.pipeline.pipeline_server import ServerYamlConfChecker

    from serving.pipeline import render_config

    resolved = settings.resolve({"batch_size": "8", "auto_batching_timeout": "3",
                                 "worker_num": "3"})
    config = render_config("traffic_light", resolved, 18093, 9994)
    checked = ServerYamlConfChecker.load_server_yaml_conf(yml_dict=config)
    op = checked["op"]["traffic_light"]
    assert (op["batch_size"], op["auto_batching_timeout"]) == (8, 3)  # ms
    assert (checked["http_port"], checked["rpc_port"], checked["worker_num"]) == (18093, 9994, 3)
    # Upstream builds a LocalPredictor (a second copy of the model) from a model_config, and a
    # client from a client_type: the model's own engine predicts instead.
    assert "model_config" not in op["local_service_conf"]
    assert "client_type" not in op["local_service_conf"]


def test_ports_come_from_flags_then_env_then_description(monkeypatch) -> None:
    spec = Layout().spec("peach")
    assert ports_for(spec) == parse_port_flags(["peach=18080:9993"])["peach"]
    monkeypatch.setenv("SERVING_PEACH_HTTP_PORT", "28080")
    assert ports_for(spec).http == 28080 and ports_for(spec).rpc == 9993
    assert ports_for(spec, parse_port_flags(["peach=1:2"])).rpc == 2
    with pytest.raises(ValueError, match="NAME=HTTP:RPC"):
        parse_port_flags(["peach=18080"])
