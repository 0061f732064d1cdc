import subprocess
import sys

import numpy as np
import pytest

from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide, error_verdict
from flawscope.types import Outcome


def _thresholds(reject=1.0, review=0.8, **rules):
    t = Thresholds.explicit(reject, review, **rules)
    return Thresholds.from_dict({**t.to_dict(), "version": 3})


def _map(score, box=(10, 10, 20, 20), shape=(64, 64)):
    amap = np.full(shape, 0.1, np.float32)
    x0, y0, x1, y1 = box
    amap[y0:y1, x0:x1] = score
    return amap


@pytest.mark.parametrize(
    ("score", "outcome"),
    [
        (0.5, Outcome.PASS),
        (0.8, Outcome.REVIEW),
        (0.99, Outcome.REVIEW),
        (1.0, Outcome.FAIL),
        (4.0, Outcome.FAIL),
    ],
)
def test_score_bands(score, outcome):
    v = decide(score, _map(score), _thresholds(), model_hash="abc")
    assert v.outcome is outcome
    assert v.normalized_score == pytest.approx(score / 1.0)
    assert v.threshold_version == 3 and v.model_hash == "abc"
    assert v.reason


def test_no_review_band_when_equal():
    t = _thresholds(reject=2.0, review=2.0)
    assert decide(1.99, None, t).outcome is Outcome.PASS
    assert decide(2.0, None, t).outcome is Outcome.FAIL
    assert decide(2.0, None, t).normalized_score == 1.0


def test_fail_reports_regions_at_reject_threshold():
    v = decide(1.5, _map(1.5, box=(5, 6, 25, 16)), _thresholds())
    assert v.outcome is Outcome.FAIL
    (region,) = v.regions
    assert region.bbox == (5, 6, 25, 16) and region.area_px == 200 and region.peak == 1.5


def test_min_area_turns_small_fail_into_review():
    t = _thresholds(min_area_px=150)
    small = decide(1.5, _map(1.5, box=(0, 0, 10, 10)), t)  # 100 px
    large = decide(1.5, _map(1.5, box=(0, 0, 20, 10)), t)  # 200 px
    assert small.outcome is Outcome.REVIEW and "minimum defect area" in small.reason
    assert large.outcome is Outcome.FAIL
    assert decide(1.5, None, t).outcome is Outcome.REVIEW  # the area cannot be measured


def test_min_area_in_mm2():
    t = _thresholds(min_area_mm2=1.0, mm_per_px=0.1)  # 1 mm² = 100 px
    assert decide(1.5, _map(1.5, box=(0, 0, 9, 10)), t).outcome is Outcome.REVIEW  # 90 px
    v = decide(1.5, _map(1.5, box=(0, 0, 10, 10)), t)
    assert v.outcome is Outcome.FAIL and v.regions[0].area_mm2 == pytest.approx(1.0)


def test_too_many_regions_fail_even_when_small():
    amap = np.full((64, 64), 0.1, np.float32)
    for i in range(4):
        amap[4 + 10 * i, 4] = 2.0  # four isolated 1-px spots
    t = _thresholds(min_area_px=50, max_regions=3)
    v = decide(2.0, amap, t)
    assert v.outcome is Outcome.FAIL and "more than the maximum 3" in v.reason
    assert decide(2.0, amap, _thresholds(min_area_px=50, max_regions=4)).outcome is Outcome.REVIEW


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "abc"])
def test_bad_score_is_an_error_never_a_pass(bad):
    v = decide(bad, None, _thresholds(), model_hash="h")
    assert v.outcome is Outcome.ERROR and not v.outcome.is_accept
    assert v.threshold_version == 3 and v.model_hash == "h" and v.reason


def test_map_with_nan_is_an_error():
    amap = _map(0.2)
    amap[3, 3] = np.nan
    v = decide(0.2, amap, _thresholds())
    assert v.outcome is Outcome.ERROR and "NaN" in v.reason
    assert decide(0.2, np.zeros((4, 4, 3)), _thresholds()).outcome is Outcome.ERROR


def test_error_verdict_helper():
    v = error_verdict("camera timeout", "hash", 7)
    assert v.outcome is Outcome.ERROR and np.isnan(v.score) and v.threshold_version == 7
    assert v.reason == "camera timeout"


def test_runtime_modules_import_without_scipy_sklearn_or_torch():
    code = (
        "import sys, flawscope.decide.verdict, flawscope.decide.regions;"
        "print(sorted(m for m in ('scipy', 'sklearn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
