import json
import time

import numpy as np
import pytest
from scipy.stats import beta, binomtest

from flawscope.decide.calibration import (
    calibrate,
    clopper_pearson_interval,
    clopper_pearson_upper,
    min_good_for,
)
from flawscope.decide.thresholds import ThresholdHistory
from flawscope.errors import InputError


def _goods(n, seed=0):
    return np.random.default_rng(seed).gamma(4.0, 0.25, n) + 0.1


def test_clopper_pearson_upper_matches_known_values():
    assert clopper_pearson_upper(0, 300) == pytest.approx(0.00994, abs=1e-5)
    assert clopper_pearson_upper(0, 50) == pytest.approx(0.0582, abs=1e-4)
    assert clopper_pearson_upper(0, 50) == pytest.approx(1 - 0.05 ** (1 / 50))
    assert clopper_pearson_upper(3, 300) == pytest.approx(beta.ppf(0.95, 4, 297))
    assert clopper_pearson_upper(10, 10) == 1.0


@pytest.mark.parametrize(("x", "n"), [(0, 20), (7, 20), (20, 20), (45, 50)])
def test_clopper_pearson_interval_matches_scipy(x, n):
    ref = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson_interval(x, n) == pytest.approx((ref.low, ref.high))


def test_min_good_for_target():
    assert min_good_for(0.01) == 299
    assert clopper_pearson_upper(0, 299) <= 0.01 < clopper_pearson_upper(0, 298)


def test_large_set_meets_the_bound_with_the_lowest_threshold():
    goods = _goods(1000)
    result = calibrate(goods, target_frr=0.01)
    k = result.n_false_rejects
    assert result.guarantee == "bound"
    assert result.frr_upper_bound <= 0.01
    assert beta.ppf(0.95, k + 2, 1000 - k - 1) > 0.01  # one more reject would break the bound
    assert k == int((goods >= result.reject).sum())
    # Lowest such threshold: the highest good that passes sits just below it.
    below = np.sort(goods)[-k - 1]
    assert below < result.reject <= below * (1 + 1e-6) + 1e-12
    assert result.empirical_frr == k / 1000 and result.warnings == ()
    assert result.thresholds.method == "calibrated" and result.thresholds.n_calibration == 1000


def test_300_goods_allow_no_false_reject():
    goods = _goods(300)
    result = calibrate(goods, target_frr=0.01)
    assert result.guarantee == "bound" and result.n_false_rejects == 0
    assert result.reject > goods.max()
    assert result.frr_upper_bound == pytest.approx(0.00994, abs=1e-5)


def test_small_set_says_it_is_too_small():
    goods = _goods(50)
    result = calibrate(goods, target_frr=0.01)
    assert result.guarantee == "empirical"
    assert result.min_supported_frr == pytest.approx(0.0582, abs=1e-4)
    assert result.min_good_for_target == 299
    assert result.empirical_frr <= 0.01
    (warning,) = result.warnings
    assert "too few" in warning and "5.82%" in warning and "299" in warning


def test_empirical_rule_on_request_gives_at_least_the_recall():
    goods, defects = _goods(1000), _goods(200, seed=1) + 1.0
    strict = calibrate(goods, 0.01, defect_scores=defects)
    loose = calibrate(goods, 0.01, defect_scores=defects, require_bound=False)
    assert loose.guarantee == "empirical" and loose.n_false_rejects == 10
    assert loose.reject <= strict.reject and loose.recall >= strict.recall
    assert any("upper bound" in w for w in loose.warnings)


def test_ties_never_exceed_the_allowed_rejects():
    goods = np.r_[np.full(20, 1.0), np.full(80, 0.5)]
    result = calibrate(goods, target_frr=0.1, require_bound=False)
    # 20 tied goods at the top cannot be split: all must pass.
    assert result.n_false_rejects == 0 and result.reject > 1.0


def test_recall_and_interval_with_defect_scores():
    goods = np.linspace(0.1, 1.0, 400)
    defects = np.r_[np.full(30, 5.0), np.full(10, 0.5)]
    result = calibrate(goods, 0.01, defect_scores=defects)
    assert result.recall == pytest.approx(0.75)
    ref = binomtest(30, 40).proportion_ci(confidence_level=0.95, method="exact")
    assert result.recall_ci == pytest.approx((ref.low, ref.high))
    assert result.thresholds.recall == result.recall and result.n_defect == 40


def test_review_band_by_rate():
    goods, defects = _goods(1000), _goods(100, seed=2) + 0.5
    result = calibrate(goods, 0.01, defect_scores=defects, review_rate=0.05)
    in_band = ((goods >= result.review) & (goods < result.reject)).mean()
    assert result.review < result.reject
    assert in_band == result.review_rate and 0.049 <= in_band <= 0.05
    assert result.recall_incl_review >= result.recall
    assert result.thresholds.has_review_band


def test_review_band_explicit_and_errors():
    goods = _goods(300)
    plain = calibrate(goods)
    assert plain.review == plain.reject and plain.review_rate is None
    explicit = calibrate(goods, review_threshold=plain.reject * 0.9)
    assert explicit.review == pytest.approx(plain.reject * 0.9)
    with pytest.raises(InputError, match="must not exceed the reject threshold") as err:
        calibrate(goods, review_threshold=plain.reject * 2)
    assert err.value.where == "review_threshold"
    tiny = calibrate(goods, review_rate=0.001)
    assert tiny.review == tiny.reject and "no review band" in tiny.warnings[0]
    with pytest.raises(InputError, match="not both"):
        calibrate(goods, review_rate=0.1, review_threshold=1.0)


