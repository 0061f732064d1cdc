"""From a graph's named raw outputs to a :class:`~flawscope.types.Prediction` at each image's size.

Shared by a model's ``predict`` (torch) and the torch-free runtime (ONNX Runtime): both hand the
same named arrays to :func:`finish_outputs`, which reads the model's declaration to know what each
one is, so the deployed runtime finishes outputs exactly as evaluation does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from flawscope.data.preprocess import Geometry, Preprocessing, canvas_valid_mask, finish_maps, inner_cells
from flawscope.declaration import GOOD, ModelDeclaration, OutputKind
from flawscope.types import Prediction


def class_map_to_image(grid: np.ndarray, geometry: Geometry, config: Preprocessing) -> np.ndarray:
    """Nearest-cell lookup of an ``(h, w)`` class grid at the image's own ``(H, W)`` pixels."""
    grid = np.asarray(grid)
    stride_y, stride_x = config.height / grid.shape[0], config.width / grid.shape[1]
    ys = geometry.top + (np.arange(geometry.height) + 0.5) * (geometry.inner_height / geometry.height)
    xs = geometry.left + (np.arange(geometry.width) + 0.5) * (geometry.inner_width / geometry.width)
    rows = np.clip((ys / stride_y).astype(np.int64), 0, grid.shape[0] - 1)
    cols = np.clip((xs / stride_x).astype(np.int64), 0, grid.shape[1] - 1)
    # Rows, then columns: two 1-D takes on the small int32 grid are 3x faster than one broadcast
    # 2-D fancy index followed by a cast of the full-size map (0.70 -> 0.22 ms per 256 x 256 map).
    return np.ascontiguousarray(grid.astype(np.int32, copy=False)[rows].take(cols, axis=1))


def in_image_peaks(
    grids: np.ndarray, geometries: Sequence[Geometry], config: Preprocessing, stride: int, margin: int = 0
) -> np.ndarray:
    """``(B,)`` sum over channels of each channel's highest cell inside the image.

    Args:
        grids: ``(B, C, h, w)`` maps on the canvas grid (a fused score's standardised maps).
        geometries: where each image lies in the canvas.
        config: the preprocessing (canvas size).
        stride: canvas pixels per grid cell.
        margin: cells left out along the seam with the padding
            (:func:`~flawscope.data.preprocess.inner_cells`).

    Cells whose centre lies in the canvas padding are left out (the rule the features' bank
    uses, :func:`~flawscope.data.preprocess.canvas_valid_mask`).
    """
    grids = np.asarray(grids, dtype=np.float32)
    cells = inner_cells(canvas_valid_mask(geometries, config, stride), margin)
    inside = np.where(cells[:, None], grids, -np.inf)
    return inside.reshape(len(grids), grids.shape[1], -1).max(axis=2).sum(axis=1).astype(np.float32)


