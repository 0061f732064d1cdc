"""station.toml: typed frozen records, every problem at once with its line, the example file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flawscope.config import ConfigError, key_lines, load_config

REPO = Path(__file__).resolve().parents[2]


def test_a_valid_file_becomes_frozen_records_with_paths_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "station.toml"
    path.parent.mkdir()
    path.write_text(
        textwrap.dedent(
            """\
            [station]
            name = "press-3"
            audit = "sqlite:///audit.db"
            store_images = "images"

            [[camera]]
            name = "top"
            source = "sim://data?rate=5"
            bundle = "../bundle"
            threshold_version = 1

            [[camera]]
            name = "side"
            source = "/data/parts"
            bundle = "/abs/bundle"

            [sink.mes]
            type = "webhook"
            url = "https://mes.example/hooks"
            secret_env = "MES_SECRET"
            cameras = ["top"]
            [sink.mes.delivery]
            give_up_after_s = 600
            """
        )
    )
    config = load_config(path)
    assert config.station.audit == f"sqlite:///{path.parent / 'audit.db'}"
    assert config.station.store_images == path.parent / "images"
    top = config.camera("top")
    assert top.bundle == tmp_path / "bundle" and top.threshold_version == 1
    assert top.source == f"sim://{tmp_path / 'cfg' / 'data'}?rate=5"  # relative to the file
    side = config.camera("side")
    assert side.bundle == Path("/abs/bundle") and side.source == "/data/parts"
    sink = config.sink("mes")
    assert sink.type == "webhook" and sink.cameras == ("top",)
    assert sink.options.url == "https://mes.example/hooks" and sink.options.mode == "single"
    assert sink.delivery.give_up_after_s == 600 and sink.delivery.retry_max_s == config.delivery.retry_max_s
    assert config.record_station("top") == "press-3/top"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.station.name = "x"  # type: ignore[misc]


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [station]
            name = "press-3"
            colour = "blue"

            [[camera]]
            name = "top"
            source = "sim:///x"
            batch_size = "eight"

            [[camera]]
            name = "top"
            bundle = "b"
            backpressure = "sometimes"

            [delivery]
            retry_initial_s = -1

            [sink.broker]
            type = "mqtt"
            port = 99999
            topic = "{enterprise}/{plant}/result"

            [sink.erp]
            type = "carrier-pigeon"

            [sink.mes]
            type = "webhook"
            url = "ftp://mes"
            cameras = ["bottom"]
            """
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = {(p.where, p.line) for p in caught.value.problems}
    expected = {
        ("station.colour", 3),
        ("camera[0].batch_size", 8),
        ("camera[0].bundle", 5),  # missing: reported at its table
        ("camera[1].source", 10),
        ("camera[1].backpressure", 13),
        ("delivery.retry_initial_s", 16),
        ("sink.broker.port", 20),
        ("sink.broker.topic", 21),
        ("sink.erp.type", 24),
        ("sink.mes.url", 28),
        ("sink.mes.secret_env", 26),
    }
    assert expected <= found, sorted(found)
    message = str(caught.value)
    assert "station.toml:24: sink.erp.type: unknown sink type 'carrier-pigeon'" in message
    assert "must be one of 'block', 'drop', got 'sometimes'" in message
    assert "unknown placeholder 'plant'" in message


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('[station]\nname = "x"\nbroken = \n')
    with pytest.raises(ConfigError, match=r"station.toml:3: not valid TOML"):
        load_config(path)


def test_key_lines_follow_array_tables_and_skip_multiline_values() -> None:
    text = (
        '[a]\nx = 1\nlist = [\n  "y = 2",\n]\n[[cam]]\nname = "1"\n[[cam]]\nname = "2"\n'
        '[cam.sub]\nz = """\nw = 3\n"""\n'
    )
    lines = key_lines(text)
    assert lines[("a", "x")] == 2 and lines[("a", "list")] == 3 and ("a", "y") not in lines
    assert lines[("cam", 0, "name")] == 7 and lines[("cam", 1, "name")] == 9
    assert lines[("cam", 1, "sub", "z")] == 11 and ("cam", 1, "sub", "w") not in lines


def test_the_example_station_file_is_valid() -> None:
    config = load_config(REPO / "examples" / "station.toml")
    assert {s.type for s in config.sinks} >= {"mqtt", "webhook", "opcua-server"}
    assert len(config.cameras) >= 1


def test_station_check_cli_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('[station]\nname = 3\n\n[[camera]]\nname = "top"\n')
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "station", "check", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "station.toml:2: station.name: must be text" in out
    assert "camera[0].source: is required" in out and "camera[0].bundle: is required" in out
    assert "Traceback" not in out
