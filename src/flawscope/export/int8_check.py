"""What an INT8 graph costs: both graphs run as the runtime runs them, compared on labelled parts.

Two measures, each against its budget: the image AUROC of the decision scores on good and
defective parts (:data:`INT8_MAX_AUROC_LOSS`), and, for a model that detects boxes, mAP@0.5 on
parts with their true boxes (:data:`INT8_MAX_MAP_LOSS`). Detection is checked on the boxes the
deployed graph gives, decoded in the graph and finished in image pixels, so it is the loss a
station would see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flawscope.data.outputs import concat_predictions, finish_outputs
from flawscope.data.preprocess import Preprocessing, to_batch
from flawscope.declaration import ModelDeclaration, OutputKind, anomaly_declaration
from flawscope.features.embedder import STRIDE
from flawscope.models.engine import ort_session
from flawscope.types import Prediction

# Image AUROC the INT8 graph may lose against fp32 on labelled parts (issue 4's budget).
INT8_MAX_AUROC_LOSS = 0.005
# mAP@0.5 a detector's INT8 graph may lose against fp32 on parts with true boxes.
INT8_MAX_MAP_LOSS = 0.01

TruthBox = tuple[float, float, float, float, str]


def predict_images(
    model_bytes: bytes, images: Sequence[np.ndarray], pre: Preprocessing, declaration: ModelDeclaration
) -> Prediction:
    """Finished outputs of an ONNX scorer, as the runtime computes them (batches of 8)."""
    session = ort_session(model_bytes)
    names = declaration.output_names
    parts = []
    for start in range(0, len(images), 8):
        batch, geometries = to_batch(images[start : start + 8], pre)
        raw = dict(zip(names, session.run(names, {"image": batch}), strict=True))
        parts.append(finish_outputs(raw, geometries, pre, declaration))
    return concat_predictions(parts)


def score_images(
    model_bytes: bytes,
    images: Sequence[np.ndarray],
    pre: Preprocessing,
    declaration: ModelDeclaration | None = None,
) -> np.ndarray:
    """``(N,)`` decision scores under an ONNX scorer, as the runtime computes them."""
    found = predict_images(model_bytes, images, pre, declaration or anomaly_declaration(STRIDE))
    return np.asarray(found.scores, dtype=np.float64)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation of two score vectors (``None`` when either is constant or too short)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def validate(
    fp32: bytes,
    int8: bytes,
    pre: Preprocessing,
    declaration: ModelDeclaration,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    boxes: Sequence[Sequence[TruthBox]] = (),
) -> dict[str, Any] | None:
    """Both graphs on labelled parts: image AUROC, and mAP@0.5 where the model gives boxes.

    Args:
        fp32: the fp32 graph.
        int8: the INT8 graph.
        pre: the model's preprocessing.
        declaration: the model's declaration (its outputs).
        images: the labelled parts.
        labels: 1 = defective, per image.
        boxes: per image, its true boxes ``(x0, y0, x1, y1, class)`` in its pixels; empty when
            none are known (no detection check).

    Returns:
        ``None`` when there is nothing to measure (one class only and no boxes); else the
        measures, ``within`` saying whether every one is within its budget.
    """
    y = np.asarray(labels, dtype=int)
    detects = any(s.kind is OutputKind.BOXES for s in declaration.outputs)
    with_boxes = detects and len(boxes) == len(images) and any(len(b) for b in boxes)
    two_classes = len(images) == len(y) and len(set(y.tolist())) >= 2
    if not (two_classes or with_boxes):
        return None
    out: dict[str, Any] = {"n_good": int((y == 0).sum()), "n_defect": int((y == 1).sum())}
    within = True
    if with_boxes:
        a, b = predict_images(fp32, images, pre, declaration), predict_images(int8, images, pre, declaration)
        found = detection_scores(a, b, boxes, declaration.classes)
        out.update(found)
        within &= bool(found["map_loss"] <= INT8_MAX_MAP_LOSS)
        scores = (np.asarray(a.scores, np.float64), np.asarray(b.scores, np.float64))
    elif two_classes:
        scores = (
            score_images(fp32, images, pre, declaration),
            score_images(int8, images, pre, declaration),
        )
    if two_classes:
        from sklearn.metrics import roc_auc_score

        out["image_auroc_fp32"] = float(roc_auc_score(y, scores[0]))
        out["image_auroc_int8"] = float(roc_auc_score(y, scores[1]))
        out["auroc_loss"] = out["image_auroc_fp32"] - out["image_auroc_int8"]
        within &= bool(out["auroc_loss"] <= INT8_MAX_AUROC_LOSS)
    out["within"] = within
    return out


def detection_scores(
    fp32: Prediction, int8: Prediction, truth: Sequence[Sequence[TruthBox]], classes: Sequence[str]
) -> dict[str, Any]:
    """mAP@0.5 (and AP per class) of both graphs' finished boxes against the true boxes."""
    from flawscope.evaluate.supervised import detection_map

    a = detection_map(fp32.boxes, truth, classes)
    b = detection_map(int8.boxes, truth, classes)
    map_a, map_b = float(a["map"] or 0.0), float(b["map"] or 0.0)
    return {
        "n_images": len(truth),
        "n_boxes": int(sum(len(t) for t in truth)),
        "map_fp32": map_a,
        "map_int8": map_b,
        "map_loss": map_a - map_b,
        "ap_fp32": dict(a["ap"]),
        "ap_int8": dict(b["ap"]),
        "max_map_loss": INT8_MAX_MAP_LOSS,
    }
