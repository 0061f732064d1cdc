"""A stand-in inspector for web scans: exact regions where pixels leave the web's flat level.

The merging and the web coordinates are what these tests check, so the regions must be exact:
this inspector's map is the pixels' distance from the flat web level, and its regions are
:func:`flawscope.decide.regions.find_regions` above a threshold, as the runtime's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from flawscope.decide.regions import find_regions
from flawscope.types import Outcome, Provenance, Verdict

LEVEL = 100
THRESHOLD = 50.0


class DeviationInspector:
    """Flags pixels more than ``THRESHOLD`` grey levels from ``LEVEL``."""

    model_hash = "d" * 64
    version = "dddddddddddd.t1"
    provenance = Provenance(model_hash="d" * 64, model_version="dddddddddddd.t1", threshold_version=1)
    thresholds = None

    def __init__(self) -> None:
        self.calls = 0

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        self.calls += 1
        verdicts = []
        for image in images:
            assert image is not None
            amap = np.abs(image.astype(np.float32) - LEVEL)
            regions = find_regions(amap, THRESHOLD)
            outcome = Outcome.FAIL if regions else Outcome.PASS
            score = float(amap.max())
            verdicts.append(Verdict(outcome, score, score / THRESHOLD, regions, anomaly_map=amap))
        return verdicts


def flat_strip(rows: int, width: int, defects: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """A flat web with bright rectangles ``(row0, col0, rows, cols)``."""
    strip = np.full((rows, width), LEVEL, np.uint8)
    for row0, col0, h, w in defects:
        strip[row0 : row0 + h, col0 : col0 + w] = 230
    return strip


@pytest.fixture
def strip_file(tmp_path: Path):
    def write(strip: np.ndarray, name: str = "strip.npy") -> Path:
        path = tmp_path / name
        np.save(path, strip)
        return path

    return write
