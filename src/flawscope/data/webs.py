"""Synthetic continuous webs (steel strip, textile) with small defects at known web positions.

A web is generated row block by row block, in order, as a line-scan camera sees it: the texture
is continuous across blocks (its along-web correlation is a recursive filter whose state is
carried from block to block), so a frame cut anywhere looks like any other. Defects are the small
spots, pits and scratches of :mod:`flawscope.data.large_parts`, placed at seeded positions
(:func:`plan_defects`) that are known exactly: the ground truth of the line-scan benchmark.

Everything is seeded: the same :class:`WebSpec` gives the same web, row for row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import lfilter

from flawscope.data.large_parts import MASK_LEVEL, small_defect
from flawscope.errors import InputError

WEB_TEXTURES = ("steel", "textile")


@dataclass(frozen=True)
class WebSpec:
    """What web to generate.

    Attributes:
        length_m: web length in metres.
        width_px: pixels across the web.
        mm_per_px: across-web pixel size in mm.
        mm_per_row: along-web row size in mm.
        texture: ``"steel"`` (rolled strip: streaks along the web) or ``"textile"`` (a weave).
        n_defects: defects placed along the web (0 for a good web).
        defect_mm: ``(smallest, largest)`` longest side of a defect, in mm.
        contrast: ``(low, high)`` grey-level change at a defect's full strength.
        seed: seed of every random choice.
        block_rows: rows generated per block.
    """

    length_m: float = 10.0
    width_px: int = 512
    mm_per_px: float = 1.0
    mm_per_row: float = 1.0
    texture: str = "steel"
    n_defects: int = 0
    defect_mm: tuple[float, float] = (6.0, 15.0)
    contrast: tuple[float, float] = (35.0, 60.0)
    seed: int = 0
    block_rows: int = 256

    def __post_init__(self) -> None:
        if self.texture not in WEB_TEXTURES:
            raise InputError("texture", f"must be one of {WEB_TEXTURES}, not {self.texture!r}")
        if not self.length_m > 0:
            raise InputError("length_m", f"must be > 0, got {self.length_m}")
        if self.width_px < 32:
            raise InputError("width_px", f"must be at least 32 pixels, got {self.width_px}")
        if not (self.mm_per_px > 0 and self.mm_per_row > 0):
            raise InputError("mm_per_px", "pixel and row sizes must be > 0 mm")
        if self.n_defects < 0:
            raise InputError("n_defects", f"must be >= 0, got {self.n_defects}")
        lo, hi = self.defect_mm
        if not 0 < lo <= hi or hi / self.mm_per_px * 8 > self.width_px:
            raise InputError(
                "defect_mm", f"({lo}, {hi}) must satisfy 0 < smallest <= largest <= web width / 8"
            )
        if self.block_rows < 1:
            raise InputError("block_rows", f"must be >= 1, got {self.block_rows}")

    @property
    def n_rows(self) -> int:
        """Rows in the whole web."""
        return round(self.length_m * 1000.0 / self.mm_per_row)


@dataclass(frozen=True)
class TrueDefect:
    """A defect placed on the web, where it really is.

    Attributes:
        number: 0, 1, ... in web order.
        kind: ``spot``, ``pit`` or ``scratch``.
        row0, col0: top-left pixel of its strength patch in web pixels.
        patch: ``(side, side)`` float32 strength map in [0, 1].
        delta: grey-level change at full strength (negative: darker).
        bbox: ``(x0, y0, x1, y1)`` of its mask (strength >= MASK_LEVEL) in web pixels, exclusive.
    """

    number: int
    kind: str
    row0: int
    col0: int
    patch: np.ndarray
    delta: float
    bbox: tuple[int, int, int, int]

    def centre_px(self) -> tuple[float, float]:
        """``(column, row)`` of the mask's bounding-box centre, in web pixels."""
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def plan_defects(spec: WebSpec) -> tuple[TrueDefect, ...]:
    """The web's defects: evenly spread along it (each in its own stretch, at a random place inside).

    The web is cut into ``n_defects`` equal stretches and each defect lies inside its own, away from
    the stretch's ends, so no two defects touch and their number and places are exact.
    """
    if spec.n_defects == 0:
        return ()
    rng = np.random.default_rng([spec.seed, 1])
    stretch = spec.n_rows / spec.n_defects
    defects = []
    for number in range(spec.n_defects):
        length_px = float(rng.uniform(*spec.defect_mm)) / spec.mm_per_px
        kind, patch = small_defect(rng, max(3.0, length_px))
        # The patch is in across-web pixels; rows of another size stretch it along the web.
        if not math.isclose(spec.mm_per_row, spec.mm_per_px):
            rows = max(3, round(patch.shape[0] * spec.mm_per_px / spec.mm_per_row))
            patch = cv2.resize(patch, (patch.shape[1], rows), interpolation=cv2.INTER_LINEAR)
        side_r, side_c = patch.shape
        if stretch < 3 * side_r:
            raise InputError("n_defects", f"{spec.n_defects} defects do not fit along {spec.length_m} m")
        row0 = int(number * stretch + rng.uniform(side_r, stretch - 2 * side_r))
        col0 = int(rng.integers(side_c, spec.width_px - 2 * side_c))
        dark = kind == "pit" or (kind != "scratch" and rng.random() < 0.6)
        delta = float(rng.uniform(*spec.contrast)) * (-1.0 if dark else 1.0)
        ys, xs = np.nonzero(patch >= MASK_LEVEL)
        bbox = (
            col0 + int(xs.min()),
            row0 + int(ys.min()),
            col0 + int(xs.max()) + 1,
            row0 + int(ys.max()) + 1,
        )
        defects.append(TrueDefect(number, kind, row0, col0, patch.astype(np.float32), delta, bbox))
    return tuple(defects)


