"""A station's two heads share one review budget on the held-out good parts."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.decide.calibration import calibrate
from flawscope.decide.station_band import shared_band


def _stopped(s: np.ndarray, a: np.ndarray, review: float, anomaly_reject: float) -> int:
    return int(((s >= review) | (a >= anomaly_reject)).sum())


def test_both_heads_stop_no_more_good_parts_than_the_trained_head_alone() -> None:
    rng = np.random.default_rng(0)
    s, a = rng.random(400), rng.normal(50, 3, 400)
    alone = calibrate(s, 0.01, review_rate=0.05).thresholds
    budget = int((s >= alone.review).sum())
    band = shared_band(s, a, alone.reject, alone.review)
    assert band.budget == budget
    assert band.stopped == _stopped(s, a, band.review, band.anomaly_reject) <= budget
    # Independent heads: each gets about half of the budget, and together they nearly fill it.
    assert budget // 3 <= band.per_head <= budget
    assert band.stopped >= budget - 2
    assert alone.review <= band.review <= alone.reject
    # An unknown defect that only the anomaly head sees is stopped; a calibrated-alone station
    # (anomaly head at the reject target) would have passed it.
    at_target = calibrate(a, 0.01).thresholds.reject
    unknown = float(np.quantile(a, 0.98))
    assert band.anomaly_reject <= unknown < at_target


def test_tied_scores_move_as_a_block_and_never_break_the_budget() -> None:
    rng = np.random.default_rng(1)
    s, a = rng.random(300), rng.random(300)
    s[:12] = 1.0  # saturated probabilities: nothing separates these 12
    alone = calibrate(s, 0.01, review_rate=0.05).thresholds
    band = shared_band(s, a, alone.reject, alone.review)
    assert band.stopped == _stopped(s, a, band.review, band.anomaly_reject) <= band.budget
    tied = int((s[:12] >= band.review).sum())
    assert tied in (0, 12)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same non-empty shape"):
        shared_band(np.zeros(3), np.zeros(4), 1.0, 0.5)
