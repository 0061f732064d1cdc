"""From a model's outputs to verdicts: pass, review, fail or error. The one place this is decided.

:func:`decide_many` is the only implementation of the decision rules. The runtime, evaluation,
the validation report and its gallery, calibration and the INT8 export all call it, so the same
part gets the same outcome everywhere, region rules included.

numpy and OpenCV only, for the torch-free runtime. A part is never passed when something is
wrong: a score, map or probability that is not finite gives ``Outcome.ERROR``, which stops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flawscope.decide.regions import find_regions, regions_from_boxes
from flawscope.decide.thresholds import Thresholds
from flawscope.declaration import GOOD
from flawscope.types import Outcome, Prediction, Region, Verdict

# Regions kept in a verdict; the rules still see all of them. Bounds the size of an audit record.
MAX_REPORTED_REGIONS = 50
# Where regions are cut from a defect-probability map unless the thresholds say otherwise.
DEFAULT_REGION_LEVEL = 0.5
# The confidence a detected box needs to be a region unless the thresholds' ``region_level``
# says otherwise: CenterNet's usual display threshold (its confidences are centre-heatmap
# peaks, lower than a segmenter's pixel probabilities for the same defect).
DEFAULT_BOX_LEVEL = 0.3


def tell_apart(a: float, b: float, digits: int = 6) -> tuple[str, str]:
    """Two numbers written with the fewest significant digits (at least ``digits``) that differ.

    ``64.80351`` and ``64.80349`` become ``"64.80351"`` and ``"64.80349"``, not ``64.8035``
    twice: a reason must show why a score fell on its side of a threshold.
    """
    for k in range(digits, 18):
        left, right = f"{a:.{k}g}", f"{b:.{k}g}"
        if left != right or a == b:
            return left, right
    return repr(a), repr(b)


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


def _map_problem(amap: object) -> str | None:
    values = np.asarray(amap)
    if values.ndim != 2 or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return f"map must be a non-empty (H, W) numeric array, got shape {values.shape}"
    if not np.isfinite(values).all():
        return f"map has {int((~np.isfinite(values)).sum())} NaN or infinite values"
    return None


def _with_categories(
    regions: tuple[Region, ...], amap: np.ndarray, level: float, class_map: np.ndarray, classes: Sequence[str]
) -> tuple[Region, ...]:
    """Each region's most frequent pixel class (inside its box, above the level)."""
    from dataclasses import replace

    named = []
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        inside = class_map[y0:y1, x0:x1][amap[y0:y1, x0:x1] >= level]
        inside = inside[(inside > 0) & (inside < len(classes))]
        category = classes[int(np.bincount(inside).argmax())] if inside.size else None
        named.append(replace(r, category=category))
    return tuple(named)


class _Categories:
    """Per-part category and its confidence from class probabilities (vectorised)."""

    def __init__(self, prediction: Prediction):
        probs = prediction.class_probs
        self.present = probs is not None and len(prediction.classes) > 0
        self.good: np.ndarray | None = None
        if not self.present:
            return
        classes = list(prediction.classes)
        p = np.asarray(probs, dtype=np.float64)
        self.finite: np.ndarray = np.asarray(np.isfinite(p).all(axis=1))
        p = np.nan_to_num(p)
        defect_cols = [i for i, c in enumerate(classes) if c != GOOD]
        if GOOD in classes:
            self.good = p[:, classes.index(GOOD)]
        if defect_cols:
            d = p[:, defect_cols]
            best = d.argmax(axis=1)
            mass = d.sum(axis=1)
            self.defect = [classes[defect_cols[b]] for b in best]
            self.defect_conf = d[np.arange(len(d)), best] / np.maximum(mass, 1e-12)
        else:
            self.defect = [None] * len(p)
            self.defect_conf = np.full(len(p), np.nan)


