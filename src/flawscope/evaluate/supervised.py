"""Metrics of trained (supervised) models: categories, calibration, segmentation and detection.

* categories: accuracy, the confusion matrix, per-class precision and recall;
* confidences: expected calibration error (ECE) of the top class probability;
* segmentation: Dice and IoU per class, pooled over all pixels of the images with masks;
* detection: average precision at IoU 0.5 per class (VOC all-point) and its mean (mAP@0.5);
  the precision, recall and F1 of the boxes kept at one confidence level (a station's regions).

Pure numpy; nothing here raises for a degenerate split: a metric that cannot be computed is
``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flawscope.data.outputs import resize_nearest

Box = tuple[float, float, float, float, str]


@dataclass(frozen=True)
class CategoryMetrics:
    """How well the predicted category matches the true one.

    Attributes:
        classes: the class names (rows and columns of ``confusion``).
        confusion: ``confusion[t][p]``: images of true class ``t`` predicted as ``p``.
        accuracy: share of images whose predicted class is the true one.
        precision: per class, share of the images predicted as it that are it.
        recall: per class, share of its images predicted as it.
        ece: expected calibration error of the top class probability (15 bins).
        n: number of images.
    """

    classes: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    accuracy: float | None
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    ece: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        data = asdict(self)
        data["confusion"] = [list(r) for r in self.confusion]
        return data


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = 15) -> float | None:
    """ECE of the top class: ``sum_b |acc_b - conf_b| * n_b / n`` over equal-width confidence bins.

    Args:
        probs: ``(N, K)`` class probabilities.
        truth: ``(N,)`` true class indices.
        bins: number of bins over [0, 1].
    """
    if len(truth) == 0:
        return None
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += abs(float(correct[inside].mean()) - float(conf[inside].mean())) * inside.sum()
    return float(total / len(truth))


def category_metrics(probs: np.ndarray, truth: Sequence[str], classes: Sequence[str]) -> CategoryMetrics:
    """Accuracy, confusion matrix, per-class precision/recall and ECE.

    Args:
        probs: ``(N, K)`` class probabilities, columns in ``classes`` order.
        truth: ``(N,)`` true class names (a name outside ``classes`` counts as wrong).
        classes: the ``K`` class names.
    """
    names = list(classes)
    index = {c: i for i, c in enumerate(names)}
    t = np.array([index.get(c, -1) for c in truth])
    p = np.asarray(probs).argmax(axis=1) if len(truth) else np.zeros(0, int)
    k = len(names)
    confusion = np.zeros((k, k), int)
    for a, b in zip(t, p, strict=True):
        if a >= 0:
            confusion[a, b] += 1
    precision = {
        c: float(confusion[i, i] / confusion[:, i].sum()) if confusion[:, i].sum() else None
        for i, c in enumerate(names)
    }
    recall = {
        c: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
        for i, c in enumerate(names)
    }
    known = t >= 0
    return CategoryMetrics(
        classes=tuple(names),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        accuracy=float((t == p).mean()) if len(t) else None,
        precision=precision,
        recall=recall,
        ece=expected_calibration_error(np.asarray(probs)[known], t[known]) if known.any() else None,
        n=len(t),
    )


@dataclass(frozen=True)
class OverlapMetrics:
    """Dice and IoU per class of predicted against true defect pixels (pooled over images).

    Attributes:
        dice: class -> ``2|P & T| / (|P| + |T|)``.
        iou: class -> ``|P & T| / |P | T|``.
        n_images: images with a mask that were counted.
    """

    dice: dict[str, float | None]
    iou: dict[str, float | None]
    n_images: int

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return asdict(self)


def overlap_metrics(
    defect_maps: Sequence[np.ndarray],
    class_maps: Sequence[np.ndarray] | None,
    masks: Sequence[np.ndarray | None],
    truth: Sequence[str],
    classes: Sequence[str],
    level: float = 0.5,
) -> OverlapMetrics:
    """Dice and IoU per defect class, and ``"all"`` (any defect against any defect).

    A pixel is predicted as class ``c`` when its defect probability reaches ``level`` and (with
    class maps) its class is ``c``; its true class is its image's class where the mask is set.
    Images without a mask (``None``) are left out.
    """
    names = [c for c in classes if c != "good"]
    inter = {c: 0 for c in [*names, "all"]}
    union = dict(inter)
    sizes = dict(inter)
    counted = 0
    for i, mask in enumerate(masks):
        if mask is None:
            continue
        counted += 1
        predicted = np.asarray(defect_maps[i]) >= level
        true = np.asarray(mask, dtype=bool)
        if predicted.shape != true.shape:
            predicted = resize_nearest(predicted, *true.shape).astype(bool)
        for c in [*names, "all"]:
            if c == "all":
                p_c, t_c = predicted, true
            else:
                if class_maps is not None:
                    cm = np.asarray(class_maps[i])
                    if cm.shape != true.shape:
                        cm = resize_nearest(cm, *true.shape)
                    p_c = predicted & (cm == list(classes).index(c))
                else:
                    p_c = predicted if truth[i] == c else np.zeros_like(predicted)
                t_c = true if truth[i] == c else np.zeros_like(true)
            inter[c] += int((p_c & t_c).sum())
            union[c] += int((p_c | t_c).sum())
            sizes[c] += int(p_c.sum() + t_c.sum())
    dice = {c: (2 * inter[c] / sizes[c]) if sizes[c] else None for c in inter}
    iou = {c: (inter[c] / union[c]) if union[c] else None for c in inter}
    return OverlapMetrics(dice, iou, counted)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``(x0, y0, x1, y1)`` boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def average_precision(
    predicted: Sequence[Sequence[tuple[float, float, float, float, float, str]]],
    truth: Sequence[Sequence[Box]],
    cls: str,
    iou: float = 0.5,
) -> float | None:
    """VOC all-point average precision of one class at an IoU threshold.

    Args:
        predicted: per image ``(x0, y0, x1, y1, confidence, class)`` boxes.
        truth: per image ``(x0, y0, x1, y1, class)`` boxes.
        cls: the class.
        iou: the IoU a detection needs with an unmatched true box to count.

    Returns:
        The AP, or ``None`` when the class has no true box.
    """
    gts = [
        np.array([b[:4] for b in boxes if b[4] == cls], dtype=np.float64).reshape(-1, 4) for boxes in truth
    ]
    n_true = sum(len(g) for g in gts)
    if n_true == 0:
        return None
    found = [
        (p[4], i, np.array(p[:4], dtype=np.float64))
        for i, boxes in enumerate(predicted)
        for p in boxes
        if p[5] == cls
    ]
    found.sort(key=lambda d: -d[0])
    used = [np.zeros(len(g), bool) for g in gts]
    tp = np.zeros(len(found))
    for k, (_, i, box) in enumerate(found):
        overlaps = box_iou(box[None], gts[i])[0] if len(gts[i]) else np.zeros(0)
        if overlaps.size:
            j = int(overlaps.argmax())
            if overlaps[j] >= iou and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
    if not len(found):
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_true
    precision = cum_tp / np.arange(1, len(found) + 1)
    # All-point interpolation: precision made monotone from the right, integrated over recall.
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def detection_map(
    predicted: Sequence[Sequence[tuple[float, float, float, float, float, str]]],
    truth: Sequence[Sequence[Box]],
    classes: Sequence[str],
    iou: float = 0.5,
) -> dict[str, Any]:
    """AP per class and their mean (mAP) at an IoU threshold."""
    per_class = {c: average_precision(predicted, truth, c, iou) for c in classes if c != "good"}
    values = [v for v in per_class.values() if v is not None]
    return {"iou": iou, "ap": per_class, "map": float(np.mean(values)) if values else None}


def region_f1(
    predicted: Sequence[Sequence[tuple[float, float, float, float, float, str]]],
    truth: Sequence[Sequence[Box]],
    level: float = 0.0,
    iou: float = 0.5,
) -> dict[str, float]:
    """Precision, recall and F1 of the boxes at or above a confidence ``level`` (a station's regions).

    Unlike the AP, which ranks every detection, this judges what a verdict keeps: the boxes whose
    confidence reaches the level. Per image, the kept boxes, most confident first, each take the
    unmatched true box of their class they overlap most; a match needs IoU >= ``iou``.

    Args:
        predicted: per image ``(x0, y0, x1, y1, confidence, class)`` boxes.
        truth: per image ``(x0, y0, x1, y1, class)`` boxes.
        level: the confidence a box needs to be kept.
        iou: the IoU a kept box needs with a true box of its class.

    Returns:
        ``kept``, ``true_boxes``, ``hits``, ``precision``, ``recall`` and ``f1`` (0 where undefined).
    """
    hits = kept = n_true = 0
    for boxes, true in zip(predicted, truth, strict=True):
        free = list(true)
        n_true += len(true)
        for box in sorted((b for b in boxes if b[4] >= level), key=lambda b: -b[4]):
            kept += 1
            same = [j for j, t in enumerate(free) if t[4] == box[5]]
            if not same:
                continue
            candidates = np.array([free[j][:4] for j in same], np.float64)
            overlaps = box_iou(np.array([box[:4]], np.float64), candidates)[0]
            best = int(overlaps.argmax())
            if overlaps[best] >= iou:
                hits += 1
                free.pop(same[best])
    precision = hits / kept if kept else 0.0
    recall = hits / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"kept": kept, "true_boxes": n_true, "hits": hits,
            "precision": precision, "recall": recall, "f1": f1}  # fmt: skip
