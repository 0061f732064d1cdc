"""A bad image rejects that part with an ERROR verdict (never a pass); the rest of the batch is judged."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.types import Outcome


def _bad_images(good: np.ndarray) -> dict[str, object]:
    rgb = np.dstack([good] * 3)
    nan_image = good.astype(np.float32) / 255
    nan_image[5, 7] = np.nan
    inf_image = good.astype(np.float64) / 255
    inf_image[0, 0] = np.inf
    return {
        "5 channels": np.dstack([rgb, good, good]),
        "int64": good.astype(np.int64),
        "float16": (good / 255).astype(np.float16),
        "NaN": nan_image,
        "inf": inf_image,
        "1x1": np.zeros((1, 1), np.uint8),
        "empty": np.zeros((0, 64), np.uint8),
        "None": None,
        "nested list": good.tolist(),
        "4-D": good[None, :, :, None],
    }


def test_bad_parts_get_error_verdicts_and_good_parts_are_judged(deployed):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    good_a, good_b, bad_part = deployed.good[0], deployed.good[1], deployed.defective[0]
    bad = _bad_images(good_a)
    batch = [good_a, *bad.values(), bad_part, good_b]
    verdicts = inspector.inspect_many(batch)

    assert len(verdicts) == len(batch)
    alone = [inspector.inspect(good_a), inspector.inspect(bad_part), inspector.inspect(good_b)]
    for got, want in zip([verdicts[0], verdicts[-2], verdicts[-1]], alone, strict=True):
        assert got.outcome == want.outcome and got.outcome is not Outcome.ERROR
        assert got.score == pytest.approx(want.score, rel=1e-5)
    for name, verdict in zip(bad, verdicts[1:-2], strict=True):
        assert verdict.outcome is Outcome.ERROR, name
        assert not verdict.outcome.is_accept
        assert np.isnan(verdict.score)
        assert verdict.reason, name
        assert verdict.model_hash == inspector.model_hash
        assert verdict.threshold_version == inspector.thresholds.version


def test_error_reasons_say_what_is_wrong(deployed):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    bad = _bad_images(deployed.good[0])
    reasons = dict(zip(bad, (v.reason for v in inspector.inspect_many(list(bad.values()))), strict=True))
    assert "shape" in reasons["5 channels"]
    assert "int64" in reasons["int64"] and "float16" in reasons["float16"]
    assert "NaN" in reasons["NaN"] and "infinite" in reasons["inf"]
    assert "at least 16x16" in reasons["1x1"]
    assert "no image" in reasons["None"]
    assert "numpy array" in reasons["nested list"]


def test_score_many_raises_for_a_bad_image(deployed):
    from flawscope.errors import InputError
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    with pytest.raises(InputError, match="pixel type int64"):
        inspector.score_many([deployed.good[0], deployed.good[0].astype(np.int64)])


def test_colour_16bit_and_other_sizes_are_inspected(deployed):
    """Valid variants of an image are judged (the map follows each image's own size)."""
    import cv2

    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    good = deployed.good[0]
    variants = [
        cv2.resize(good, (160, 100)),
        np.dstack([good] * 3),
        good.astype(np.uint16) * 257,
        good[:, :, None],
        np.dstack([good] * 3 + [np.full_like(good, 128)]),  # RGBA: alpha is ignored, as in a file
        np.dstack([good, np.full_like(good, 255)]),  # gray + alpha
    ]
    verdicts = inspector.inspect_many(variants)
    assert all(v.outcome is not Outcome.ERROR for v in verdicts)
    reference = inspector.inspect(good).score
    for verdict in verdicts[1:]:  # same pixels in another layout: same score
        assert verdict.score == pytest.approx(reference, rel=1e-4)
    maps = inspector.score_many(variants).maps
    assert maps[0].shape == (100, 160)


def test_empty_batch(deployed):
    from flawscope.runtime import Inspector

    inspector = Inspector.load(deployed.path, threads=2)
    assert inspector.inspect_many([]) == []
    assert inspector.score_many([]).scores.shape == (0,)
