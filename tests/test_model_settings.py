"""model.settings: one typed table of runtime settings, through which every way of setting them
goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from model import settings
from model.spec import ModelSpec, ModelSpecError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_then_model_yml_then_command_line() -> None:
    defaults = settings.resolve()
    assert (defaults.thread_num, defaults.batch_size, defaults.use_mkldnn) == (1, 4, True)
    assert defaults.worker_num is None and defaults.mem_optim is None  # auto
    layered = settings.resolve({"batch_size": 8, "use_mkldnn": False},
                               settings.parse_pairs(["batch_size=2", "host=0.0.0.0"]))
    assert (layered.batch_size, layered.use_mkldnn, layered.host) == (2, False, "0.0.0.0")


@pytest.mark.parametrize("key", ["reuse_freed_memory", "pin_workers", "free_intermediate_tensors",
                                 "ir_optim", "use_mkldnn", "is_thread_op"])
def test_booleans_parse_from_text_and_yaml_and_refuse_anything_else(key: str) -> None:
    for text, value in (("true", True), ("FALSE", False), ("yes", True), ("0", False),
                        (True, True), (False, False)):
        assert getattr(settings.resolve({key: text}), key) is value
    with pytest.raises(settings.SettingsError, match=f"{key}: expected true or false"):
        settings.resolve({key: "sometimes"})


def test_counts_must_be_positive_integers_and_auto_only_where_allowed() -> None:
    assert settings.resolve({"worker_num": "auto"}).worker_num is None
    assert settings.resolve({"worker_num": "3"}).worker_count == 3
    assert settings.resolve({"mem_optim": "auto"}).mem_optim is None
    for bad in ("0", "-1", "two", True):
        with pytest.raises(settings.SettingsError, match="thread_num: expected an integer"):
            settings.resolve({"thread_num": bad})
    with pytest.raises(settings.SettingsError, match="thread_num: expected an integer"):
        settings.resolve({"thread_num": "auto"})


def test_unknown_keys_and_malformed_pairs_say_what_is_known() -> None:
    with pytest.raises(settings.SettingsError, match=r"unknown runtime setting 'threads'.*"
                                                     r"'thread_num'"):
        settings.resolve({"threads": "2"})
    with pytest.raises(settings.SettingsError, match="--runtime expects key=value"):
        settings.parse_pairs(["thread_num"])


def test_thread_ops_cannot_share_one_model_between_threads() -> None:
    with pytest.raises(settings.SettingsError, match="thread-safe"):
        settings.resolve({"concurrency": "2"})
    assert settings.resolve({"concurrency": "2", "is_thread_op": "false"}).concurrency == 2


def test_help_text_and_rendered_header_cover_every_key() -> None:
    text = settings.help_text()
    shown = settings.as_text(settings.resolve())
    for key in settings.KEYS:
        assert f"  {key} = " in text and f"{key}=" in shown
    assert "worker_num = auto  (int or auto)" in text and "mem_optim=auto" in shown


def test_a_description_with_a_bad_runtime_section_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "peach"
    shutil.copytree(ROOT / "models" / "peach", folder, ignore=shutil.ignore_patterns("inference"))
    raw = yaml.safe_load((folder / "model.yml").read_text())
    (folder / "model.yml").write_text(yaml.safe_dump({**raw, "runtime": {"batch_size": 0}}))
    with pytest.raises(ModelSpecError, match=r"model\.yml: runtime: .*batch_size"):
        ModelSpec.load(folder)


def test_the_shipped_descriptions_state_their_runtime_choices() -> None:
    lights = ModelSpec.load(ROOT / "models" / "traffic_light")
    assert lights.runtime == {"use_mkldnn": True}  # a legacy program: oneDNN works
    assert settings.resolve(lights.runtime).use_mkldnn
