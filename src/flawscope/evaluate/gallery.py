"""Gallery tiles of the validation report: the worst false rejects and the missed defects.

Only the images shown are decoded, and each is downscaled before the heatmap is blended in, so
the cost of a report does not grow with the size of the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from flawscope.errors import InputError
from flawscope.types import Region, Verdict

log = logging.getLogger(__name__)

MAX_SIDE = 256
# Heatmap opacity at the low and the high end of the colour scale.
ALPHA_LOW = 0.2
ALPHA_HIGH = 0.65
# Drawn in RGB. Magenta is not in the JET colour map, so the ground truth stays visible on it.
BOX_COLOUR = (255, 255, 255)
MASK_COLOUR = (255, 0, 255)

Loader = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class HeatScale:
    """The colour scale shared by every heatmap of a report, so tiles can be compared.

    Attributes:
        low: map value drawn dark blue.
        high: map value drawn dark red (the reject threshold: red means "would be a region").
        label: what ``high`` is, for the legend (a defect-probability map is cut at a level).
    """

    low: float
    high: float
    label: str = "reject threshold"

    @classmethod
    def for_maps(cls, maps: Sequence[np.ndarray], reject: float) -> HeatScale:
        """From the 1st percentile of the shown maps up to the reject threshold.

        Args:
            maps: the ``(H_i, W_i)`` anomaly maps of the gallery tiles.
            reject: the reject threshold.
        """
        lows = [float(np.nanpercentile(m, 1)) for m in maps if m.size and np.isfinite(m).any()]
        low = min(lows) if lows else reject - 1.0
        if not low < reject:
            low = reject - max(abs(reject), 1.0)
        return cls(low=low, high=reject)

    def colours(self, n: int = 9) -> list[tuple[int, int, int]]:
        """``n`` RGB colours evenly spaced along the colour map, lowest first (for a legend)."""
        ramp = np.linspace(0, 255, n).astype(np.uint8).reshape(1, n)
        rgb = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]
        return [(int(r), int(g), int(b)) for r, g, b in rgb]


@dataclass(frozen=True)
class Tile:
    """One gallery image and what it shows.

    Attributes:
        index: position of the image in the report's inputs.
        path: image file.
        score: image anomaly score.
        label: 0 good, 1 defective.
        defect_type: ``"good"`` or the defect type.
        outcome: ``"pass"``, ``"review"`` or ``"fail"`` at the report's operating point.
        regions: connected regions of the anomaly map at or above the reject threshold.
        image_size: ``(H, W)`` of the original image (``None`` when it could not be read).
        png: the tile, at most ``MAX_SIDE`` px on its long side; ``None`` when it could not be drawn.
        problem: why the tile could not be drawn, or what was adjusted to draw it.
    """

    index: int
    path: str
    score: float
    label: int
    defect_type: str
    outcome: str
    regions: tuple[Region, ...] = ()
    image_size: tuple[int, int] | None = None
    png: bytes | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the picture)."""
        return {
            "index": self.index,
            "path": self.path,
            "score": self.score,
            "label": self.label,
            "defect_type": self.defect_type,
            "outcome": self.outcome,
            "image_size": list(self.image_size) if self.image_size else None,
            "regions": [
                {"bbox": list(r.bbox), "area_px": r.area_px, "peak": r.peak, "centroid": list(r.centroid)}
                for r in self.regions
            ],
            "problem": self.problem,
        }


