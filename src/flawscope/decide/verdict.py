"""From an anomaly score (and map) to a verdict: pass, review, fail or error.

numpy and OpenCV only, for the torch-free runtime. A part is never passed when something is
wrong: a score or map that is not finite gives ``Outcome.ERROR``, which stops the part.
"""

from __future__ import annotations

import math

import numpy as np

from flawscope.decide.regions import find_regions
from flawscope.decide.thresholds import Thresholds
from flawscope.types import Outcome, Region, Verdict

# Regions kept in a verdict; the rules still see all of them. Bounds the size of an audit record.
MAX_REPORTED_REGIONS = 50


def error_verdict(reason: str, model_hash: str = "", threshold_version: int | None = None) -> Verdict:
    """A verdict for a part that could not be judged (stops the part).

    Args:
        reason: what went wrong, for the operator and the audit trail.
        model_hash: bundle weights hash, if known.
        threshold_version: version of the active thresholds, if known.
    """
    return Verdict(
        outcome=Outcome.ERROR,
        score=float("nan"),
        normalized_score=float("nan"),
        threshold_version=threshold_version,
        model_hash=model_hash,
        reason=reason,
    )


def _area_rule(regions: tuple[Region, ...], thresholds: Thresholds) -> tuple[bool, str]:
    """Whether some region is large enough to fail the part, and a sentence saying why (not)."""
    needed = [f"{thresholds.min_area_px} px"] if thresholds.min_area_px > 0 else []
    if thresholds.min_area_mm2 is not None:
        needed.append(f"{thresholds.min_area_mm2:g} mm²")
    for r in regions:
        if r.area_px >= thresholds.min_area_px and (
            thresholds.min_area_mm2 is None
            or (r.area_mm2 is not None and r.area_mm2 >= thresholds.min_area_mm2)
        ):
            return True, f"region of {r.area_px} px at {r.bbox} is at least the minimum defect area"
    largest = f"the largest region has {regions[0].area_px} px" if regions else "no region is above it"
    return False, f"{largest}, less than the minimum defect area ({' and '.join(needed)})"


def decide(
    score: float,
    anomaly_map: np.ndarray | None,
    thresholds: Thresholds,
    model_hash: str = "",
) -> Verdict:
    """Apply the thresholds and hard rules to one part.

    Rules, in order:

    1. A score or map value that is NaN/inf, or a map that is not 2-D: ``ERROR``.
    2. ``score >= reject``: ``FAIL``, except that with a minimum defect area (``min_area_px`` or
       ``min_area_mm2``) a fail needs a region at least that large, else ``REVIEW`` (also when no
       map is given to measure it); more regions than ``max_regions`` is always ``FAIL``.
    3. ``review <= score < reject``: ``REVIEW``.
    4. Otherwise ``PASS``.

    Regions are found on the map at the reject threshold; the map must be on the score's scale
    (the image score is the maximum of the map) and at the original image's resolution.

    Args:
        score: the image anomaly score.
        anomaly_map: ``(H, W)`` float anomaly map, or ``None``.
        thresholds: the active thresholds.
        model_hash: bundle weights hash, copied into the verdict.

    Returns:
        The verdict, with ``normalized_score = score / reject`` and regions largest first.
    """
    version = thresholds.version

    def error(reason: str) -> Verdict:
        return error_verdict(reason, model_hash, version)

    try:
        score = float(score)
    except (TypeError, ValueError):
        return error(f"score is not a number: {score!r}")
    if not math.isfinite(score):
        return error(f"score is {score}")
    regions: tuple[Region, ...] = ()
    if anomaly_map is not None:
        amap = np.asarray(anomaly_map)
        if amap.ndim != 2 or amap.size == 0 or not np.issubdtype(amap.dtype, np.number):
            return error(f"anomaly map must be a non-empty (H, W) numeric array, got shape {amap.shape}")
        if not np.isfinite(amap).all():
            return error(f"anomaly map has {int((~np.isfinite(amap)).sum())} NaN or infinite values")
        regions = find_regions(amap, thresholds.reject, mm_per_px=thresholds.mm_per_px, max_regions=None)

    def verdict(outcome: Outcome, reason: str) -> Verdict:
        return Verdict(
            outcome=outcome,
            score=score,
            normalized_score=score / thresholds.reject,
            regions=regions[:MAX_REPORTED_REGIONS],
            threshold_version=version,
            model_hash=model_hash,
            reason=reason,
        )

    reject = thresholds.reject
    if score >= reject:
        above = f"score {score:.6g} >= reject threshold {reject:.6g}"
        if thresholds.max_regions is not None and len(regions) > thresholds.max_regions:
            return verdict(
                Outcome.FAIL,
                f"{above}; {len(regions)} regions, more than the maximum {thresholds.max_regions}",
            )
        if thresholds.min_area_px > 0 or thresholds.min_area_mm2 is not None:
            if anomaly_map is None:
                return verdict(
                    Outcome.REVIEW, f"{above}, but there is no anomaly map to measure the defect area"
                )
            large_enough, why = _area_rule(regions, thresholds)
            return verdict(Outcome.FAIL if large_enough else Outcome.REVIEW, f"{above}; {why}")
        return verdict(Outcome.FAIL, above)
    if score >= thresholds.review:
        return verdict(
            Outcome.REVIEW, f"score {score:.6g} in the review band [{thresholds.review:.6g}, {reject:.6g})"
        )
    return verdict(Outcome.PASS, f"score {score:.6g} < {thresholds.review:.6g}")
