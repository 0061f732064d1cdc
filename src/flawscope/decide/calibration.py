"""Calibrate the reject (and review) threshold on held-out good parts.

The reject threshold is set from the anomaly scores of good images the model was *not* trained
on, so that few good parts are falsely rejected (the false-reject rate, FRR). With ``n`` good
images of which ``k`` score at or above the threshold, the empirical FRR is ``k / n``; the true
FRR on the line is only known within a confidence interval, whose one-sided Clopper-Pearson
upper bound at confidence ``c`` is ``beta.ppf(c, k + 1, n - k)``.

Choice of threshold (``require_bound=True``, the default):

* ``guarantee="bound"``: when the set is large enough, the threshold is the lowest one whose
  FRR *upper bound* is at most the target, i.e. the largest ``k`` with
  ``beta.ppf(c, k + 1, n - k) <= target`` good images may lie at or above it. The true FRR is
  then at most the target with confidence ``c``.
* ``guarantee="empirical"``: when even ``k = 0`` has an upper bound above the target
  (``1 - (1 - c) ** (1 / n) > target``: e.g. 50 images give 5.8 %), no threshold can show the
  target; the threshold is then the lowest with empirical FRR ``k / n <= target``, the result
  says so in ``warnings`` and gives the smallest target the set supports
  (``min_supported_frr``) and the number of good images the target needs.

With ``require_bound=False`` the empirical rule is used whatever the set size (more recall, a
weaker statement). Either way the threshold is placed just above the highest good score that
must pass (relative margin 1e-6, at most half-way to the next good score): as low as possible
for recall, yet not so tight that round-off between runtimes flips that part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

from flawscope.decide.thresholds import Thresholds, utc_now_iso
from flawscope.errors import InputError

MIN_GOOD = 10
# A calibration score above median + OUTLIER_MADS * MAD of the good scores gets a warning.
OUTLIER_MADS = 10.0
# A probability score (a trained head's) at or above this: the model calls the good part a defect.
PROBABILITY_DEFECT = 0.5
# Outliers named one per warning; the rest share one warning (the record lists every index).
MAX_OUTLIER_WARNINGS = 5
_MARGIN = 1e-6


def clopper_pearson_upper(k: int | np.ndarray, n: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided upper confidence bound of a proportion with ``k`` successes out of ``n``.

    Args:
        k: ``()`` or ``(K,)`` success counts, each in ``[0, n]``.
        n: number of trials (> 0).
        confidence: confidence level, e.g. 0.95.

    Returns:
        Upper bounds, same shape as ``k``; 1 where ``k == n``.
    """
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        upper = beta.ppf(confidence, k + 1, n - k)
    return np.where(k >= n, 1.0, upper)