def worst_good(scores: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` good parts with the highest scores, highest first (ties: input order)."""
    good = np.flatnonzero(labels == 0)
    order = np.argsort(-scores[good], kind="stable")
    return [int(i) for i in good[order[:k]]]


def worst_defects(scores: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` defective parts with the lowest scores, lowest first (ties: input order)."""
    bad = np.flatnonzero(labels == 1)
    order = np.argsort(scores[bad], kind="stable")
    return [int(i) for i in bad[order[:k]]]


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 RGB for display.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, uint16 or float.

    Raises:
        InputError: for any other shape.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, :3] if array.shape[2] != 1 else array[:, :, 0]
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise InputError("image", f"expected (H, W) or (H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        # 16-bit and float images use only part of their range: stretch what is there.
        values = np.nan_to_num(array.astype(np.float32))
        low, high = float(values.min()), float(values.max())
        array = ((values - low) * (255.0 / (high - low)) if high > low else values * 0).astype(np.uint8)
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array)


def _scaled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def draw_tile(
    image: np.ndarray,
    anomaly_map: np.ndarray | None,
    mask: np.ndarray | None,
    regions: Sequence[Region],
    scale: HeatScale,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """The image, downscaled, with the heatmap blended in, region boxes and the mask's contour.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` image.
        anomaly_map: ``(H_m, W_m)`` float anomaly map (normally ``H_m, W_m == H, W``), or ``None``.
        mask: ``(H_k, W_k)`` bool ground-truth mask, or ``None``.
        regions: regions found on ``anomaly_map`` (boxes in its pixels).
        scale: colour scale of the heatmap.
        max_side: longest side of the tile in pixels.

    Returns:
        ``(h, w, 3)`` uint8 RGB with ``max(h, w) <= max_side`` and the image's aspect ratio.
    """
    rgb = to_rgb8(image)
    height, width = rgb.shape[:2]
    th, tw = _scaled_size(height, width, max_side)
    tile = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA) if (th, tw) != (height, width) else rgb
    tile = tile.copy()
    if anomaly_map is not None:
        small = cv2.resize(
            np.nan_to_num(anomaly_map.astype(np.float32)), (tw, th), interpolation=cv2.INTER_AREA
        )
        norm = np.clip((small - scale.low) / (scale.high - scale.low), 0.0, 1.0)
        heat = cv2.cvtColor(
            cv2.applyColorMap((norm * 255.0).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
        )
        # Opacity grows with the map value: the part stays visible where nothing is anomalous.
        alpha = (ALPHA_LOW + (ALPHA_HIGH - ALPHA_LOW) * norm)[:, :, None]
        tile = (tile * (1.0 - alpha) + heat * alpha + 0.5).astype(np.uint8)
        fy, fx = th / anomaly_map.shape[0], tw / anomaly_map.shape[1]
        for region in regions:
            x0, y0, x1, y1 = region.bbox
            top_left = (int(x0 * fx), int(y0 * fy))
            bottom_right = (
                max(int(np.ceil(x1 * fx)) - 1, top_left[0]),
                max(int(np.ceil(y1 * fy)) - 1, top_left[1]),
            )
            cv2.rectangle(tile, top_left, bottom_right, BOX_COLOUR, 1, lineType=cv2.LINE_AA)
    if mask is not None and np.any(mask):
        contours, _ = cv2.findContours(
            np.asarray(mask).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        factor = np.array([tw / mask.shape[1], th / mask.shape[0]])
        scaled = [np.round(c.astype(np.float64) * factor).astype(np.int32) for c in contours]
        cv2.polylines(tile, scaled, True, MASK_COLOUR, 1, lineType=cv2.LINE_AA)
    return tile


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 RGB image."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise InputError("image", "could not be encoded as PNG")
    return data.tobytes()


def make_tiles(
    indices: Sequence[int],
    *,
    paths: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray,
    defect_types: Sequence[str],
    maps: Sequence[np.ndarray] | None,
    masks: Sequence[np.ndarray | None] | None,
    loader: Loader,
    verdicts: Sequence[Verdict],
    scale: HeatScale,
) -> list[Tile]:
    """Decode and draw the tiles of the given images.

    An image that cannot be read does not stop the report: its tile says why.

    Args:
        indices: which images, in display order.
        paths: ``(N,)`` image files.
        scores: ``(N,)`` image scores.
        labels: ``(N,)`` 0/1 labels.
        defect_types: ``(N,)`` defect types.
        maps: N anomaly maps ``(H_i, W_i)`` or ``None``.
        masks: N ground-truth masks or ``None``.
        loader: reads one image file.
        verdicts: ``(N,)`` every part's verdict (:func:`~flawscope.decide.verdict.decide_many`):
            the tile shows its outcome and draws its regions.
        scale: heatmap colour scale.
    """
    tiles = []
    for i in indices:
        amap = None if maps is None else np.asarray(maps[i])
        mask = None if masks is None or masks[i] is None else np.asarray(masks[i], dtype=bool)
        regions = verdicts[i].regions[:20] if amap is not None else ()
        base = Tile(
            index=i,
            path=paths[i],
            score=float(scores[i]),
            label=int(labels[i]),
            defect_type=defect_types[i],
            outcome=str(verdicts[i].outcome),
            regions=regions,
        )
        try:
            image = loader(paths[i])
            rgb = draw_tile(image, amap, mask, regions, scale)
        except (InputError, OSError, ValueError, cv2.error) as exc:
            log.warning("report: cannot show %s: %s", paths[i], exc)
            tiles.append(replace(base, problem=f"image could not be shown: {exc}"))
            continue
        height, width = image.shape[:2]
        problem = None
        if amap is not None and amap.shape != (height, width):
            problem = f"anomaly map {amap.shape[1]}x{amap.shape[0]} drawn over a {width}x{height} image"
        tiles.append(
            replace(base, image_size=(int(height), int(width)), png=encode_png(rgb), problem=problem)
        )
    return tiles
