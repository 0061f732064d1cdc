"""Large synthetic parts with tiny defects: megapixel images, 10-30 pixel flaws, exact masks.

The parts a 256-pixel canvas cannot inspect: a 4096 x 3000 image of brushed metal (or another
texture of :mod:`flawscope.data.textures`, at its own scale, not stretched) holding a few thin
scratches, digs and pits (:func:`tiny_defect`) whose longest side is ``defect_px`` pixels, 20-40
grey levels deep on a texture that varies by about 11. Resized to the canvas a 2-px-wide,
20-px-long scratch in a 4000-pixel image becomes a smear a sixth of a pixel wide and two long,
fainter than the texture's own extremes, which is the point of tiling; at the image's resolution
it stands about 3x above the texture (both tested). :func:`small_defect` (bolder spots, pits and
scratches) is what the line-scan webs of :mod:`flawscope.data.webs` carry.

Seeded: each image has its own generator derived from ``(seed, split, index)``.
:func:`write_large_parts` writes the MVTec AD layout (``train/good``, ``test/good``,
``test/defect``, ``ground_truth/defect/<stem>_mask.png``), read like any dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flawscope.data.textures import TEXTURE_FUNCTIONS, TEXTURES, finish_part
from flawscope.errors import InputError

SMALL_DEFECTS = ("spot", "pit", "scratch")
TINY_DEFECTS = ("scratch", "dig", "pit")
# A pixel belongs to the defect's mask where the defect changes it by at least this share of
# its full strength (the same rule as the other synthetic defects).
MASK_LEVEL = 0.25
_SPLITS = {"train": 0, "test_good": 1, "test_defect": 2}
# Textures are generated at this reference scale (their features sized as in a 256-px image
# of a 1024-px piece of the part), so a large part keeps a realistic, fine texture.
_TEXTURE_SCALE_PX = 1024


@dataclass(frozen=True)
class LargePartSpec:
    """What to generate.

    Attributes:
        size: ``(height, width)`` of every image.
        texture: one of :data:`~flawscope.data.textures.TEXTURES`.
        defect_px: ``(smallest, largest)`` longest side of a defect, in pixels.
        defects_per_part: ``(fewest, most)`` defects in a defective part.
        n_train: good training images.
        n_test_good: good test images.
        n_test_defect: defective test images.
        contrast: ``(low, high)`` grey-level change at a defect's full strength.
        seed: seed of every random choice.
    """

    size: tuple[int, int] = (3000, 4096)
    texture: str = "brushed_metal"
    defect_px: tuple[int, int] = (10, 30)
    defects_per_part: tuple[int, int] = (1, 3)
    n_train: int = 8
    n_test_good: int = 10
    n_test_defect: int = 10
    contrast: tuple[float, float] = (20.0, 40.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise InputError("texture", f"must be one of {TEXTURES}, not {self.texture!r}")
        lo, hi = self.defect_px
        if not 3 <= lo <= hi or hi * 4 > min(self.size):
            raise InputError("defect_px", f"({lo}, {hi}) must satisfy 3 <= smallest <= largest <= side / 4")
        if min(self.size) < 64:
            raise InputError("size", f"{self.size} is not a large part (each side >= 64)")
        if not 1 <= self.defects_per_part[0] <= self.defects_per_part[1]:
            raise InputError("defects_per_part", f"{self.defects_per_part} must be 1 <= fewest <= most")


def _texture(rng: np.random.Generator, height: int, width: int, texture: str) -> np.ndarray:
    """``(H, W, 3)`` float32 texture over the whole part, at a fixed feature scale.

    Generated in one piece (not tiled from a smaller block): a mirrored or repeated block would
    leave a seam, such as a chevron where angled brushing streaks meet their mirror image, which
    good parts would show and a model would learn or flag.
    """
    scale = min(_TEXTURE_SCALE_PX, max(height, width)) / 256.0
    return TEXTURE_FUNCTIONS[texture](rng, height, width, scale=scale)


def _oriented_patch(
    rng: np.random.Generator, length: float, kinds: tuple[str, ...]
) -> tuple[str, np.ndarray, np.ndarray]:
    """A defect's kind and its patch's coordinates along (``u``) and across (``v``) a random angle.

    The patch is square, of odd side ``2 * length`` rounded up, centred; the kind is drawn before
    the angle (the order seeded parts depend on).

    Returns:
        ``(kind, u, v)``, ``u`` and ``v`` float32 of shape ``(side, side)``.
    """
    side = math.ceil(2 * length) | 1
    c = side / 2.0
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    kind = kinds[int(rng.integers(len(kinds)))]
    angle = rng.uniform(0, math.pi)
    u = (xs - c) * math.cos(angle) + (ys - c) * math.sin(angle)
    v = -(xs - c) * math.sin(angle) + (ys - c) * math.cos(angle)
    return kind, u, v


def small_defect(rng: np.random.Generator, length: float) -> tuple[str, np.ndarray]:
    """One small defect's strength map in ``[0, 1]`` on a square patch of side ``2 * length``."""
    kind, u, v = _oriented_patch(rng, length, SMALL_DEFECTS)
    if kind == "scratch":  # a thin line, 2-3 px wide, ``length`` long, fading at its ends
        half_width = rng.uniform(1.0, 1.5)
        along = np.clip(1.0 - (np.abs(u) / (length / 2)) ** 4, 0.0, 1.0)
        strength = along * np.clip(1.5 - np.abs(v) / half_width, 0.0, 1.0)
    else:  # a spot (a stain) or a pit (round and dark): an ellipse with a soft edge
        a = length / 2
        b = a * (rng.uniform(0.8, 1.0) if kind == "pit" else rng.uniform(0.5, 0.9))
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        strength = np.clip((1.0 - r) * 3.0, 0.0, 1.0)
    return kind, strength.astype(np.float32)


