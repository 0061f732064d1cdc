"""Pixel-level metrics: pixel AUROC and AU-PRO (per-region overlap, as in MVTec AD).

Both metrics come from the same three histograms over a common axis of score levels:

* ``neg``: number of defect-free pixels (outside every mask) at each level;
* ``pos``: number of defect pixels at each level;
* ``pro``: sum of ``1 / area`` of the defect pixels' region at each level, so that a reverse
  cumulative sum divided by the number of regions is the mean per-region overlap (PRO).

Score levels are either *exact* (every distinct value: all pixels are sorted once, used up to
``exact_limit`` pixels) or *binned*, streaming over the maps (a min/max pass, then a histogram
pass) so that memory does not grow with the number of pixels: float32 values are grouped by the
high bits of their IEEE-754 bit pattern, which orders them like the values and gives bins of
constant *relative* width (``2**-m`` with ``m`` mantissa bits kept), so a heavy tail of large
scores cannot squash the bulk of the pixels into a few bins as linear bins would. The curves are
exact at every bin boundary; for AUROC the error from pairs sharing a bin is bounded and reported.

AU-PRO follows the MVTec AD evaluation: regions are the 8-connected components of each mask,
false positives are counted over all pixels outside the masks (good images included), and the
PRO curve is integrated up to a false-positive rate of 0.3 and divided by 0.3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from flawscope.errors import InputError

FPR_LIMIT = 0.3
EXACT_LIMIT = 1 << 21
MAX_BINS = 1 << 18
_NO_WEIGHTS = np.zeros(0)


@dataclass(frozen=True)
class PixelResult:
    """Pixel metrics of one set of images.

    Attributes:
        auroc: pixel AUROC, ``None`` when undefined (see ``note``).
        au_pro: area under the PRO curve up to FPR 0.3, divided by 0.3; ``None`` when undefined.
        n_regions: number of connected defect regions.
        n_defect_pixels: number of pixels inside the masks.
        auroc_error_bound: largest possible difference to the exact AUROC (0 when exact).
        note: why a metric is ``None``; empty otherwise.
    """

    auroc: float | None
    au_pro: float | None
    n_regions: int
    n_defect_pixels: int
    auroc_error_bound: float
    note: str = ""


@dataclass(frozen=True)
class _Image:
    """One image's pixels split into defect-free and defect pixels, with region weights."""

    values: np.ndarray  # (H, W) float map
    mask: np.ndarray | None  # (H, W) bool, None when empty
    weights: np.ndarray  # (n_defect_pixels,) 1 / area of each defect pixel's region
    n_regions: int


def _prepare(index: int, amap: object, mask: object) -> _Image:
    values = np.asarray(amap)
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"maps[{index}]", f"expected a non-empty (H, W) array, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(f"maps[{index}]", "contains NaN or infinite values")
    if mask is None:
        return _Image(values, None, _NO_WEIGHTS, 0)
    m = np.asarray(mask)
    if m.shape != values.shape:
        raise InputError(f"masks[{index}]", f"shape {m.shape} differs from its map's shape {values.shape}")
    m = m.astype(bool, copy=False)
    if not m.any():
        return _Image(values, None, _NO_WEIGHTS, 0)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    weights = 1.0 / areas[labels[m]]
    return _Image(values, m, weights, int(n_labels) - 1)


def _order_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys in the same order as the float32 values (``(H, W)`` -> ``(H*W,)`` int64)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.int32)
    # A non-negative float's bit pattern grows with its value; a negative one has the sign bit set
    # and its magnitude bits grow as the value falls, hence the negation.
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits).astype(np.int64)


def _key_of(value: float) -> int:
    return int(_order_keys(np.array([[value]], dtype=np.float32))[0])