def finish_probability_maps(
    grids: np.ndarray, geometries: Sequence[Geometry], config: Preprocessing
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Defect-probability maps: smoothed and resized like anomaly maps, kept within ``[0, 1]``."""
    peaks, maps = finish_maps(np.asarray(grids, dtype=np.float32), geometries, config)
    return np.clip(peaks, 0.0, 1.0), tuple(np.clip(m, 0.0, 1.0, out=m) for m in maps)


# Detections below this confidence are dropped when boxes are finished (the graph keeps a fixed
# number per image; most of them are near 0). Low, so that average precision sees the whole curve.
MIN_BOX_CONFIDENCE = 0.01


def finish_boxes(
    raw: np.ndarray, geometry: Geometry, classes: Sequence[str], min_confidence: float = MIN_BOX_CONFIDENCE
) -> tuple[tuple[float, float, float, float, float, str], ...]:
    """One image's ``(N, 6)`` canvas detections as ``(x0, y0, x1, y1, confidence, class)`` in its pixels.

    Boxes are mapped from the canvas to the image (its place and scale in the canvas), clipped
    to the image, and those below ``min_confidence`` or of no area are dropped.
    """
    rows = np.asarray(raw, dtype=np.float64)
    rows = rows[rows[:, 4] >= min_confidence]
    sx, sy = geometry.width / geometry.inner_width, geometry.height / geometry.inner_height
    x0 = np.clip((rows[:, 0] - geometry.left) * sx, 0, geometry.width)
    x1 = np.clip((rows[:, 2] - geometry.left) * sx, 0, geometry.width)
    y0 = np.clip((rows[:, 1] - geometry.top) * sy, 0, geometry.height)
    y1 = np.clip((rows[:, 3] - geometry.top) * sy, 0, geometry.height)
    order = np.argsort(-rows[:, 4], kind="stable")
    return tuple(
        (float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i]), float(rows[i, 4]), classes[int(rows[i, 5])])
        for i in order
        if x1[i] > x0[i] and y1[i] > y0[i] and 0 <= int(rows[i, 5]) < len(classes)
    )


def score_from_probs(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``(N,)`` defect score ``1 - P(good)`` (1 where the model has no good class)."""
    p = np.asarray(probs, dtype=np.float32)
    if GOOD not in classes:
        return np.ones(len(p), dtype=np.float32)
    return (1.0 - p[:, list(classes).index(GOOD)]).astype(np.float32)


def finish_outputs(
    raw: Mapping[str, np.ndarray],
    geometries: Sequence[Geometry],
    config: Preprocessing,
    declaration: ModelDeclaration,
) -> Prediction:
    """Finish a batch of raw outputs into a prediction.

    Args:
        raw: graph output name -> array, as declared (batch axis first).
        geometries: where each image lies in the canvas.
        config: preprocessing of the model.
        declaration: the model's declaration.

    Returns:
        Decision scores and maps (see :class:`~flawscope.types.Prediction`); the anomaly score
        of an image is the peak of its smoothed anomaly map (or the mean of its
        :attr:`~flawscope.data.preprocess.Preprocessing.score_area` highest pixels), and so is
        a defect-map decision's score.

    Raises:
        KeyError: when a declared output is missing from ``raw``.
    """
    anomaly_scores: np.ndarray | None = None
    anomaly_maps: tuple[np.ndarray, ...] = ()
    defect_maps: tuple[np.ndarray, ...] = ()
    defect_scores: np.ndarray | None = None
    class_maps: tuple[np.ndarray, ...] = ()
    probs: np.ndarray | None = None
    image_score: np.ndarray | None = None
    fusion_peaks: np.ndarray | None = None
    boxes: tuple[tuple[tuple[float, float, float, float, float, str], ...], ...] = ()
    for spec in declaration.outputs:
        value = np.asarray(raw[spec.name])
        if spec.kind is OutputKind.ANOMALY_MAP and anomaly_scores is None:
            anomaly_scores, anomaly_maps = finish_maps(value, geometries, config)
        elif spec.kind is OutputKind.DEFECT_MAP and not defect_maps:
            defect_scores, defect_maps = finish_probability_maps(value, geometries, config)
        elif spec.kind is OutputKind.CLASS_MAP and not class_maps:
            class_maps = tuple(
                class_map_to_image(g, geo, config) for g, geo in zip(value, geometries, strict=True)
            )
        elif spec.kind is OutputKind.BOXES and not boxes:
            boxes = tuple(
                finish_boxes(b, geo, declaration.classes) for b, geo in zip(value, geometries, strict=True)
            )
        elif spec.kind is OutputKind.CLASS_PROBS and probs is None:
            probs = value.astype(np.float32)
        elif spec.kind is OutputKind.IMAGE_SCORE and spec.name == declaration.decision:
            image_score = value.reshape(-1).astype(np.float32)
        elif spec.kind is OutputKind.FUSION_MAPS:
            margin = int(declaration.extra.get("fusion_margin", 0))
            fusion_peaks = in_image_peaks(value, geometries, config, spec.stride or 1, margin)
    kind = declaration.decision_kind
    level = declaration.extra.get("box_level") if boxes else None
    if kind is OutputKind.ANOMALY_MAP:
        assert anomaly_scores is not None
        return Prediction(
            anomaly_scores, anomaly_maps, "score", None, (), probs, declaration.classes, class_maps, boxes
        )
    if kind is OutputKind.CLASS_PROBS:
        assert probs is not None
        scores = score_from_probs(probs, declaration.classes)
    elif kind is OutputKind.DEFECT_MAP:
        # The defect map's peak inside the image, or the mean of its ``score_area`` highest pixels.
        assert defect_scores is not None
        scores = defect_scores
    else:
        assert image_score is not None
        # A fused score's graph gives its log-odds part; the maps' peaks inside the image complete it.
        scores = image_score if fusion_peaks is None else (image_score + fusion_peaks).astype(np.float32)
    return Prediction(
        scores=scores,
        maps=defect_maps,
        map_scale="probability",
        anomaly_scores=anomaly_scores,
        anomaly_maps=anomaly_maps,
        class_probs=probs,
        classes=declaration.classes,
        class_maps=class_maps,
        boxes=boxes,
        box_level=None if level is None else float(level),
    )


def concat_predictions(parts: Sequence[Prediction]) -> Prediction:
    """Join the predictions of consecutive batches into one."""
    if not parts:
        return Prediction(np.zeros(0, np.float32))
    first = parts[0]

    def joined(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return Prediction(
        scores=np.concatenate([p.scores for p in parts]).astype(np.float32),
        maps=tuple(m for p in parts for m in p.maps),
        map_scale=first.map_scale,
        anomaly_scores=joined("anomaly_scores"),
        anomaly_maps=tuple(m for p in parts for m in p.anomaly_maps),
        class_probs=joined("class_probs"),
        classes=first.classes,
        class_maps=tuple(m for p in parts for m in p.class_maps),
        boxes=tuple(b for p in parts for b in p.boxes),
        box_level=first.box_level,
    )


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label image at another size, nearest neighbour (for masks and class maps)."""
    return cv2.resize(np.asarray(mask).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
