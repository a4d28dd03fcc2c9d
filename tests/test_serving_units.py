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


@pytest.mark.integration
def test_free_ports_lie_outside_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    """A port handed out in the ephemeral range could be taken by any outgoing connection before
    the service binds it; one handed to two test processes, by the other's service."""
    import subprocess
    import sys

    from serving.control.manager import ephemeral_port_range, free_ports

    low, _ = ephemeral_port_range()
    ours = free_ports(40)
    theirs = subprocess.run(
        [sys.executable, "-c", "from serving.control.manager import free_ports; "
         "print(*free_ports(40))"], capture_output=True, text=True, timeout=60, check=True)
    others = [int(port) for port in theirs.stdout.split()]
    assert len(set(ours)) == len(ours) == len(others) == 40
    assert all(port < low for port in ours + others)
    assert not set(ours) & set(others)


def test_docs_state_the_error_codes_and_limit_defaults_as_the_code_has_them() -> None:
    """docs/serving.md's error table is the generated one; every row of its limits table names
    a runtime setting with the default the table gives."""
    import re
    from pathlib import Path

    from model.errors import markdown_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    assert markdown_table() in text
    limits = text[text.index("## Limits"):text.index("Set them per model in")]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", limits, re.MULTILINE)
    assert len(rows) >= 10
    defaults = settings.Settings()
    for key, shown in rows:
        number = shown.strip().replace(",", "")
        value = (int(number.split()[0]) << 20 if number.endswith("MiB")
                 else int(number) if number.isdigit() else number)
        assert getattr(defaults, key) == value, (key, shown)
