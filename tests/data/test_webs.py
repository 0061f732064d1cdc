"""Synthetic webs: seeded, continuous across blocks, defects exactly where planned."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.data.webs import WebGenerator, WebSpec, good_frames, plan_defects
from flawscope.errors import InputError


def _web(spec: WebSpec) -> np.ndarray:
    return np.concatenate([rows for _, rows in WebGenerator(spec).blocks()])


def test_same_spec_same_web_and_block_size_does_not_matter_for_defects() -> None:
    spec = WebSpec(length_m=2, width_px=64, n_defects=3, seed=4, block_rows=100, defect_mm=(3, 6))
    assert np.array_equal(_web(spec), _web(spec))
    assert _web(spec).shape == (2000, 64)


def test_defects_change_the_web_only_where_planned() -> None:
    spec = WebSpec(length_m=3, width_px=96, n_defects=4, seed=2, texture="textile", defect_mm=(4, 10))
    clean = WebSpec(**{**spec.__dict__, "n_defects": 0})
    diff = np.abs(_web(spec).astype(int) - _web(clean).astype(int))
    defects = plan_defects(spec)
    assert len(defects) == 4
    assert [d.row0 for d in defects] == sorted(d.row0 for d in defects)
    inside = np.zeros(diff.shape, bool)
    for d in defects:
        inside[d.row0 : d.row0 + d.patch.shape[0], d.col0 : d.col0 + d.patch.shape[1]] = True
        x0, y0, x1, y1 = d.bbox
        assert diff[y0:y1, x0:x1].max() >= 15
    assert diff[~inside].max() == 0


def test_good_frames_and_bad_specs() -> None:
    frames = good_frames(WebSpec(width_px=48, defect_mm=(3, 6)), 32, 7)
    assert len(frames) == 7 and all(f.shape == (32, 48) for f in frames)
    with pytest.raises(InputError, match="texture"):
        WebSpec(texture="paper")
    with pytest.raises(InputError, match="n_defects"):
        plan_defects(WebSpec(length_m=0.05, n_defects=20))