def tiny_defect(rng: np.random.Generator, length: float, smallest: float) -> tuple[str, np.ndarray]:
    """One tiny defect of a large part: strength map in ``[0, 1]`` on a square patch of side ``2 * length``.

    Real small flaws are thin or tiny: a scratch or a dig is ``length`` long and 1.5-5 px wide, a
    pit is round and only as wide as ``smallest`` (the smallest size asked for) plus up to 4 px.
    None of them keeps a visible footprint when a 4000-px image is shrunk twelve-fold onto the
    canvas (a 2-px scratch becomes a sixth of a pixel wide), while at the image's own resolution
    each spans several pixels across and its whole length.
    """
    kind, u, v = _oriented_patch(rng, length, TINY_DEFECTS)
    if kind == "scratch":  # a thin line, 1.5-3 px wide, ``length`` long, fading at its ends
        half_width = rng.uniform(0.7, 1.3)
        along = np.clip(1.0 - (np.abs(u) / (length / 2)) ** 4, 0.0, 1.0)
        strength = along * np.clip(1.5 - np.abs(v) / half_width, 0.0, 1.0)
    else:  # a dig (a short gouge, 3-5 px wide) or a pit (round): an ellipse with a soft edge
        a = length / 2 if kind == "dig" else rng.uniform(smallest, min(length, smallest + 4)) / 2
        b = rng.uniform(1.5, 2.5) if kind == "dig" else a * rng.uniform(0.85, 1.0)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        strength = np.clip((1.0 - r) * 3.0, 0.0, 1.0)
    return kind, strength.astype(np.float32)


def make_large_part(spec: LargePartSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One part: ``(H, W)`` uint8 grayscale image and its ``(H, W)`` bool defect mask.

    Args:
        spec: what to generate.
        split: ``"train"``, ``"test_good"`` or ``"test_defect"`` (only these have defects).
        index: image number within the split.
    """
    rng = np.random.default_rng([spec.seed, _SPLITS[split], index])
    height, width = spec.size
    texture = _texture(rng, height, width, spec.texture)
    mask = np.zeros((height, width), bool)
    if split == "test_defect":
        count = int(rng.integers(spec.defects_per_part[0], spec.defects_per_part[1] + 1))
        luma = texture.mean(axis=2)
        for _ in range(count):
            length = float(rng.uniform(*spec.defect_px))
            kind, strength = tiny_defect(rng, length, spec.defect_px[0])
            side = strength.shape[0]
            top = int(rng.integers(side, height - 2 * side))
            left = int(rng.integers(side, width - 2 * side))
            region = luma[top : top + side, left : left + side]
            dark = kind != "scratch" or rng.random() < 0.5 or region.mean() > 150
            delta = rng.uniform(*spec.contrast) * (-1.0 if dark else 1.0)
            texture[top : top + side, left : left + side] += (strength * delta)[:, :, None]
            mask[top : top + side, left : left + side] |= strength >= MASK_LEVEL
    return finish_part(rng, texture, grayscale=True), mask


def write_large_parts(root: str | os.PathLike[str], spec: LargePartSpec) -> Path:
    """Write a dataset of large parts in the MVTec AD layout (PNG); returns its root."""
    folder = Path(root)
    plan = (
        ("train", folder / "train" / "good", spec.n_train),
        ("test_good", folder / "test" / "good", spec.n_test_good),
        ("test_defect", folder / "test" / "defect", spec.n_test_defect),
    )
    for split, target, count in plan:
        target.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = make_large_part(spec, split, i)
            cv2.imwrite(str(target / f"{i:03d}.png"), image)
            if split == "test_defect":
                truth = folder / "ground_truth" / "defect"
                truth.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(truth / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
    return folder
