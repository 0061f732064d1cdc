"""The validation report's operating point: the thresholds that decide, and the counts and rates there.

With thresholds given (calibrated on held-out good parts, or set by hand) every part is decided
by :func:`~flawscope.decide.verdict.decide_many` under them and the rates are counted. Without, the
point is the lowest threshold whose false-reject rate on the *test* good parts is at most the
summary's FRR target, and the rates are the summary's own (chosen on the test set: optimistic).
Without thresholds and with a test set that cannot choose a point (no good or no defective
parts: a classifier that sorts defect types) there is none: the report has no outcomes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flawscope.decide.calibration import clopper_pearson_interval, clopper_pearson_upper
from flawscope.decide.thresholds import Thresholds
from flawscope.decide.verdict import decide_many, outcomes
from flawscope.errors import InputError
from flawscope.evaluate.report_data import CONFIDENCE, ReportData, threshold_pair
from flawscope.types import Prediction, Verdict


def _decision_thresholds(data: ReportData) -> tuple[Thresholds, bool]:
    """The thresholds the report decides with, and whether they were given (not chosen on the test set)."""
    if not has_point(data):
        raise InputError(
            "thresholds",
            "none given, and the test set cannot choose an operating point (it needs good and defective "
            "images): pass the bundle's thresholds",
        )
    if isinstance(data.thresholds, Thresholds):
        return data.thresholds, True
    reject, review = threshold_pair(data.thresholds)
    if reject is not None and review is not None:
        return _bare_thresholds(reject, review), True
    chosen = data.summary.overall.threshold_at_frr
    assert chosen is not None  # has_point
    return _bare_thresholds(chosen, chosen), False


def _bare_thresholds(reject: float, review: float) -> Thresholds:
    """Score thresholds without rules, as the record ``decide_many`` takes."""
    return Thresholds.explicit(float(reject), float(review), note="report operating point")


def has_point(data: ReportData) -> bool:
    """Whether the report has an operating point (thresholds given, or the test set can choose one)."""
    reject, review = threshold_pair(data.thresholds)
    given = isinstance(data.thresholds, Thresholds) or (reject is not None and review is not None)
    return given or data.summary.overall.threshold_at_frr is not None


def decided(data: ReportData) -> tuple[Thresholds, bool, list[Verdict]]:
    """The report's thresholds and every part's verdict under them (:func:`decide_many`)."""
    thresholds, given = _decision_thresholds(data)
    prediction = data.prediction or Prediction(
        np.asarray(data.scores, dtype=np.float32), tuple(data.maps) if data.maps is not None else ()
    )
    return thresholds, given, decide_many(prediction, thresholds)


def point_content(data: ReportData) -> dict[str, Any]:
    """Thresholds, outcome counts and rates at the report's operating point (and each part's outcome).

    ``exists`` is False where there is no point (see the module docstring): no thresholds, no
    counts, no rates.
    """
    if not has_point(data):
        return _no_point(data)
    overall = data.summary.overall
    decision, calibrated, verdicts = decided(data)
    reject, review = decision.reject, decision.review
    labels = np.asarray(data.labels)
    found = outcomes(verdicts)
    counts = {
        truth: {o: int(((labels == value) & (found == o)).sum()) for o in ("pass", "review", "fail", "error")}
        for truth, value in (("good", 0), ("defect", 1))
    }
    n_good, n_defect = overall.n_good, overall.n_defect
    false_rejects, caught = counts["good"]["fail"], counts["defect"]["fail"]
    if calibrated:
        frr = false_rejects / n_good if n_good else None
        recall = caught / n_defect if n_defect else None
        precision = caught / (caught + false_rejects) if caught + false_rejects else None
    else:
        # The summary's own numbers: the thresholds were chosen by evaluate_scores.
        frr, recall, precision = overall.achieved_frr, overall.recall_at_frr, overall.precision_at_frr
    thresholds = data.thresholds if isinstance(data.thresholds, Thresholds) else None
    if not calibrated:
        source = f"chosen on the test set at {overall.frr_target:.2%} FRR (no thresholds given)"
    elif thresholds is not None and thresholds.version:
        source = f"thresholds version {thresholds.version} ({thresholds.method})"
    elif thresholds is not None:
        source = f"{thresholds.method} thresholds, not yet versioned"
    else:
        source = "thresholds given"
    return {
        "exists": True,
        "calibrated": calibrated,
        "source": source,
        "reject": reject,
        "review": review,
        "has_review_band": review < reject,
        # Parts go to review without a band too (a station rule: a low-confidence category, an
        # unknown-looking part, a defect too small): the outcome table shows them whenever any did.
        "shows_review": review < reject or any(counts[t]["review"] for t in counts),
        "shows_error": any(counts[t]["error"] for t in counts),
        "threshold_version": thresholds.version if thresholds else None,
        "method": thresholds.method if thresholds else None,
        "frr_target": None if calibrated else overall.frr_target,
        "counts": counts,
        "false_rejects": false_rejects,
        "frr": frr,
        "frr_upper_bound": float(clopper_pearson_upper(false_rejects, n_good, CONFIDENCE))
        if n_good
        else None,
        "frr_confidence": CONFIDENCE,
        "recall": recall,
        "recall_ci": list(clopper_pearson_interval(caught, n_defect, CONFIDENCE)) if n_defect else None,
        "precision": precision,
        "review_rate": (sum(counts["good"][o] + counts["defect"][o] for o in ("review", "error")))
        / len(labels),
        "rules": _rules(thresholds),
        "outcomes": [str(o) for o in found],
    }


def _no_point(data: ReportData) -> dict[str, Any]:
    """The operating point's content where there is none: every count zero, every rate undefined."""
    counts = {truth: dict.fromkeys(("pass", "review", "fail", "error"), 0) for truth in ("good", "defect")}
    return {
        "exists": False,
        "calibrated": False,
        "source": "none: no thresholds given, and the test set needs good and defective parts to choose one",
        "reject": None,
        "review": None,
        "has_review_band": False,
        "shows_review": False,
        "shows_error": False,
        "threshold_version": None,
        "method": None,
        "frr_target": None,
        "counts": counts,
        "false_rejects": 0,
        "frr": None,
        "frr_upper_bound": None,
        "frr_confidence": CONFIDENCE,
        "recall": None,
        "recall_ci": None,
        "precision": None,
        "review_rate": None,
        "rules": [],
        "outcomes": [],
    }


def _rules(thresholds: Thresholds | None) -> list[str]:
    """The station's rules beyond the two thresholds, which the report's outcomes apply."""
    if thresholds is None:
        return []
    rules = []
    if thresholds.min_area_px:
        rules.append(f"min_area_px={thresholds.min_area_px}")
    if thresholds.min_area_mm2 is not None:
        rules.append(f"min_area_mm2={thresholds.min_area_mm2}")
    if thresholds.max_regions is not None:
        rules.append(f"max_regions={thresholds.max_regions}")
    if thresholds.min_confidence is not None:
        rules.append(f"min_confidence={thresholds.min_confidence:g}")
    if thresholds.anomaly_reject is not None:
        rules.append(f"anomaly_reject={thresholds.anomaly_reject:.6g}")
    return rules
