"""Image statistics: each moves with its own cause and not with the others."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flawscope.acquire.perturb import Perturbation, apply_perturbation
from flawscope.errors import InputError
from flawscope.monitor.imagestats import MAX_PIXELS, STAT_NAMES, ImageStatistics, image_stats, sample_stride

INDEX = {name: i for i, name in enumerate(STAT_NAMES)}


def _part(seed: int = 0, size: tuple[int, int] = (128, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(120, 25, size).astype(np.float32)
    import cv2

    return np.clip(cv2.GaussianBlur(base, (0, 0), 1.0), 0, 255).astype(np.uint8)


def test_dimming_moves_brightness_only() -> None:
    image = _part()
    before, after = image_stats(image), image_stats(apply_perturbation(image, "dim", 0.15))
    assert after[INDEX["brightness"]] - before[INDEX["brightness"]] == pytest.approx(math.log(0.85), abs=0.01)
    for name in ("contrast", "sharpness", "position_x", "position_y"):
        assert after[INDEX[name]] == pytest.approx(before[INDEX[name]], abs=0.02), name


def test_blur_lowers_and_coarser_texture_raises_sharpness() -> None:
    image = _part(1)
    base = image_stats(image)[INDEX["sharpness"]]
    assert image_stats(apply_perturbation(image, "blur", 1.5))[INDEX["sharpness"]] < base - 0.3
    assert image_stats(apply_perturbation(image, "texture", 1.0))[INDEX["sharpness"]] > base + 0.1


def test_colour_balance_is_zero_for_grey_and_moves_with_a_colour_cast() -> None:
    grey = _part(2)
    stats = image_stats(grey)
    assert stats[INDEX["colour_rg"]] == 0.0 and stats[INDEX["colour_bg"]] == 0.0
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert image_stats(rgb)[INDEX["colour_rg"]] == pytest.approx(0.0, abs=1e-3)
    warm = rgb.copy()
    warm[:, :, 0] = np.clip(warm[:, :, 0].astype(int) + 20, 0, 255)
    assert image_stats(warm)[INDEX["colour_rg"]] > 0.1


def test_position_follows_the_detail() -> None:
    image = np.full((100, 200), 128, np.uint8)
    image[40:60, 20:40] = _part(3, (20, 20))
    stats = image_stats(image)
    assert stats[INDEX["position_x"]] == pytest.approx(30 / 199, abs=0.03)
    assert stats[INDEX["position_y"]] == pytest.approx(50 / 99, abs=0.03)
    assert math.isnan(image_stats(np.full((50, 50), 7, np.uint8))[INDEX["position_x"]])  # no detail at all


def test_bit_depth_and_large_images() -> None:
    image = _part(4)
    deep = image.astype(np.uint16) * 257
    assert np.allclose(image_stats(image), image_stats(deep), atol=1e-3)
    big = np.tile(_part(5), (8, 8))
    assert sample_stride(*big.shape) > 1
    step = sample_stride(*big.shape)
    assert big[::step, ::step].size <= MAX_PIXELS
    compute = ImageStatistics()
    assert np.array_equal(compute(big), compute(big))  # buffers reused, same answer


def test_perturbation_profile_and_parsing() -> None:
    drift = Perturbation.parse("dim:0.2:100:50")
    assert (drift.kind, drift.amount, drift.ramp, drift.start) == ("dim", 0.2, 100, 50)
    assert drift.strength(0) == 0.0 and drift.strength(99) == 0.5 and drift.strength(500) == 1.0
    assert Perturbation.parse("texture:1").strength(0) == 1.0
    image = _part(6)
    assert drift.apply(image, 0) is image
    assert drift.apply(image, 500).dtype == np.uint8
    with pytest.raises(InputError, match="KIND:AMOUNT"):
        Perturbation.parse("dim")
    with pytest.raises(InputError, match="unknown kind"):
        Perturbation.parse("fog:1")
    with pytest.raises(InputError, match="out of range"):
        Perturbation.parse("dim:1.5")