def clopper_pearson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided ("exact") Clopper-Pearson interval of a proportion with ``x`` successes of ``n``."""
    alpha = 1.0 - confidence
    low = 0.0 if x == 0 else float(beta.ppf(alpha / 2, x, n - x + 1))
    high = 1.0 if x == n else float(beta.ppf(1 - alpha / 2, x + 1, n - x))
    return low, high


def min_good_for(target_frr: float, confidence: float = 0.95) -> int:
    """Fewest good images whose FRR upper bound with no false rejects is at most ``target_frr``."""
    n = max(1, math.ceil(math.log(1 - confidence) / math.log(1 - target_frr)))
    # Guard the closed form against round-off at the boundary.
    while float(clopper_pearson_upper(0, n, confidence)) > target_frr:
        n += 1
    while n > 1 and float(clopper_pearson_upper(0, n - 1, confidence)) <= target_frr:
        n -= 1
    return n


@dataclass(frozen=True)
class CalibrationResult:
    """Calibrated thresholds and what they achieve on the calibration set.

    Attributes:
        thresholds: the thresholds (version 0 until added to a ``ThresholdHistory``; set hard
            rules with ``dataclasses.replace``).
        guarantee: ``"bound"`` (FRR upper bound <= target at ``confidence``) or ``"empirical"``
            (only the calibration set's FRR is <= target).
        n_good: number of good images.
        n_false_rejects: good images with ``score >= reject``.
        empirical_frr: ``n_false_rejects / n_good``.
        frr_upper_bound: one-sided Clopper-Pearson upper bound of the FRR at ``confidence``.
        min_supported_frr: smallest target this set can show with its upper bound (no rejects).
        min_good_for_target: good images needed to show ``target_frr`` with its upper bound.
        review_rate: share of good images in the review band (``None`` without a band).
        n_defect: number of defective images given.
        recall: share of defective images with ``score >= reject`` (``None`` without them).
        recall_ci: two-sided Clopper-Pearson interval of ``recall`` at ``confidence``.
        recall_incl_review: share of defective images stopped (fail or review).
        outliers: indices of good scores far above the rest (kept in the calibration).
        warnings: what the user should know (set too small, outliers).
    """

    thresholds: Thresholds
    guarantee: str
    n_good: int
    n_false_rejects: int
    empirical_frr: float
    frr_upper_bound: float
    min_supported_frr: float
    min_good_for_target: int
    review_rate: float | None
    n_defect: int
    recall: float | None
    recall_ci: tuple[float, float] | None
    recall_incl_review: float | None
    outliers: tuple[int, ...]
    warnings: tuple[str, ...]

    @property
    def reject(self) -> float:
        """The reject threshold."""
        return self.thresholds.reject

    @property
    def review(self) -> float:
        """The review threshold (equal to ``reject`` without a review band)."""
        return self.thresholds.review

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        data = asdict(self)
        data["thresholds"] = self.thresholds.to_dict()
        for key in ("recall_ci", "outliers", "warnings"):
            value = getattr(self, key)
            data[key] = list(value) if value is not None else None
        return data


def _scores(name: str, values: object, names: Sequence[str] | None) -> np.ndarray:
    try:
        s = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(name, "must be a sequence of numbers") from None
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        i = int(bad[0])
        which = f"{names[i]!r} (index {i})" if names is not None else f"index {i}"
        raise InputError(name, f"score of {which} is {s[i]}; {bad.size} score(s) are NaN or infinite")
    return s


def _just_above(sorted_scores: np.ndarray, value: float) -> float:
    """A threshold just above ``value`` and below the next higher score in ``sorted_scores``."""
    margin = _MARGIN * max(abs(value), 1e-12)
    higher = sorted_scores[np.searchsorted(sorted_scores, value, side="right") :]
    if higher.size:
        margin = min(margin, (float(higher[0]) - value) / 2)
    return value + margin


def _outlier_warnings(
    goods: np.ndarray, reject: float, names: Sequence[str] | None, probability: bool = False
) -> tuple[tuple[int, ...], list[str]]:
    """Good calibration scores worth a person's look, and one warning each (the highest first).

    An unbounded score (an anomaly score, a fused sum) is far above the rest beyond
    ``median + OUTLIER_MADS * MAD``. A probability is not judged that way: a trained head scores
    most good parts near 0, so its MAD is tiny and a tenth of the parts would lie "10 MADs" out
    while the head still calls them good. A probability score is flagged where the model itself
    calls the good part a defect (``score >= 0.5``).
    """
    if probability:
        limit, rule = PROBABILITY_DEFECT, f"the model calls it a defect (score >= {PROBABILITY_DEFECT:g})"
    else:
        median = float(np.median(goods))
        deviation = np.abs(goods - median)
        scale = float(np.median(deviation))
        if scale == 0.0:
            # Over half the scores are equal: fall back to the mean deviation (normal-consistent).
            scale = 1.2533 * float(deviation.mean())
        if scale == 0.0:
            return (), []
        limit = median + OUTLIER_MADS * scale
        rule = (
            f"far above the other good images (median {median:.6g}, more than {OUTLIER_MADS:g} MADs of "
            f"{scale:.3g})"
        )
    above = goods >= limit if probability else goods > limit
    found = np.flatnonzero(above)
    found = found[np.argsort(-goods[found], kind="stable")]

    def which(i: int) -> str:
        return f"{names[i]!r} (index {i})" if names is not None else f"good image {i}"

    warnings = []
    for i in found[:MAX_OUTLIER_WARNINGS]:
        fate = "counted as a false reject" if goods[i] >= reject else "it passes"
        warnings.append(
            f"{which(int(i))} scores {goods[i]:.6g}: {rule}; check that it really is a good part; "
            f"it is included in the calibration ({fate})"
        )
    rest = found[MAX_OUTLIER_WARNINGS:]
    if rest.size:
        listed = ", ".join(which(int(i)) for i in rest[:MAX_OUTLIER_WARNINGS])
        more = f" and {rest.size - MAX_OUTLIER_WARNINGS} more" if rest.size > MAX_OUTLIER_WARNINGS else ""
        warnings.append(
            f"{rest.size} more good images score like that ({goods[rest[0]]:.6g} to {goods[rest[-1]]:.6g}): "
            f"{listed}{more}; the calibration record's 'outliers' lists every index"
        )
    return tuple(sorted(int(i) for i in found)), warnings


def _outcomes(scores: np.ndarray, reject: float, review: float | None = None) -> np.ndarray:
    """Outcomes of bare scores under score thresholds, decided by the one decision function."""
    from flawscope.decide.verdict import decide_many, outcomes
    from flawscope.types import Prediction

    thresholds = Thresholds.explicit(reject, reject if review is None else review)
    return outcomes(decide_many(Prediction(np.asarray(scores, dtype=np.float64)), thresholds, regions=False))


def _count_fails(scores: np.ndarray, reject: float) -> int:
    return int((_outcomes(scores, reject) == "fail").sum())


def _review_share(scores: np.ndarray, reject: float, review: float) -> float:
    return float((_outcomes(scores, reject, review) == "review").mean())


def calibrate(
    good_scores: Sequence[float] | np.ndarray,
    target_frr: float = 0.01,
    confidence: float = 0.95,
    defect_scores: Sequence[float] | np.ndarray | None = None,
    review_rate: float | None = None,
    review_threshold: float | None = None,
    names: Sequence[str] | None = None,
    require_bound: bool = True,
    probability: bool = False,
) -> CalibrationResult:
    """Choose the reject threshold from held-out good scores (see the module docstring).

    Args:
        good_scores: ``(n,)`` anomaly scores of held-out good images, ``n >= 10``.
        target_frr: false-reject rate to meet, in (0, 0.5).
        confidence: confidence level of the bounds and intervals, in (0.5, 1).
        defect_scores: ``(m,)`` scores of defective images, to report recall at the threshold.
        review_rate: share of good images to send to review (the review band sits just below
            the reject threshold); exclusive with ``review_threshold``.
        review_threshold: explicit review threshold, at most the reject threshold.
        names: n names (files) of the good images, used in messages.
        require_bound: aim for the FRR upper bound (True) or only the empirical FRR (False).
        probability: the scores are a trained head's defect probabilities in ``[0, 1]``: a good
            image is reported as an outlier where the model calls it a defect, not by its
            distance from the median (see ``_outlier_warnings``).

    Returns:
        The thresholds and what they achieve.

    Raises:
        InputError: for fewer than 10 good images, NaN or infinite scores, a target outside
            (0, 0.5), a review threshold above the reject threshold, or both review options.
    """
    if names is not None and len(names) != len(good_scores):
        raise InputError("names", f"got {len(names)} names for {len(good_scores)} good scores")
    goods = _scores("good_scores", good_scores, names)
    n = goods.size
    if n < MIN_GOOD:
        raise InputError("good_scores", f"calibration needs at least {MIN_GOOD} good images, got {n}")
    if not (isinstance(target_frr, int | float) and 0.0 < target_frr < 0.5):
        raise InputError("target_frr", f"must be in (0, 0.5), got {target_frr}")
    if not (isinstance(confidence, int | float) and 0.5 <= confidence < 1.0):
        raise InputError("confidence", f"must be in [0.5, 1), got {confidence}")
    if review_rate is not None and review_threshold is not None:
        raise InputError("review_rate", "give either review_rate or review_threshold, not both")
    if review_rate is not None and not 0.0 <= review_rate < 1.0:
        raise InputError("review_rate", f"must be in [0, 1), got {review_rate}")
    defects = _scores("defect_scores", defect_scores, None) if defect_scores is not None else np.zeros(0)

    ordered = np.sort(goods)
    warnings: list[str] = []
    min_supported = float(clopper_pearson_upper(0, n, confidence))
    n_needed = min_good_for(target_frr, confidence)
    allowed = math.floor(target_frr * n + 1e-9)  # good images the empirical rule lets through
    uppers = clopper_pearson_upper(np.arange(allowed + 1), n, confidence)
    if require_bound and uppers[0] <= target_frr:
        guarantee = "bound"
        allowed = int(np.flatnonzero(uppers <= target_frr)[-1])
    else:
        guarantee = "empirical"
        if require_bound:
            warnings.append(
                f"{n} good images are too few to show an FRR of at most {target_frr:.2%} at "
                f"{confidence:.0%} confidence: even with no false rejects the upper bound is "
                f"{min_supported:.2%} (the smallest target this set supports); {n_needed} good images "
                f"are needed. The threshold meets the target on the calibration images only."
            )
    # The (allowed + 1)-th highest good score must pass; everything above it may be rejected.
    reject = _just_above(ordered, float(ordered[n - allowed - 1]))
    if reject <= 0:
        raise InputError(
            "good_scores", f"the reject threshold would be {reject:.6g}; scores must be positive"
        )
    k = _count_fails(goods, reject)
    upper = float(clopper_pearson_upper(k, n, confidence))
    if guarantee == "empirical" and upper > target_frr and not warnings:
        warnings.append(
            f"the FRR upper bound at {confidence:.0%} confidence is {upper:.2%}, above the target"
        )

    review = reject
    if review_threshold is not None:
        if not math.isfinite(review_threshold) or review_threshold > reject:
            raise InputError(
                "review_threshold",
                f"{review_threshold} must not exceed the reject threshold {reject:.6g} chosen by calibration",
            )
        review = float(review_threshold)
    elif review_rate:
        passing = ordered[ordered < reject]
        in_band = min(math.floor(review_rate * n + 1e-9), passing.size)
        if in_band == passing.size:
            review = float(passing[0]) if passing.size else reject
        elif in_band > 0:
            review = _just_above(passing, float(passing[passing.size - in_band - 1]))
        else:
            warnings.append(
                f"review_rate {review_rate:g} is below one good image in {n} ({1 / n:.2%}): no review band"
            )
    achieved_review = _review_share(goods, reject, review) if review < reject else None

    # A sum of standardised evidence (a fused score) is declared as the head's score but is not
    # a probability: the range decides.
    probability = probability and bool(goods.min() >= 0.0 and goods.max() <= 1.0)
    outliers, outlier_warnings = _outlier_warnings(goods, reject, names, probability)
    warnings += outlier_warnings
    if probability and reject > 1.0:
        # Good parts at the probability's ceiling: a threshold above them is above every score the
        # model can give, and the station would pass every part.
        ceiling = int((goods * (1.0 + _MARGIN) > 1.0).sum())  # those a threshold must sit above
        warnings.insert(
            0,
            f"NO PART CAN FAIL: the reject threshold {reject:.7g} is above 1, the highest defect "
            f"probability the model gives, because {ceiling} good calibration image(s) score 1 to "
            f"within {_MARGIN:g} (the model is certain they are defects: mislabelled parts, or an "
            "overconfident model). Check them (the warnings below name them), calibrate for a target "
            f"that lets them be rejected (--target-frr {min(ceiling / n, 0.49):.3g} or more), or retrain",
        )

    recall = recall_ci = recall_incl_review = None
    if defects.size:
        found = _outcomes(defects, reject, review)
        caught = int((found == "fail").sum())
        recall = caught / defects.size
        recall_ci = clopper_pearson_interval(caught, defects.size, confidence)
        recall_incl_review = float((found != "pass").mean())

    thresholds = Thresholds(
        reject=reject,
        review=review,
        version=0,
        created_at=utc_now_iso(),
        method="calibrated",
        target_frr=float(target_frr),
        frr_upper_bound=upper,
        confidence=float(confidence),
        n_calibration=n,
        review_rate=achieved_review,
        recall=recall,
        recall_ci=recall_ci,
        note=(
            f"{guarantee}: {k} of {n} good images rejected (FRR {k / n:.2%}, "
            f"upper bound {upper:.2%} at {confidence:.0%}), target {target_frr:.2%}"
        ),
    )
    return CalibrationResult(
        thresholds=thresholds,
        guarantee=guarantee,
        n_good=n,
        n_false_rejects=k,
        empirical_frr=k / n,
        frr_upper_bound=upper,
        min_supported_frr=min_supported,
        min_good_for_target=n_needed,
        review_rate=achieved_review,
        n_defect=int(defects.size),
        recall=recall,
        recall_ci=recall_ci,
        recall_incl_review=recall_incl_review,
        outliers=outliers,
        warnings=tuple(warnings),
    )