def decide_many(
    prediction: Prediction,
    thresholds: Thresholds,
    model_hash: str = "",
    *,
    regions: bool = True,
) -> list[Verdict]:
    """Apply the thresholds and hard rules to every part of a prediction.

    Rules, in order, for each part:

    1. A decision score, anomaly score, class probability or map value that is NaN or infinite,
       or a map that is not 2-D: ``ERROR``.
    2. ``score >= reject``: ``FAIL``, except that more regions than ``max_regions`` always fail,
       a minimum defect area (``min_area_px``/``min_area_mm2``) needs a region at least that
       large (else ``REVIEW``, also when there is no map to measure it), and a defect category
       less probable than ``min_confidence`` goes to ``REVIEW``.
    3. ``review <= score < reject``: ``REVIEW``.
    4. ``anomaly_reject`` set and the part's anomaly score at or above it: ``REVIEW`` (the part
       looks unlike the good parts although no defect class is confident).
    5. Otherwise ``PASS``.

    Regions are cut from ``prediction.maps`` at the reject threshold when the maps are on the
    score's scale, at ``region_level`` (default 0.5) when they hold probabilities; only for
    parts that do not pass (a passing part's score-scale map has nothing at the threshold).
    A model without maps but with detected boxes (``prediction.boxes``) has one region per box
    whose confidence reaches ``region_level`` (else the level the model learnt on its validation
    images, ``prediction.box_level``, else :data:`DEFAULT_BOX_LEVEL`), with the
    box's class as its category and its confidence as its peak; the region rules (area,
    count) apply to them alike.

    Args:
        prediction: finished model outputs of N parts (scores, maps at image resolution, ...).
        thresholds: the active thresholds.
        model_hash: bundle weights hash, copied into each verdict.
        regions: find regions (``False`` skips them where no rule needs them: counting only).

    Returns:
        N verdicts in input order, each with ``normalized_score = score / reject``.
    """
    scores = np.asarray(prediction.scores, dtype=np.float64).reshape(-1)
    n = scores.size
    maps = prediction.maps
    for name, items in (
        ("maps", maps),
        ("anomaly_maps", prediction.anomaly_maps),
        ("class_maps", prediction.class_maps),
    ):
        if items and len(items) != n:
            raise ValueError(f"prediction has {n} scores but {len(items)} {name}")
    anomaly = None if prediction.anomaly_scores is None else np.asarray(prediction.anomaly_scores, np.float64)
    cats = _Categories(prediction)
    reject, review = thresholds.reject, thresholds.review
    with np.errstate(invalid="ignore"):
        fails = scores >= reject
        bands = (scores >= review) & ~fails
    area_rule = thresholds.min_area_px > 0 or thresholds.min_area_mm2 is not None
    level = reject if prediction.map_scale == "score" else (thresholds.region_level or DEFAULT_REGION_LEVEL)
    version = thresholds.version
    boxes = prediction.boxes
    if boxes and len(boxes) != n:
        raise ValueError(f"prediction has {n} scores but {len(boxes)} sets of boxes")
    box_level = next(
        v for v in (thresholds.region_level, prediction.box_level, DEFAULT_BOX_LEVEL) if v is not None
    )

    verdicts = []
    for i in range(n):
        score = float(scores[i])
        problem = None
        if not np.isfinite(score):
            problem = f"score is {score}"
        elif anomaly is not None and not np.isfinite(anomaly[i]):
            problem = f"anomaly score is {anomaly[i]}"
        elif cats.present and not cats.finite[i]:
            problem = "class probabilities are NaN or infinite"
        elif maps:
            found = _map_problem(maps[i])
            problem = (
                None if found is None else f"anomaly {found}" if prediction.map_scale == "score" else found
            )
        elif boxes and not all(np.isfinite(b[:5]).all() for b in boxes[i]):
            problem = "a detected box has NaN or infinite coordinates or confidence"
        if problem is not None:
            verdicts.append(error_verdict(problem, model_hash, version))
            continue
        amap = np.asarray(maps[i]) if maps else None
        part_regions: tuple[Region, ...] = ()
        needs_regions = fails[i] and (area_rule or thresholds.max_regions is not None)
        if amap is not None and (fails[i] or bands[i]) and (regions or needs_regions):
            part_regions = find_regions(amap, level, mm_per_px=thresholds.mm_per_px, max_regions=None)
            if prediction.class_maps and part_regions:
                part_regions = _with_categories(
                    part_regions, amap, level, np.asarray(prediction.class_maps[i]), prediction.classes
                )
        elif amap is None and boxes and (fails[i] or bands[i]) and (regions or needs_regions):
            part_regions = regions_from_boxes(boxes[i], box_level, thresholds.mm_per_px)
        category: str | None = None
        confidence: float | None = None
        if cats.present:
            if fails[i] or bands[i] or cats.good is None:
                category, confidence = cats.defect[i], float(cats.defect_conf[i])
            else:
                category, confidence = GOOD, float(cats.good[i])
        elif part_regions and part_regions[0].category is not None:
            category = part_regions[0].category
        measured = amap is not None or bool(boxes)
        outcome, reason = _rule(
            i, score, fails[i], bands[i], part_regions, measured, category, confidence, anomaly, thresholds
        )
        if (
            outcome is Outcome.REVIEW
            and not part_regions
            and anomaly is not None
            and prediction.anomaly_maps
            and regions
        ):
            anomaly_level = thresholds.anomaly_reject
            if anomaly_level is not None and float(anomaly[i]) >= anomaly_level:
                part_regions = find_regions(
                    np.asarray(prediction.anomaly_maps[i]),
                    anomaly_level,
                    mm_per_px=thresholds.mm_per_px,
                    max_regions=None,
                )
        if (
            outcome is not Outcome.PASS
            and not part_regions
            and amap is not None
            and prediction.map_scale == "probability"
            and regions
        ):
            part_regions, hint = _where_to_look(amap, level, thresholds.mm_per_px)
            reason += hint
        if outcome is Outcome.REVIEW and category == GOOD and cats.present and cats.defect[i] is not None:
            # The part is stopped, not passed: the reviewer gets the likeliest defect, as for a fail.
            category, confidence = cats.defect[i], float(cats.defect_conf[i])
        verdicts.append(
            Verdict(
                outcome=outcome,
                score=score,
                normalized_score=score / reject,
                regions=part_regions[:MAX_REPORTED_REGIONS],
                category=category,
                threshold_version=version,
                model_hash=model_hash,
                reason=reason,
                confidence=confidence,
                anomaly_score=None if anomaly is None else float(anomaly[i]),
            )
        )
    return verdicts


