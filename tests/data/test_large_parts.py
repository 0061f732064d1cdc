"""Large synthetic parts: seeded, tiny defects of the asked size, exact masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flawscope.data.large_parts import LargePartSpec, make_large_part
from flawscope.errors import InputError


def test_parts_are_seeded_and_good_parts_have_empty_masks():
    spec = LargePartSpec(size=(256, 384), defect_px=(10, 30), seed=5)
    a, mask_a = make_large_part(spec, "test_defect", 2)
    b, mask_b = make_large_part(spec, "test_defect", 2)
    assert a.shape == (256, 384) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(a, make_large_part(spec, "test_defect", 3)[0])
    _, empty = make_large_part(spec, "train", 0)
    assert not empty.any()


def test_defects_are_10_to_30_px_and_the_mask_marks_what_changed():
    spec = LargePartSpec(size=(512, 640), defect_px=(10, 30), defects_per_part=(2, 3), seed=1)
    for index in range(4):
        image, mask = make_large_part(spec, "test_defect", index)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        assert 1 <= count - 1 <= 3
        for label in range(1, count):
            _, _, w, h, area = stats[label]
            assert 4 <= max(w, h) <= 31 and area >= 8
            # What the mask marks stands out from the ring of texture around it.
            inside = labels == label
            ring = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
            assert abs(float(image[inside].mean()) - float(image[ring].mean())) > 8


def _residual(image: np.ndarray, sigma: float) -> np.ndarray:
    """Deviation of each pixel from its smoothed surroundings (what a flaw adds to the texture)."""
    a = image.astype(np.float32)
    return a - cv2.GaussianBlur(a, (0, 0), sigma)


def test_defects_stand_out_at_full_resolution_and_fade_when_shrunk_twelvefold():
    # 768 x 1024 shrunk 12x is what 3000 x 4000 onto a 256-px canvas does to a 10-30 px flaw.
    spec = LargePartSpec(size=(768, 1024), defect_px=(10, 30), seed=2)
    native, shrunk, good_peaks = [], [], []
    for index in range(3):
        image, mask = make_large_part(spec, "test_defect", index)
        good, _ = make_large_part(spec, "test_good", index)
        texture = float(_residual(good, 24).std())
        native.append(float(np.quantile(np.abs(_residual(image, 24)[mask]), 0.9)) / texture)
        small = (64, 85)
        tiny = cv2.resize(image, small[::-1], interpolation=cv2.INTER_AREA)
        tiny_good = cv2.resize(good, small[::-1], interpolation=cv2.INTER_AREA)
        tiny_mask = cv2.resize(mask.astype(np.float32), small[::-1], interpolation=cv2.INTER_AREA) > 0
        peak = float(np.abs(_residual(tiny, 3)[tiny_mask]).max())
        shrunk.append(peak)
        good_peaks.append(float(np.abs(_residual(tiny_good, 3)).max()))
    assert min(native) > 2.0  # each flaw's core is well above the texture at full resolution
    # Shrunk, none rises above what a good part's texture reaches (on average over good parts:
    # one good part's highest texture residual alone varies by about 20% from part to part).
    assert max(shrunk) < float(np.mean(good_peaks))


def test_bad_specs_are_refused():
    with pytest.raises(InputError, match="defect_px"):
        LargePartSpec(size=(100, 100), defect_px=(10, 40))
    with pytest.raises(InputError, match="texture"):
        LargePartSpec(texture="marble")


def test_texture_has_no_mirror_seam():
    # The texture was once a 1024-px block mirrored across the part: columns 1024 - k and
    # 1023 + k were the same texture (a chevron where angled streaks met their mirror image).
    # Generated in one piece, the two sides of any column are as unrelated as any two columns.
    spec = LargePartSpec(size=(1024, 2304), seed=3)
    for index in range(2):
        image, _ = make_large_part(spec, "test_good", index)
        residual = _residual(image, 8)
        mirror = {}
        for column in (512, 1024, 1536, 2048):
            left = residual[:, column - 64 : column][:, ::-1].ravel()
            right = residual[:, column : column + 64].ravel()
            mirror[column] = float(np.corrcoef(left, right)[0, 1])
        # Streaks run nearly along x, so nearby columns correlate anywhere (0.2-0.6); a mirror
        # seam made the two sides equal (0.98).
        ordinary = max(mirror[512], mirror[1536])
        for seam in (1024, 2048):
            assert mirror[seam] < 0.8 and mirror[seam] < ordinary + 0.15
