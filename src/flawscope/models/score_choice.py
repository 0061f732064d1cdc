"""Which image score a supervised model's thresholds judge, chosen on its validation images.

A segmenting model can judge a part by its image head (``1 - P(good)``) or by its defect map
(the peak, or the mean of the ``area`` highest pixels, so that a defect must cover that area).
Which ranks defects above good parts better depends on the data: thin cracks favour the peak,
wide faint bands a larger area, and an image head can read context a map misses. With
``score="auto"`` the model measures every candidate on its validation images only (never on
test data) and keeps the best by the standardised partial AUROC up to a 5% false-reject rate,
the region where a line's threshold lies; ties keep the earlier candidate (the image head first).

The choice is made on the stride-8 grid (the mean of the ``area / 64`` highest valid cells), a
close stand-in for the finished map, which is smoothed and resized before its pixels are ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from flawscope.data.preprocess import inner_cells
from flawscope.features.cache import STRIDE, FeatureBank
from flawscope.models.heads import SupervisedHead, defect_probability

# Candidate areas in canvas pixels (0: the peak); 64 pixels is one stride-8 cell.
AREAS = (0, 64, 256, 1024)
MAX_FPR = 0.05


@dataclass(frozen=True)
class ScoreChoice:
    """The chosen score and what every candidate measured.

    Attributes:
        score: ``"class"`` or ``"map"``.
        area: the map's score area in canvas pixels (0: its peak; unused for ``"class"``).
        measured: candidate name -> standardised partial AUROC (FPR <= 5%) on validation.
        note: why the choice is what it is, for the training log.
    """

    score: str
    area: int
    measured: dict[str, float]
    note: str


def candidate_scores(
    head: torch.nn.Module, temperature: float, good_index: int, bank: FeatureBank, rows: np.ndarray,
    areas: Sequence[int] = AREAS,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Every candidate image score of bank rows: ``"class"`` and ``"map@AREA"``.

    Args:
        head: the trained head or ensemble (with a segmentation output).
        temperature: the class probabilities' temperature.
        good_index: column of ``"good"`` in the class logits.
        bank: the feature bank.
        rows: bank rows (clean views).
        areas: map score areas in canvas pixels.
    """
    out: dict[str, list[float]] = {"class": [], **{f"map@{a}": [] for a in areas}}
    head.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), 32):
            index = torch.from_numpy(np.asarray(rows[start : start + 32]))
            seg, logits = head(bank.features[index].float())
            probs = torch.softmax(logits / temperature, dim=1)
            out["class"] += (1.0 - probs[:, good_index]).tolist()
            assert seg is not None
            maps = defect_probability(seg).numpy()
            valid = bank.valid[index].numpy()
            for m, v in zip(maps, valid, strict=True):
                cells = np.sort(m[v] if v.any() else m.ravel())[::-1]
                for a in areas:
                    k = max(1, math.ceil(a / (STRIDE * STRIDE)))
                    out[f"map@{a}"].append(float(cells[:k].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def choose_score(scores: dict[str, np.ndarray], defective: np.ndarray) -> ScoreChoice:
    """The candidate with the best partial AUROC on validation (``defective``: 1 for a defect)."""
    y = np.asarray(defective).astype(int)
    if y.min() == y.max():
        return ScoreChoice("class", 0, {}, "validation has one class only: the image head's score is kept")
    measured = {k: float(roc_auc_score(y, v, max_fpr=MAX_FPR)) for k, v in scores.items()}
    best = max(measured, key=lambda k: measured[k])  # first of equals: dicts keep insertion order
    score, _, area = best.partition("@")
    table = ", ".join(f"{k} {v:.4f}" for k, v in measured.items())
    return ScoreChoice(
        score, int(area or 0), measured, f"image score chosen on {len(y)} validation images: {best} ({table})"
    )


def evidence(head: SupervisedHead, bank: FeatureBank, rows: np.ndarray) -> torch.Tensor:
    """``(N, 3)`` evidence of bank rows (:meth:`~flawscope.models.heads.SupervisedHead.evidence`).

    The maps' peaks are taken inside each image (its ``margin`` away from the padding) when
    the head's fused score takes them there.
    """
    parts = []
    with torch.inference_mode():
        for start in range(0, len(rows), 32):
            index = torch.from_numpy(np.asarray(rows[start : start + 32]))
            x = bank.features[index].float()
            anomaly_map = head.anomaly(x) if head.anomaly is not None else None
            seg, logits = head.head(x)
            cells = None
            if head.in_image:  # the peaks inside each image, as the finished score takes them
                cells = torch.from_numpy(inner_cells(bank.valid[index].numpy(), head.margin or 0))
            parts.append(head.evidence(logits, seg, anomaly_map, cells))
    return torch.cat(parts)


@dataclass(frozen=True)
class ModelScore:
    """What a model judges parts by after :func:`choose_model_score`.

    Attributes:
        score: ``"class"``, ``"map"`` or ``"fused"``.
        notes: why, for the training log.
        area: the map's score area in canvas pixels when ``"map"`` was chosen, else ``None``.
        fusion: ``(2, 3)`` means and standard deviations of the evidence on the validation good
            parts when ``"fused"`` was chosen, else ``None``.
    """

    score: str
    notes: list[str]
    area: int | None = None
    fusion: torch.Tensor | None = None


def choose_model_score(
    head: SupervisedHead, temperature: float, good: int | None, bank: FeatureBank, val_rows: np.ndarray,
    labels: np.ndarray, requested: str,
) -> ModelScore:  # fmt: skip
    """``score="fused"`` or ``"auto"``: fusion statistics and the choice, on validation images.

    Args:
        head: the model's exported head, without fusion (its anomaly head, if any, fitted).
        temperature: the class probabilities' temperature.
        good: image class index of ``"good"``, or ``None``.
        bank: the feature bank.
        val_rows: the validation images' bank rows (clean views).
        labels: ``(M,)`` image class index of every bank row.
        requested: the ``score`` hyperparameter (``"fused"`` or ``"auto"``).

    Raises:
        InputError: for ``"fused"`` without an anomaly head.
    """
    from flawscope.errors import InputError

    val_good = val_rows[labels[val_rows] == good] if good is not None else val_rows[:0]
    if len(val_good) < 2:
        return ModelScore("class", ["fewer than 2 validation good parts: the image head's score is kept"])
    assert good is not None
    stats = None
    if head.anomaly is not None:
        found = evidence(head, bank, val_good)
        stats = torch.stack([found.mean(dim=0), found.std(dim=0).clamp_min(1e-6)])
    if requested == "fused":
        if stats is None:
            raise InputError("score", "'fused' needs an anomaly head (anomaly='padim' or 'patchcore')")
        return ModelScore(
            "fused", [f"fused score standardised on {len(val_good)} validation good parts"], None, stats
        )
    scores = candidate_scores(head.head, temperature, good, bank, val_rows)
    if stats is not None:
        scores["fused"] = ((evidence(head, bank, val_rows) - stats[0]) / stats[1]).sum(dim=1).numpy()
    choice = choose_score(scores, labels[val_rows] != good)
    return ModelScore(
        choice.score,
        [choice.note],
        choice.area if choice.score == "map" else None,
        stats if choice.score == "fused" else None,
    )
