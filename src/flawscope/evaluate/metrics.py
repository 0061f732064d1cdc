"""Image- and pixel-level metrics of an anomaly detector, overall and per defect type.

Image metrics: AUROC, best F1 over thresholds, and the recall when at most ``frr`` of the good
parts are falsely rejected (the operating point a line cares about). Pixel metrics (pixel AUROC,
AU-PRO up to FPR 0.3) are computed in :mod:`flawscope.evaluate.pixel`.

A metric that cannot be computed (no defective images, no good images, no masks) is ``None``
and ``Metrics.notes`` says why; nothing here raises for a degenerate split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from flawscope.errors import InputError
from flawscope.evaluate.pixel import EXACT_LIMIT, PixelResult, pixel_metrics

GOOD = "good"


@dataclass(frozen=True)
class Metrics:
    """Metrics of one set of images (all of them, or the goods plus one defect type).

    Attributes:
        image_auroc: area under the image-level ROC curve.
        pixel_auroc: area under the pixel-level ROC curve (``None`` without maps and masks).
        au_pro: area under the per-region-overlap curve up to FPR 0.3, divided by 0.3.
        best_f1: highest image-level F1 over all thresholds.
        best_f1_threshold: the score threshold (``score >= threshold`` is a defect) reaching it.
        recall_at_frr: share of defective images rejected at ``threshold_at_frr``.
        frr_target: the false-reject rate asked for.
        threshold_at_frr: smallest observed score whose false-reject rate on the goods is at most
            ``frr_target`` (just above the highest good score when no observed score qualifies).
        achieved_frr: share of good images with ``score >= threshold_at_frr``.
        precision_at_frr: share of defective images among those rejected at that threshold.
        n_good: number of good images.
        n_defect: number of defective images.
        n_regions: number of connected defect regions in the masks.
        pixel_auroc_error_bound: largest possible difference of ``pixel_auroc`` to the exact
            value, from pixels that share a score bin (0 when exact).
        notes: why a metric is ``None``.
    """

    image_auroc: float | None
    pixel_auroc: float | None
    au_pro: float | None
    best_f1: float | None
    best_f1_threshold: float | None
    recall_at_frr: float | None
    frr_target: float
    threshold_at_frr: float | None
    achieved_frr: float | None
    precision_at_frr: float | None
    n_good: int
    n_defect: int
    n_regions: int = 0
    pixel_auroc_error_bound: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (NaN becomes ``None``, tuples become lists)."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


@dataclass(frozen=True)
class EvaluationSummary:
    """Metrics over all images and per defect type.

    Attributes:
        overall: metrics over every image.
        per_type: defect type -> metrics over the good images plus that type's images.
        pixel_method: how pixel thresholds were chosen (exact or binned), ``None`` without maps.
    """

    overall: Metrics
    per_type: Mapping[str, Metrics] = field(default_factory=dict)
    pixel_method: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "overall": self.overall.to_dict(),
            "per_type": {name: m.to_dict() for name, m in self.per_type.items()},
            "pixel_method": self.pixel_method,
        }


def _validate(
    scores: object, labels: object, defect_types: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    types = [str(t) for t in defect_types]
    if not (s.size == y.size == len(types)):
        raise InputError("labels", f"got {s.size} scores, {y.size} labels and {len(types)} defect types")
    if s.size == 0:
        raise InputError("scores", "no images to evaluate")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise InputError(f"scores[{bad[0]}]", f"is {s[bad[0]]}; {bad.size} scores are not finite")
    if not np.isin(y, (0, 1)).all():
        raise InputError("labels", f"must be 0 (good) or 1 (defect), got values {sorted(set(y.tolist()))}")
    y = y.astype(np.int64)
    for i, (label, dtype) in enumerate(zip(y, types, strict=True)):
        if (label == 0) != (dtype == GOOD):
            raise InputError(
                f"defect_types[{i}]", f"type {dtype!r} does not match label {label} ('good' iff label 0)"
            )
    return s, y, types


def _recall_at_frr(
    scores: np.ndarray, labels: np.ndarray, frr: float
) -> tuple[float, float, float, float | None]:
    """Threshold, recall, achieved FRR and precision at the lowest threshold with FRR <= ``frr``."""
    goods = np.sort(scores[labels == 0])
    defects = scores[labels == 1]
    allowed = math.floor(frr * goods.size + 1e-9)  # goods that may score >= threshold
    candidates = np.unique(scores)
    n_rejected = goods.size - np.searchsorted(goods, candidates, side="left")
    ok = np.flatnonzero(n_rejected <= allowed)
    # n_rejected falls as the threshold rises, so the first candidate that qualifies is the lowest.
    threshold = float(candidates[ok[0]]) if ok.size else float(np.nextafter(goods[-1], np.inf))
    fp = int((goods >= threshold).sum())
    tp = int((defects >= threshold).sum())
    precision = tp / (tp + fp) if tp + fp else None
    return threshold, tp / defects.size, fp / goods.size, precision


@dataclass(frozen=True)
class _ImageMetrics:
    image_auroc: float | None = None
    best_f1: float | None = None
    best_f1_threshold: float | None = None
    recall_at_frr: float | None = None
    threshold_at_frr: float | None = None
    achieved_frr: float | None = None
    precision_at_frr: float | None = None


def _image_metrics(scores: np.ndarray, labels: np.ndarray, frr: float) -> tuple[_ImageMetrics, list[str]]:
    n_good, n_defect = int((labels == 0).sum()), int((labels == 1).sum())
    if n_defect == 0:
        return _ImageMetrics(), ["no defective images: AUROC, F1 and recall are undefined"]
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last point (precision 1, recall 0) has no threshold.
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    best = int(np.argmax(f1))
    if n_good == 0:
        note = "no good images: AUROC and the false-reject rate are undefined"
        return _ImageMetrics(best_f1=float(f1[best]), best_f1_threshold=float(thresholds[best])), [note]
    threshold, rec, achieved, prec = _recall_at_frr(scores, labels, frr)
    return _ImageMetrics(
        image_auroc=float(roc_auc_score(labels, scores)),
        best_f1=float(f1[best]),
        best_f1_threshold=float(thresholds[best]),
        recall_at_frr=rec,
        threshold_at_frr=threshold,
        achieved_frr=achieved,
        precision_at_frr=prec,
    ), []


def _metrics(
    scores: np.ndarray, labels: np.ndarray, frr: float, pixel: PixelResult | None, pixel_note: str
) -> Metrics:
    image, notes = _image_metrics(scores, labels, frr)
    if pixel is None:
        notes.append(pixel_note)
    elif pixel.note:
        notes.append(f"pixel metrics: {pixel.note}")
    return Metrics(
        image_auroc=image.image_auroc,
        pixel_auroc=pixel.auroc if pixel else None,
        au_pro=pixel.au_pro if pixel else None,
        best_f1=image.best_f1,
        best_f1_threshold=image.best_f1_threshold,
        recall_at_frr=image.recall_at_frr,
        frr_target=frr,
        threshold_at_frr=image.threshold_at_frr,
        achieved_frr=image.achieved_frr,
        precision_at_frr=image.precision_at_frr,
        n_good=int((labels == 0).sum()),
        n_defect=int((labels == 1).sum()),
        n_regions=pixel.n_regions if pixel else 0,
        pixel_auroc_error_bound=pixel.auroc_error_bound if pixel and pixel.auroc is not None else None,
        notes=tuple(notes),
    )


def evaluate_scores(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    defect_types: Sequence[str],
    maps: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    frr: float = 0.01,
    exact_pixel_limit: int = EXACT_LIMIT,
) -> EvaluationSummary:
    """Evaluate image scores (and anomaly maps) against ground truth.

    Args:
        scores: ``(N,)`` image anomaly scores, higher is more anomalous.
        labels: ``(N,)`` 0 for a good image, 1 for a defective one.
        defect_types: N defect type names, ``"good"`` exactly for the good images.
        maps: N anomaly maps ``(H_i, W_i)`` float (sizes may differ), or ``None``.
        masks: N ground-truth masks ``(H_i, W_i)`` bool, or ``None``. A good image's mask must be
            empty (``None`` or all-False). A defective image with an empty mask adds no defect
            pixels and no regions; its pixels count as defect-free, as its mask says.
        frr: false-reject rate on the goods for ``recall_at_frr``, in (0, 1).
        exact_pixel_limit: pixel metrics use every distinct score as a threshold up to this many
            pixels in total, and fine bins above it (see :mod:`flawscope.evaluate.pixel`).

    Returns:
        Overall metrics and metrics per defect type (that type's images plus all good images).

    Raises:
        InputError: for mismatched lengths, non-finite scores or maps, labels other than 0/1, a
            type that does not match its label, masks of the wrong shape, or a good image whose
            mask marks defect pixels.
    """
    s, y, types = _validate(scores, labels, defect_types)
    if not 0.0 < frr < 1.0:
        raise InputError("frr", f"must be in (0, 1), got {frr}")
    kinds = sorted({t for t in types if t != GOOD})
    sets: dict[str, list[str]] = {"__all__": [GOOD, *kinds]}
    sets.update({kind: [GOOD, kind] for kind in kinds})

    pixel: dict[str, PixelResult] = {}
    method: str | None = None
    pixel_note = ""
    if maps is None or masks is None:
        pixel_note = (
            "no anomaly maps: pixel metrics are undefined"
            if maps is None
            else "no ground-truth masks for the defective images: pixel metrics are undefined"
        )
    else:
        if len(maps) != s.size or len(masks) != s.size:
            raise InputError("maps", f"got {len(maps)} maps and {len(masks)} masks for {s.size} scores")
        for i, mask in enumerate(masks):
            if y[i] == 0 and mask is not None and np.asarray(mask).any():
                raise InputError(f"masks[{i}]", "is the mask of a good image but marks defect pixels")
        pixel, method = pixel_metrics(maps, masks, types, sets, exact_limit=exact_pixel_limit)

    overall = _metrics(s, y, frr, pixel.get("__all__"), pixel_note)
    per_type = {}
    for kind in kinds:
        keep = np.array([t in (GOOD, kind) for t in types])
        per_type[kind] = _metrics(s[keep], y[keep], frr, pixel.get(kind), pixel_note)
    return EvaluationSummary(overall=overall, per_type=per_type, pixel_method=method)
