"""The runtime reads image files as well as arrays: ``Inspector.inspect("part.png")``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawscope.types import Outcome


def test_a_path_is_read_and_judged_like_its_pixels(deployed, tmp_path: Path):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    good, bad = deployed.good[0], deployed.defective[0]
    Image.fromarray(good).save(tmp_path / "good.png")
    Image.fromarray(bad).save(tmp_path / "bad.png")
    by_path = inspector.inspect(tmp_path / "good.png")
    assert by_path.outcome is not Outcome.ERROR
    assert by_path.score == pytest.approx(inspector.inspect(good).score, rel=1e-5)
    batch = inspector.inspect_many([str(tmp_path / "bad.png"), good])
    assert batch[0].score == pytest.approx(inspector.inspect(bad).score, rel=1e-5)


def test_an_rgba_array_is_judged_like_the_rgba_file(deployed, tmp_path: Path):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    rgb = np.dstack([deployed.good[1]] * 3)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "part.png")
    from_file, from_array = inspector.inspect_many([tmp_path / "part.png", rgba])
    assert from_file.outcome is from_array.outcome is not Outcome.ERROR
    assert from_file.score == pytest.approx(from_array.score, rel=1e-6)
    assert from_array.score == pytest.approx(inspector.inspect(rgb).score, rel=1e-6)


def test_an_unreadable_file_is_an_error_verdict_naming_it(deployed, tmp_path: Path):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    (tmp_path / "garbage.jpg").write_bytes(b"not a picture")
    missing, garbage, good = inspector.inspect_many(
        [tmp_path / "missing.png", tmp_path / "garbage.jpg", deployed.good[0]]
    )
    assert missing.outcome is garbage.outcome is Outcome.ERROR
    assert "missing.png" in missing.reason and "does not exist" in missing.reason
    assert "garbage.jpg" in garbage.reason and "not a readable image" in garbage.reason
    assert "Error" not in garbage.reason  # no exception class names for users
    assert good.outcome is not Outcome.ERROR


def test_something_that_is_neither_an_array_nor_a_path_is_refused(deployed):
    from flawscope.errors import InputError
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    with pytest.raises(InputError, match="array or a file path"):
        inspector.inspect(42)  # type: ignore[arg-type]