def _curve_metrics(neg: np.ndarray, pos: np.ndarray, pro: np.ndarray, n_regions: int) -> PixelResult:
    """AUROC and AU-PRO from histograms over score levels in ascending order (each ``(L,)``)."""
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    if n_neg == 0:
        return PixelResult(None, None, n_regions, int(n_pos), 0.0, "no defect-free pixels")
    if n_pos == 0:
        return PixelResult(None, None, 0, 0, 0.0, "no defect pixels in the masks")
    keep = (neg > 0) | (pos > 0)
    neg, pos, pro = neg[keep], pos[keep], pro[keep]
    # Thresholds from the highest level down: a pixel is flagged when its level is >= the threshold.
    fpr = np.concatenate(([0.0], np.cumsum(neg[::-1]) / n_neg))
    tpr = np.concatenate(([0.0], np.cumsum(pos[::-1]) / n_pos))
    overlap = np.concatenate(([0.0], np.cumsum(pro[::-1]) / n_regions))
    fpr[-1], tpr[-1] = 1.0, 1.0  # no round-off at the end of the curve
    np.clip(overlap, 0.0, 1.0, out=overlap)
    auroc = float(np.trapezoid(tpr, fpr))
    # Pairs (defect, defect-free) on the same level count 1/2; the true share lies in [0, 1].
    error_bound = float(0.5 * np.dot(neg.astype(np.float64), pos) / (n_neg * n_pos))
    au_pro = _area_up_to(fpr, overlap, FPR_LIMIT) / FPR_LIMIT
    return PixelResult(auroc, au_pro, n_regions, int(n_pos), error_bound)


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under ``y(x)`` for ``x`` in ``[0, x_max]``; ``x`` ``(K,)`` non-decreasing from 0."""
    inside = int(np.searchsorted(x, x_max, side="right"))
    area = float(np.trapezoid(y[:inside], x[:inside]))
    if inside < x.size:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_cut = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += float((x_max - x0) * (y0 + y_cut) / 2.0)
    return area


def _exact(
    images_by_group: Mapping[str, Sequence[_Image]], sets: Mapping[str, Sequence[str]]
) -> dict[str, PixelResult]:
    """Curves at every distinct score: one sort of all pixels, then one histogram per set."""
    values, defect, weights, group_ids = [], [], [], []
    group_index = {group: i for i, group in enumerate(images_by_group)}
    for group, images in images_by_group.items():
        for im in images:
            values.append(im.values.reshape(-1))
            flat_mask = np.zeros(im.values.size, bool) if im.mask is None else im.mask.reshape(-1)
            defect.append(flat_mask)
            w = np.zeros(im.values.size)
            w[flat_mask] = im.weights
            weights.append(w)
            group_ids.append(np.full(im.values.size, group_index[group], dtype=np.int32))
    levels, inverse = np.unique(np.concatenate(values).astype(np.float64), return_inverse=True)
    inverse = inverse.reshape(-1)
    is_defect, weight, group_of = np.concatenate(defect), np.concatenate(weights), np.concatenate(group_ids)
    n_regions = {g: sum(im.n_regions for im in images) for g, images in images_by_group.items()}
    results: dict[str, PixelResult] = {}
    for name, groups in sets.items():
        chosen = np.isin(group_of, [group_index[g] for g in groups if g in group_index])
        neg = np.bincount(inverse[chosen & ~is_defect], minlength=levels.size)
        pos_pixels = chosen & is_defect
        pos = np.bincount(inverse[pos_pixels], minlength=levels.size)
        pro = np.bincount(inverse[pos_pixels], weights=weight[pos_pixels], minlength=levels.size)
        result = _curve_metrics(neg, pos, pro, sum(n_regions.get(g, 0) for g in groups))
        # Equal scores are true ties here, which AUROC counts as 1/2 by definition: nothing is lost.
        results[name] = replace(result, auroc_error_bound=0.0)
    return results


def _binned_axis(images: Sequence[_Image]) -> tuple[int, int, int]:
    """Lowest key, bit shift and number of bins so that every key maps into ``MAX_BINS`` bins."""
    low = _key_of(min(float(im.values.min()) for im in images))
    high = _key_of(max(float(im.values.max()) for im in images))
    shift = 0
    while ((high - low) >> shift) + 1 > MAX_BINS:
        shift += 1
    return low, shift, ((high - low) >> shift) + 1


def _binned(
    images_by_group: Mapping[str, Sequence[_Image]], sets: Mapping[str, Sequence[str]]
) -> tuple[dict[str, PixelResult], int, int]:
    """Histograms per group on one binned axis, summed per set; also returns the shift and bin count."""
    everything = [im for group in images_by_group.values() for im in group]
    low, shift, n_bins = _binned_axis(everything)
    hists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    for group, images in images_by_group.items():
        neg = np.zeros(n_bins, dtype=np.int64)
        pos = np.zeros(n_bins, dtype=np.int64)
        pro = np.zeros(n_bins, dtype=np.float64)
        n_regions = 0
        for im in images:
            bins = (_order_keys(im.values) - low) >> shift
            if im.mask is None:
                neg += np.bincount(bins, minlength=n_bins)
                continue
            m = im.mask.reshape(-1)
            neg += np.bincount(bins[~m], minlength=n_bins)
            pos += np.bincount(bins[m], minlength=n_bins)
            pro += np.bincount(bins[m], weights=im.weights, minlength=n_bins)
            n_regions += im.n_regions
        hists[group] = (neg, pos, pro, n_regions)
    results: dict[str, PixelResult] = {}
    for name, groups in sets.items():
        parts = [hists[g] for g in groups if g in hists]
        results[name] = _curve_metrics(
            sum((p[0] for p in parts), np.zeros(n_bins, dtype=np.int64)),
            sum((p[1] for p in parts), np.zeros(n_bins, dtype=np.int64)),
            sum((p[2] for p in parts), np.zeros(n_bins, dtype=np.float64)),
            sum(p[3] for p in parts),
        )
    return results, shift, n_bins


def pixel_metrics(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    groups: Sequence[str],
    sets: Mapping[str, Sequence[str]],
    exact_limit: int = EXACT_LIMIT,
) -> tuple[dict[str, PixelResult], str]:
    """Pixel AUROC and AU-PRO for several sets of images in one pass over the maps.

    Args:
        maps: N anomaly maps, each ``(H_i, W_i)`` float, higher is more anomalous.
        masks: N ground-truth masks, each ``(H_i, W_i)`` bool (``None`` or all-False: no defect).
        groups: N group names (e.g. defect types) of the images.
        sets: metric set name -> the groups it covers (e.g. ``{"bent": ["bent", "good"]}``).
        exact_limit: use every distinct score as a threshold when the images hold at most this
            many pixels in total; above it, bin the scores (see the module docstring).

    Returns:
        The results by set name, and a sentence saying how the scores were thresholded.

    Raises:
        InputError: for a map that is not 2-D or holds NaN/inf, or a mask of a different shape.
    """
    if not (len(maps) == len(masks) == len(groups)):
        raise InputError("masks", f"got {len(maps)} maps, {len(masks)} masks and {len(groups)} labels")
    by_group: dict[str, list[_Image]] = {}
    n_pixels = 0
    for i, (amap, mask, group) in enumerate(zip(maps, masks, groups, strict=True)):
        image = _prepare(i, amap, mask)
        by_group.setdefault(group, []).append(image)
        n_pixels += image.values.size
    if n_pixels <= exact_limit:
        return _exact(by_group, sets), f"exact: every distinct score of the {n_pixels} pixels is a threshold"
    results, shift, n_bins = _binned(by_group, sets)
    bits = max(23 - shift, 0)
    method = (
        f"binned: {n_pixels} pixels in {n_bins} float32 levels of relative width 2^-{bits} "
        f"(more than {exact_limit} pixels); curves exact at the level boundaries"
    )
    return results, method
