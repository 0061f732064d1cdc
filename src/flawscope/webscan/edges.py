"""The web's edges: which columns of a frame are inspected, and the margins that are not.

A line-scan camera usually sees more than the web (the background beyond its edges, which wander
sideways as the web runs), and even where the web fills the view its last few millimetres are
not like its middle: edge shading, a slit edge, and the backbone's own padding at the frame's
border. A model trained on good web then flags the edges, and a web-inspection user expects the
edges to be found and a margin inside them left out, *recorded* as not inspected, never passed.

:class:`EdgeConfig` says how: ``find`` locates the web in each frame from its column profile
(:func:`find_web_edges`: a step between the web and a darker or brighter background), and
``margin_mm`` trims that much inside each edge. :func:`inspected_band` gives the frame's
inspected columns; :func:`restrict_to_band` turns a model's prediction for whole frames into the
prediction for their bands alone (maps outside the band lowered to the band's floor, the score
recomputed from the band), so the verdict is still decided by :func:`flawscope.decide.verdict.decide_many`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from flawscope.data.preprocess import image_score
from flawscope.errors import InputError
from flawscope.types import Prediction


@dataclass(frozen=True)
class EdgeConfig:
    """How a web scan finds the inspected width of each frame.

    Attributes:
        margin_mm: millimetres left out inside each edge (the web's own edges when ``find``,
            the frame's first and last columns otherwise); recorded as not inspected.
        find: locate the web's edges in every frame (a web narrower than the camera's view).
        contrast: grey levels between the web and the background that make an edge (``find``).
        background: the background's grey level when known (a dark backing roll, a back light):
            columns that far from it are web, and a frame with none is background only. None:
            the edges are the step between the frame's darkest and brightest columns, and a
            frame without a step is all web.
    """

    margin_mm: float = 0.0
    find: bool = False
    contrast: float = 25.0
    background: float | None = None

    def __post_init__(self) -> None:
        if not (self.margin_mm >= 0 and np.isfinite(self.margin_mm)):
            raise InputError("margin_mm", f"must be >= 0 mm, got {self.margin_mm}")
        if not self.contrast > 0:
            raise InputError("edge contrast", f"must be > 0 grey levels, got {self.contrast}")

    @property
    def active(self) -> bool:
        """Whether anything is trimmed (otherwise every column is inspected, as before)."""
        return self.find or self.margin_mm > 0


def find_web_edges(
    image: np.ndarray, contrast: float = 25.0, background: float | None = None
) -> tuple[int, int] | None:
    """``(first, end)`` columns of the web in a frame (end exclusive); None when no web is seen.

    With a known ``background`` level, web columns are those whose mean lies at least
    ``contrast`` grey levels from it. Without, the column means are split at the midpoint of
    their range: when the two sides differ by at least ``contrast``, the web is on the side of
    the frame's middle column (a web is brighter or darker than its background, either way);
    when they do not, there is no step and the web fills the frame. Either way the web is the
    longest run of web columns.

    Args:
        image: ``(rows, W)`` or ``(rows, W, 3)`` frame.
        contrast: the least step between web and background, in grey levels.
        background: the background's grey level, if known.

    Returns:
        The web's columns, or None when the middle of the frame is background only (no web run
        of at least 8 columns).
    """
    pixels = np.asarray(image, np.float32)
    profile = pixels.mean(axis=(0, 2)) if pixels.ndim == 3 else pixels.mean(axis=0)
    width = int(profile.shape[0])
    if background is not None:
        on_web = np.abs(profile - background) >= contrast
    else:
        low, high = np.percentile(profile, [2, 98])
        if high - low < contrast:
            return 0, width
        level = (low + high) / 2.0
        centre = profile[max(0, width // 2 - 2) : width // 2 + 3].mean()
        on_web = profile >= level if centre >= level else profile < level
    # The longest run of web columns (a stain on the web does not split it: runs are of columns).
    best, start = (0, 0), None
    for x, on in enumerate(np.append(on_web, False)):
        if on and start is None:
            start = x
        elif not on and start is not None:
            if x - start > best[1] - best[0]:
                best = (start, x)
            start = None
    if best[1] - best[0] < 8:
        return None
    return best


def inspected_band(image: np.ndarray, config: EdgeConfig, mm_per_px: float) -> tuple[int, int] | None:
    """``(first, end)`` inspected columns of a frame; None when no column is left to inspect."""
    width = int(image.shape[1])
    edges = find_web_edges(image, config.contrast, config.background) if config.find else (0, width)
    if edges is None:
        return None
    margin = int(np.ceil(config.margin_mm / mm_per_px - 1e-9))
    first, end = edges[0] + margin, edges[1] - margin
    return (first, end) if end - first >= 1 else None


def restrict_to_band(prediction: Prediction, bands: Sequence[tuple[int, int]], score_area: int) -> Prediction:
    """The prediction for each frame's band alone: what is outside cannot score or make a region.

    Each map keeps its size (regions stay in frame coordinates) but every column outside the band
    is set to the band's lowest value; the score is the band's (its peak, or the mean of its
    ``score_area`` highest values, as the model scores a whole frame).

    Raises:
        InputError: for a prediction without maps (a band needs a map to cut).
    """
    if len(prediction.maps) != len(bands):
        raise InputError("edges", "finding the inspected width needs a model that gives anomaly maps")
    maps, scores = [], []
    for amap, (first, end) in zip(prediction.maps, bands, strict=True):
        inside = np.asarray(amap[:, first:end], np.float32)
        floor = float(inside.min()) if inside.size else 0.0
        cut = np.full(amap.shape, floor, np.float32)
        cut[:, first:end] = inside
        maps.append(cut)
        scores.append(image_score(inside, score_area) if inside.size else floor)
    return replace(prediction, scores=np.asarray(scores, np.float32), maps=tuple(maps))
