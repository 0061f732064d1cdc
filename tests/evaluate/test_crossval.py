"""The validation criterion cross-validation reports per fold (configurations are chosen by it)."""

from __future__ import annotations

import numpy as np

from flawscope.evaluate.crossval import validation_metrics


def test_validation_metrics_rank_by_the_low_false_reject_end():
    y = np.array([0] * 40 + [1] * 10)
    rng = np.random.default_rng(0)
    perfect = y + 0.1 * rng.random(50)
    got = validation_metrics(perfect, y)
    assert got["validation_pauroc"] == 1.0 and got["validation_recall_above_good"] == 1.0
    # One good part above every defect: the full AUROC barely moves, the low-FRR end does.
    spoiled = perfect.copy()
    spoiled[0] = 5.0
    worse = validation_metrics(spoiled, y)
    assert worse["validation_recall_above_good"] == 0.0
    assert worse["validation_pauroc"] < 0.98
    half = perfect.copy()
    half[45:] = -1.0  # half the defects below every good part
    assert validation_metrics(half, y)["validation_recall_above_good"] == 0.5


def test_validation_of_one_class_has_no_criterion():
    got = validation_metrics(np.arange(5.0), np.zeros(5))
    assert got == {"validation_pauroc": None, "validation_recall_above_good": None}
