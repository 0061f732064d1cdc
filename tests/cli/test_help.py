"""What a user reads before running anything: help pages, ``models``, ``--version``, usage mistakes.

Checked at 80 columns, the width of a default terminal: nothing wider, no reStructuredText
(````code````, ``:mod:``), no Typer placeholders (``{data}``, ``<bool>``), the values of fixed-choice
options listed, and every usage mistake one ``error:`` line like any other error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from flawscope import __version__

# Every command's help, printed by the real entry point at 80 columns, in one process (one
# interpreter start instead of one per command; commands added later are found by walking the tree).
SWEEP = """
import contextlib, io, json, os, sys
import typer
from flawscope.cli.app import app, main
paths = [[]]
def walk(command, path):
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths.append(path + [name])
        walk(sub, path + [name])
walk(typer.main.get_command(app), [])
pages = {}
for path in paths:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            code = exc.code
    pages[" ".join(path) or "flawscope"] = [code, out.getvalue()]
print(json.dumps(pages))
"""
RST = re.compile(r"``|:(mod|class|func|meth|attr|data):`")
PLACEHOLDER = re.compile(r"<(bool|str|int|float|path|int range|float range|list\[str\])>|\{[a-z_]+\}")


def _too_wide(text: str, columns: int = 80) -> list[str]:
    return [line for line in text.splitlines() if len(line) > columns]


def test_every_help_page_is_plain_and_fits_80_columns(tmp_path: Path):
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-c", SWEEP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    pages = json.loads(done.stdout)
    assert {"flawscope", "train", "calibrate", "inspect", "audit verify", "audit export", "models"} <= set(
        pages
    )
    for command, (code, page) in pages.items():
        assert code == 0, (command, page)
        assert "Usage: flawscope" in page, command  # the program's name, not "python -m flawscope.cli"
        assert _too_wide(page) == [], (command, _too_wide(page))
        assert not RST.search(page), (command, RST.search(page))
        assert not PLACEHOLDER.search(page), (command, PLACEHOLDER.search(page))


def test_help_prints_brackets_as_written(cli, tmp_path: Path):
    # "[bad/]" was read as Rich markup and vanished from the train help.
    run = cli("train", "--help", cwd=tmp_path, columns=120)
    assert "good/ [bad/] folders" in run.out
    assert "Usage: flawscope train [OPTIONS] DATA" in run.out


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        (["export"], "[onnx]"),
        (["audit", "export"], "[csv|parquet]"),
        (["inspect"], "[block|drop]"),
        (["inspect"], "[all|rejects|none]"),
        (["demo"], "[brushed_metal|fabric|printed|wood]"),
    ],
)
def test_options_with_fixed_values_list_them(cli, tmp_path: Path, command: list[str], choices: str):
    run = cli(*command, "--help", cwd=tmp_path, columns=120)
    assert choices in run.out


def test_demo_textures_are_the_generators_textures():
    from flawscope.cli.demo import Texture
    from flawscope.data.textures import TEXTURES

    assert sorted(typing.get_args(Texture)) == sorted(TEXTURES)


def test_models_table_fits_80_columns_without_markup(cli, tmp_path: Path):
    run = cli("models", cwd=tmp_path, columns=80)
    assert run.rc == 0, run.text
    assert _too_wide(run.out) == []
    assert "…" not in run.out  # wrapped, not cut
    assert not RST.search(run.out)
    for name in ("padim", "patchcore", "efficientnet_lite0", "wide_resnet50_2"):
        assert name in run.out
    assert "efficientnet_lite0_pytorch" in run.out.replace("\n", "").replace("│", "").replace(" ", "")


def test_version(cli, tmp_path: Path):
    run = cli("--version", cwd=tmp_path)
    assert run.rc == 0
    assert run.out.strip() == f"flawscope {__version__}"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train"], ["flawscope train", "missing argument 'DATA'", "flawscope train --help"]),
        (["train", "."], ["missing option '-o' / '--output'"]),
        (
            ["inspect", ".", "--source", ".", "--batch-size", "abc"],
            ["'--batch-size'", "'abc' is not a whole number"],
        ),
        (["calibrate", ".", "--target-frr", "x"], ["'--target-frr'", "'x' is not a number"]),
        (["export", ".", "--format", "tflite"], ["'--format'", "'tflite' is not one of 'onnx'"]),
        (["inspect", ".", "--source", ".", "--backpressure", "wait"], ["'wait'", "'block', 'drop'"]),
        (["nope"], ["no such command 'nope'"]),
        (["audit", "verify", "--bogus"], ["no such option: --bogus"]),
    ],
)
def test_usage_mistakes_are_one_error_line(
    cli, one_error, tmp_path: Path, args: list[str], fragments: list[str]
):
    one_error(cli(*args, cwd=tmp_path, columns=80), *fragments)


def test_a_file_path_for_audit_suggests_the_url(cli, one_error, tmp_path: Path):
    path = tmp_path / "audit.db"
    run = cli("audit", "verify", "--audit", path, cwd=tmp_path)
    one_error(run, str(path), "not a database URL", f"sqlite:///{path}")
    assert f"sqlite:////{str(path).lstrip('/')}" in run.err  # four slashes for an absolute path
    assert not path.exists()


def test_inspect_help_documents_every_source_and_option(cli, tmp_path: Path):
    from flawscope.acquire.registry import registered_sources

    run = cli("inspect", "--help", cwd=tmp_path, columns=80)
    for scheme, spec in registered_sources().items():
        options = spec.options
        assert f"{scheme}://" in run.out, scheme
        for option in options:
            assert f"{option}=" in run.out, f"{scheme}: {option}"


def test_readme_documents_every_source_and_option():
    from flawscope.acquire.registry import registered_sources

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for scheme, spec in registered_sources().items():
        options = spec.options
        assert f"{scheme}://" in readme, scheme
        for option in options:
            assert f"{option}=" in readme, f"{scheme}: {option}"
