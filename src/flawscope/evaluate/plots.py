"""Figures of the validation report, rendered off-screen to PNG bytes.

Matplotlib is driven through its object-oriented API with an explicit Agg canvas, so drawing a
report never touches pyplot's global state or the process's default backend (a report written
from a GUI or a web server must not change how that program draws).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GOOD_COLOUR = "#2b7bba"
DEFECT_COLOUR = "#d7301f"
REJECT_COLOUR = "#b2182b"
REVIEW_COLOUR = "#e08214"
_DPI = 100


@dataclass(frozen=True)
class OperatingMarker:
    """Where the operating point lies, for marking it on the curves.

    Attributes:
        reject: reject threshold (a part with ``score >= reject`` fails).
        review: review threshold (``== reject`` without a review band).
        frr: false-reject rate of the good parts at ``reject``.
        recall: share of defective parts rejected at ``reject``.
        precision: share of defective parts among the rejected ones (``None`` if none rejected).
        label: how the operating point was chosen, for the legend.
    """

    reject: float
    review: float
    frr: float
    recall: float
    precision: float | None
    label: str


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    # Imported here: matplotlib is slow to import and only the report needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, list(axes)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def curves_png(
    scores: np.ndarray, labels: np.ndarray, marker: OperatingMarker, image_auroc: float | None
) -> bytes:
    """ROC curve (left) and precision-recall curve (right), with the operating point marked.

    Args:
        scores: ``(N,)`` image anomaly scores.
        labels: ``(N,)`` 0 for good, 1 for defective; both classes must be present.
        marker: the operating point.
        image_auroc: AUROC from the evaluation summary, for the legend.

    Returns:
        PNG bytes (1000 x 420 px).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc_ax, pr_ax) = _figure(10.0, 4.2, ncols=2)
    fpr, tpr, _ = roc_curve(labels, scores)
    auc_text = f"AUROC {image_auroc:.4f}" if image_auroc is not None else "ROC"
    roc_ax.plot(fpr, tpr, color=DEFECT_COLOUR, linewidth=1.8, label=auc_text)
    roc_ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    roc_ax.plot(
        marker.frr,
        marker.recall,
        "o",
        color="black",
        markersize=7,
        label=f"{marker.label}: FRR {marker.frr:.2%}, recall {marker.recall:.2%}",
    )
    roc_ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        title="ROC curve",
        xlabel="False-reject rate (share of good parts rejected)",
        ylabel="Recall (share of defective parts rejected)",
    )
    roc_ax.legend(loc="lower right", fontsize=8, frameon=False)

    precision, recall, _ = precision_recall_curve(labels, scores)
    pr_ax.step(recall, precision, where="post", color=DEFECT_COLOUR, linewidth=1.8, label="precision-recall")
    prevalence = float(np.mean(labels))
    pr_ax.axhline(
        prevalence, color="#999999", linestyle=":", linewidth=1, label=f"share of defects {prevalence:.2%}"
    )
    if marker.precision is not None:
        pr_ax.plot(marker.recall, marker.precision, "o", color="black", markersize=7, label=marker.label)
    pr_ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.03),
        title="Precision-recall curve",
        xlabel="Recall (share of defective parts rejected)",
        ylabel="Precision (share of rejected parts that are defective)",
    )
    pr_ax.legend(loc="lower left", fontsize=8, frameon=False)
    return _png(fig)


def histogram_png(
    scores: np.ndarray,
    labels: np.ndarray,
    marker: OperatingMarker | None,
    score_name: str = "Image anomaly score",
) -> bytes:
    """Histograms of the image scores of good and defective parts, with the thresholds drawn.

    Args:
        scores: ``(N,)`` image scores (the thresholds' scale).
        labels: ``(N,)`` 0 for good, 1 for defective.
        marker: the operating point (its reject and review thresholds are drawn); ``None``: none.
        score_name: the x axis's label (what the score is).

    Returns:
        PNG bytes (1000 x 380 px).
    """
    fig, (ax,) = _figure(10.0, 3.8)
    finite = scores[np.isfinite(scores)]
    low, high = float(finite.min()), float(finite.max())
    if marker is not None:
        low, high = min(low, marker.review), max(high, marker.reject)
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, 61).tolist()
    for value, name, colour in ((0, "good", GOOD_COLOUR), (1, "defective", DEFECT_COLOUR)):
        part = scores[labels == value]
        if part.size:
            ax.hist(part, bins=edges, color=colour, alpha=0.55, label=f"{name} ({part.size})")
            ax.hist(part, bins=edges, color=colour, histtype="step", linewidth=1.2)
    if marker is not None and marker.review < marker.reject:
        ax.axvspan(marker.review, marker.reject, color=REVIEW_COLOUR, alpha=0.12, label="review band")
        ax.axvline(
            marker.review,
            color=REVIEW_COLOUR,
            linestyle="--",
            linewidth=1.5,
            label=f"review threshold {marker.review:.4g}",
        )
    if marker is not None:
        ax.axvline(
            marker.reject, color=REJECT_COLOUR, linewidth=2, label=f"reject threshold {marker.reject:.4g}"
        )
    ax.set(title="Image scores of good and defective test parts", xlabel=score_name, ylabel="Parts")
    # "best": a trained head's defect scores pile up at the right edge, under an upper-right legend.
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _png(fig)