@pytest.mark.parametrize(
    ("args", "where", "text"),
    [
        ({"good_scores": [1, 2, 3, 4, 5, 6, 7]}, "good_scores", "needs at least 10 good images, got 7"),
        ({"target_frr": 0.0}, "target_frr", "(0, 0.5)"),
        ({"target_frr": 0.5}, "target_frr", "(0, 0.5)"),
        ({"good_scores": [1.0] * 11 + [float("nan")]}, "good_scores", "index 11"),
        ({"defect_scores": [1.0, float("inf")]}, "defect_scores", "index 1"),
        ({"review_rate": 1.0}, "review_rate", "[0, 1)"),
        ({"confidence": 1.0}, "confidence", "[0.5, 1)"),
    ],
)
def test_bad_input(args, where, text):
    kwargs = {"good_scores": _goods(100), **args}
    with pytest.raises(InputError) as err:
        calibrate(**kwargs)
    assert err.value.where == where and text in err.value.problem


def test_nan_names_the_file():
    with pytest.raises(InputError, match=r"'b\.png' \(index 1\)"):
        calibrate([1.0, float("nan")] + [1.0] * 10, names=["a.png", "b.png"] + ["x.png"] * 10)


def test_outlier_is_kept_counted_and_reported():
    goods = list(_goods(200))
    goods[17] = 50.0
    names = [f"good_{i:03d}.png" for i in range(200)]
    result = calibrate(goods, target_frr=0.05, names=names)
    assert result.outliers == (17,)
    assert result.n_good == 200
    assert result.n_false_rejects >= 1 and result.reject < 50.0  # counted as a false reject
    (warning,) = result.warnings
    assert "good_017.png" in warning and "counted as a false reject" in warning
    clean = calibrate(_goods(200), target_frr=0.05)
    assert clean.outliers == () and clean.warnings == ()


def test_probability_outliers_are_the_good_parts_the_head_calls_defects():
    # A trained head scores most good parts near 0: a tenth of them lie "10 MADs" above the
    # median while the head still calls them good, so the MAD rule would name them all.
    rng = np.random.default_rng(0)
    goods = rng.beta(0.6, 150.0, size=200)
    goods[::10] = rng.uniform(0.03, 0.3, size=20)
    goods[[7, 42]] = [0.93, 0.61]
    names = [f"good_{i:03d}.png" for i in range(200)]
    linear = calibrate(goods, names=names)
    assert len(linear.outliers) > 20
    result = calibrate(goods, names=names, probability=True)
    assert result.outliers == (7, 42)
    flagged = [w for w in result.warnings if "calls it a defect" in w]
    assert len(flagged) == 2 and "good_007.png" in flagged[0] and "good_042.png" in flagged[1]
    # Scores outside [0, 1] are not probabilities, whatever the caller says: the MAD rule.
    shifted = calibrate(goods + 0.5, names=names, probability=True)
    assert shifted.outliers == calibrate(goods + 0.5, names=names).outliers
    assert len(shifted.outliers) > 20


def test_many_outliers_share_one_warning_after_the_first_five():
    goods = list(_goods(300))
    for i in range(12):
        goods[i * 20] = 60.0 + i
    result = calibrate(goods, target_frr=0.05, names=[f"g{i}.png" for i in range(300)])
    assert len(result.outliers) == 12
    outlier_warnings = [w for w in result.warnings if "g" in w and ".png" in w]
    assert len(outlier_warnings) == 6  # five named one by one (highest first), then one for the rest
    assert "'g220.png'" in outlier_warnings[0]  # 71.0, the highest
    assert outlier_warnings[-1].startswith("7 more good images") and "'outliers'" in outlier_warnings[-1]


def test_result_is_json_ready_and_goes_into_a_history():
    result = calibrate(_goods(300), defect_scores=_goods(20, seed=3) + 2, review_rate=0.02)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["guarantee"] == "bound" and len(data["recall_ci"]) == 2
    history = ThresholdHistory().add(result.thresholds)
    assert history.active.version == 1 and history.active.reject == result.reject


def test_calibration_of_1000_scores_is_fast():
    goods, defects = _goods(1000), _goods(200, seed=4) + 1
    start = time.perf_counter()
    calibrate(goods, defect_scores=defects, review_rate=0.02)
    assert time.perf_counter() - start < 0.5


def test_good_parts_at_the_probability_ceiling_are_said_to_leave_no_part_failing():
    # A trained head certain that 2 of 50 good parts are defects (float32 saturates at 1): the
    # threshold above them is above every probability, and no part could ever fail.
    goods = np.concatenate([np.linspace(0.001, 0.3, 48), [1.0, np.float32(0.99999994)]])
    result = calibrate(goods, target_frr=0.01, probability=True, require_bound=False)
    assert result.thresholds.reject > 1.0
    assert (
        result.warnings[0].startswith("NO PART CAN FAIL")
        and "2 good calibration image(s)" in result.warnings[0]
    )
    assert "--target-frr 0.04 or more" in result.warnings[0]
    # At that target the two are rejected and the threshold is within reach.
    assert calibrate(goods, target_frr=0.04, probability=True, require_bound=False).thresholds.reject <= 1.0
    # An unbounded score above 1 is no such case.
    assert not any("NO PART" in w for w in calibrate(goods * 10, target_frr=0.01).warnings)