class WebGenerator:
    """Generates a web's rows in order, block by block (continuous texture, known defects).

    Args:
        spec: what to generate.
    """

    def __init__(self, spec: WebSpec) -> None:
        self.spec = spec
        self.defects = plan_defects(spec)
        rng = np.random.default_rng([spec.seed, 0])
        width = spec.width_px
        # Rolled steel: each column has its own level (streaks along the web) that drifts slowly.
        self._columns = (
            cv2.blur(rng.standard_normal((1, width)).astype(np.float32), (3, 1)).ravel() * 6.0
        ).astype(np.float32)
        self._base = float(rng.uniform(120.0, 140.0))
        self._rng = np.random.default_rng([spec.seed, 2])
        # Recursive filters along the web: a slow one (streak drift) and a fast one (grain).
        self._slow, self._fast = 0.995, 0.85
        self._state_slow = np.zeros((1, width), np.float64)
        self._state_fast = np.zeros((1, width), np.float64)
        self.next_row = 0

    def _texture(self, first_row: int, n: int) -> np.ndarray:
        spec = self.spec
        width = spec.width_px
        noise = self._rng.standard_normal((n, width)).astype(np.float32)
        across = cv2.blur(noise, (5, 1), borderType=cv2.BORDER_REFLECT)
        slow, self._state_slow = lfilter(
            [math.sqrt(1 - self._slow**2)],
            [1.0, -self._slow],
            across,
            axis=0,
            zi=self._state_slow * self._slow,
        )
        fast, self._state_fast = lfilter(
            [math.sqrt(1 - self._fast**2)],
            [1.0, -self._fast],
            noise,
            axis=0,
            zi=self._state_fast * self._fast,
        )
        value = self._base + self._columns[None, :] + 5.0 * slow + 4.0 * fast
        if spec.texture == "textile":
            rows = np.arange(first_row, first_row + n, dtype=np.float32)[:, None]
            cols = np.arange(width, dtype=np.float32)[None, :]
            period = 6.0 / max(spec.mm_per_px, 1e-6)
            weave = np.sin(2 * math.pi * cols / period) * np.sin(2 * math.pi * rows * spec.mm_per_row / 6.0)
            value = value + 14.0 * weave
        return value.astype(np.float32)

    def _add_defects(self, image: np.ndarray, first_row: int) -> None:
        end = first_row + image.shape[0]
        for defect in self.defects:
            side_r, side_c = defect.patch.shape
            top, bottom = max(first_row, defect.row0), min(end, defect.row0 + side_r)
            if top >= bottom:
                continue
            piece = defect.patch[top - defect.row0 : bottom - defect.row0]
            image[top - first_row : bottom - first_row, defect.col0 : defect.col0 + side_c] += (
                piece * defect.delta
            )

    def blocks(self, stop_row: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, (n, W) uint8 rows)`` from the next row to ``stop_row`` (default: the web's end)."""
        stop = self.spec.n_rows if stop_row is None else min(stop_row, self.spec.n_rows)
        while self.next_row < stop:
            first = self.next_row
            n = min(self.spec.block_rows, stop - first)
            image = self._texture(first, n)
            self._add_defects(image, first)
            noise = self._rng.normal(0.0, 2.0, image.shape).astype(np.float32)
            self.next_row = first + n
            yield first, np.clip(image + noise + 0.5, 0, 255).astype(np.uint8)


def good_frames(spec: WebSpec, frame_rows: int, count: int, rolls: int = 3) -> list[np.ndarray]:
    """``count`` good frames of ``frame_rows`` rows from ``rolls`` defect-free webs like ``spec``.

    For training and calibration: the webs have seeds ``spec.seed + 1000 + k``, so give the
    inspected web a seed outside them. Several rolls, because a model trained on one roll learns
    that roll's streaks.
    """
    frames: list[np.ndarray] = []
    for k in range(rolls):
        n = count // rolls + (1 if k < count % rolls else 0)
        if n == 0:
            continue
        length_m = frame_rows * n * spec.mm_per_row / 1000.0
        clean = dataclasses.replace(spec, n_defects=0, length_m=length_m, seed=spec.seed + 1000 + k)
        strip = np.concatenate([rows for _, rows in WebGenerator(clean).blocks()])
        frames.extend(strip[i * frame_rows : (i + 1) * frame_rows] for i in range(len(strip) // frame_rows))
    return frames
