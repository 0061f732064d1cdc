"""The README's Python examples run as written.

Every ```python block is executed in its own interpreter, in order, in one empty folder (a block
may use files an earlier one wrote, never its variables). A block that fails shows its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_python_examples():
    assert python_blocks(), f"no ```python block in {README}"


def test_every_python_block_of_the_readme_runs(tmp_path: Path):
    for number, code in enumerate(python_blocks(), start=1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            pytest.fail(
                f"README python block {number} failed:\n{code}\n--- output ---\n{done.stdout}{done.stderr}"
            )
