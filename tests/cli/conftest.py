"""What the CLI tests share: running ``flawscope`` as a user does, and one small trained bundle.

Every command runs in a real subprocess (``python -m flawscope.cli``), with the terminal width
the test asks for; the bundle is trained and exported once per session on generated parts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Run:
    """What a command printed and returned."""

    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(*args: object, cwd: Path, columns: int | None = None, timeout: float = 300) -> Run:
    """``flawscope ARGS`` in a subprocess; ``columns`` sets the terminal width Rich lays out for."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "NO_COLOR")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    done = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def assert_one_error_line(run: Run, *fragments: str) -> str:
    """Exit code 2, no traceback, no box, exactly one ``error:`` line holding every fragment."""
    assert "Traceback" not in run.text, run.text
    assert "╭" not in run.text and "│" not in run.err, run.err
    assert run.rc == 2, run.text
    assert len(run.error_lines) == 1, run.err
    line = run.error_lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="session")
def cli() -> Callable[..., Run]:
    """``cli(*args, cwd=..., columns=None)``: run ``flawscope`` (see :func:`run_cli`)."""
    return run_cli


@pytest.fixture(scope="session")
def one_error() -> Callable[..., str]:
    """``one_error(run, *fragments)``: see :func:`assert_one_error_line`."""
    return assert_one_error_line


@dataclass(frozen=True)
class Trained:
    """A generated dataset, a bundle trained on it with a 0.4 hold-out, and its ONNX export."""

    root: Path
    data: Path
    bundle: Path
    deploy: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from flawscope.data.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("cli-trained")
    spec = SyntheticSpec(size=(64, 64), n_train=30, n_test_good=6, n_test_defect_per_type=2, seed=11)
    data = Path(write_dataset(root / "parts", spec).root)
    bundle, deploy = root / "bundle", root / "deploy"
    done = run_cli("train", data, "-o", bundle, "--image-size", "64", "--holdout", "0.4", cwd=root)
    assert done.rc == 0, done.text
    done = run_cli("export", bundle, "-o", deploy, cwd=root)
    assert done.rc == 0, done.text
    return Trained(root, data, bundle, deploy)