def _where_to_look(amap: np.ndarray, level: float, mm_per_px: float | None) -> tuple[tuple[Region, ...], str]:
    """Regions at half the peak of a defect-probability map that has no pixel at ``level``.

    A part stopped by its image score (the classifier's) whose map stays below the region level
    would otherwise reach the operator without a location.
    """
    peak = float(amap.max())
    if not peak > 0.0:
        return (), ""
    found = find_regions(amap, peak / 2.0, mm_per_px=mm_per_px, max_regions=None)
    return found, (
        f"; no pixel reaches the region level {level:g}: the regions shown are where the defect map is "
        f"at least half its peak {peak:.3g}"
    )


def _rule(
    i: int,
    score: float,
    fail: bool,
    band: bool,
    regions: tuple[Region, ...],
    measured: bool,
    category: str | None,
    confidence: float | None,
    anomaly: np.ndarray | None,
    thresholds: Thresholds,
) -> tuple[Outcome, str]:
    """The outcome of one part whose outputs are all finite, and the sentence saying why.

    ``measured``: the part has a map or detected boxes, whose regions measure a defect's area.
    """
    reject, review = thresholds.reject, thresholds.review
    if fail:
        s, r = tell_apart(score, reject)
        above = f"score {s} >= reject threshold {r}"
        if thresholds.max_regions is not None and len(regions) > thresholds.max_regions:
            return (
                Outcome.FAIL,
                f"{above}; {len(regions)} regions, more than the maximum {thresholds.max_regions}",
            )
        if thresholds.min_area_px > 0 or thresholds.min_area_mm2 is not None:
            if not measured:
                return Outcome.REVIEW, f"{above}, but there is no map or box to measure the defect area"
            large_enough, why = _area_rule(regions, thresholds)
            if not large_enough:
                return Outcome.REVIEW, f"{above}; {why}"
            above = f"{above}; {why}"
        if category is not None and confidence is not None:
            floor = thresholds.min_confidence
            if floor is not None and confidence < floor:
                c, f = tell_apart(confidence, floor, 3)
                return Outcome.REVIEW, f"{above}, but category {category!r} has confidence {c} < {f}"
            above = f"{above}; category {category!r} (confidence {confidence:.3f})"
        return Outcome.FAIL, above
    if band:
        s, v = tell_apart(score, review)
        _, r = tell_apart(score, reject)
        return Outcome.REVIEW, f"score {s} in the review band [review threshold {v}, reject threshold {r})"
    name, limit = ("review threshold", review) if thresholds.has_review_band else ("reject threshold", reject)
    s, t = tell_apart(score, limit)
    below = f"score {s} < {name} {t}"
    if (
        anomaly is not None
        and thresholds.anomaly_reject is not None
        and anomaly[i] >= thresholds.anomaly_reject
    ):
        a, at = tell_apart(float(anomaly[i]), thresholds.anomaly_reject)
        return Outcome.REVIEW, (
            f"{below}, but anomaly score {a} >= anomaly threshold {at}: the part looks unlike the good "
            "parts and no defect class is confident"
        )
    return Outcome.PASS, below


def decide(
    score: float,
    anomaly_map: np.ndarray | None,
    thresholds: Thresholds,
    model_hash: str = "",
) -> Verdict:
    """One part's verdict from its score and map: :func:`decide_many` on a batch of one.

    Args:
        score: the image score.
        anomaly_map: ``(H, W)`` map on the score's scale at the image's resolution, or ``None``.
        thresholds: the active thresholds.
        model_hash: bundle weights hash, copied into the verdict.
    """
    try:
        value = float(score)
    except (TypeError, ValueError):
        return error_verdict(f"score is not a number: {score!r}", model_hash, thresholds.version)
    maps = () if anomaly_map is None else (np.asarray(anomaly_map),)
    return decide_many(Prediction(np.array([value]), maps), thresholds, model_hash)[0]


def outcomes(verdicts: Sequence[Verdict]) -> np.ndarray:
    """``(N,)`` array of outcome strings (``"pass"``, ``"review"``, ...) of verdicts, for counting."""
    return np.array([str(v.outcome) for v in verdicts], dtype=object)
