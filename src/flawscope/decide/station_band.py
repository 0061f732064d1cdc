"""One review budget for a station's two heads: the trained head's band and the anomaly head's.

A station (a model trained on labelled defects with a good-parts anomaly head beside it) stops a
part when its defect score reaches the review threshold, or when its anomaly score reaches
``anomaly_reject`` (:func:`flawscope.decide.verdict.decide_many`, rules 2-4). Calibrated head by
head, each head would spend the whole review budget on its own, and the station would stop up to
twice the good parts it promised; calibrated with the anomaly head at the reject target alone, the
anomaly head stops far fewer unknown defects than the good-parts model the station replaces
(found on magnetic_tile: the old defect types' recall fell from 85% to 19%).

:func:`shared_band` spends the promised budget (the good parts the trained head alone would stop:
its false rejects plus its review band) on both heads at once: each head stops the same number of
held-out good parts, as many as the union of the two keeps within the budget. Only held-out good
parts decide it; no defect label is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SharedBand:
    """The two review thresholds of a station sharing one budget.

    Attributes:
        review: the trained head's review threshold (``<= reject``).
        anomaly_reject: the anomaly head's threshold (a part at or above it goes to review).
        per_head: held-out good parts each head was allowed to stop.
        stopped: held-out good parts the station stops with both thresholds.
        budget: held-out good parts the station may stop.
    """

    review: float
    anomaly_reject: float
    per_head: int
    stopped: int
    budget: int


def _level(ordered: np.ndarray, k: int) -> float:
    """A threshold the ``k`` highest of the ascending ``ordered`` scores reach, and no other (ties aside)."""
    n = ordered.size
    if k <= 0:
        top = float(ordered[-1])
        return float(np.nextafter(top, np.inf)) if np.isfinite(top) else top
    if k >= n:
        return float(ordered[0])
    below, at = float(ordered[n - k - 1]), float(ordered[n - k])
    if at == below:  # a tie across the cut: nothing separates them, the threshold sits above both
        return float(np.nextafter(at, np.inf))
    return below + (at - below) / 2


def anomaly_band(scores: np.ndarray, anomaly: np.ndarray, reject: float, review: float) -> SharedBand:
    """The band for the anomaly head alone; the trained head stops what reaches its reject threshold.

    The other rule of sharing the budget: "review" is for parts that look unlike the good parts,
    "fail" for what the trained head is sure of. The anomaly head stops as many held-out good parts
    as the budget leaves after the trained head's false rejects.

    Args:
        scores: ``(N,)`` the trained head's decision scores of held-out good parts.
        anomaly: ``(N,)`` the anomaly head's scores of the same parts.
        reject: the trained head's reject threshold (kept; it becomes its review threshold too).
        review: the trained head's review threshold as calibrated alone (defines the budget).
    """
    s, a = _checked(scores, anomaly)
    budget = int((s >= review).sum())
    a_sorted = np.sort(a)
    best = SharedBand(reject, _level(a_sorted, 0), 0, int((s >= reject).sum()), budget)
    for k in range(budget + 1):
        t = _level(a_sorted, k)
        stopped = int(((s >= reject) | (a >= t)).sum())
        if stopped > budget:
            break
        best = SharedBand(review=reject, anomaly_reject=t, per_head=k, stopped=stopped, budget=budget)
    return best


def _checked(scores: np.ndarray, anomaly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    a = np.asarray(anomaly, np.float64).reshape(-1)
    if s.shape != a.shape or s.size == 0:
        raise ValueError(f"scores {s.shape} and anomaly scores {a.shape} must be the same non-empty shape")
    return s, a


BAND_RULES = ("shared", "anomaly")


def station_band(
    scores: np.ndarray, anomaly: np.ndarray, reject: float, review: float, rule: str = "shared"
) -> SharedBand:
    """The station's thresholds by ``rule``: ``shared`` (:func:`shared_band`) or ``anomaly``.

    Raises:
        ValueError: an unknown rule.
    """
    if rule not in BAND_RULES:
        raise ValueError(f"the band rule must be one of {', '.join(BAND_RULES)}, got {rule!r}")
    return (shared_band if rule == "shared" else anomaly_band)(scores, anomaly, reject, review)


def shared_band(scores: np.ndarray, anomaly: np.ndarray, reject: float, review: float) -> SharedBand:
    """Review thresholds of both heads that stop no more held-out good parts than ``review`` alone did.

    Args:
        scores: ``(N,)`` the trained head's decision scores of held-out good parts.
        anomaly: ``(N,)`` the anomaly head's scores of the same parts.
        reject: the trained head's reject threshold (kept).
        review: the trained head's review threshold as calibrated alone (defines the budget).

    Returns:
        The shared thresholds; ``review`` never rises above ``reject`` and never drops below the
        given one.
    """
    s, a = _checked(scores, anomaly)
    budget = int((s >= review).sum())
    fails = int((s >= reject).sum())
    s_sorted, a_sorted = np.sort(s), np.sort(a)
    best = SharedBand(
        review=reject, anomaly_reject=_level(a_sorted, 0), per_head=0, stopped=fails, budget=budget
    )
    for k in range(budget + 1):
        r = min(reject, max(review, _level(s_sorted, max(k, fails))))
        t = _level(a_sorted, k)
        stopped = int(((s >= r) | (a >= t)).sum())
        if stopped > budget:
            break
        best = SharedBand(review=r, anomaly_reject=t, per_head=k, stopped=stopped, budget=budget)
    return best
