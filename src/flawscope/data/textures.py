"""Procedural textures of good parts for the synthetic datasets (numpy + OpenCV only).

Every function returns a float32 ``(H, W, 3)`` RGB image in [0, 255] *before* lighting and
sensor noise, which :func:`finish_part` adds. The random generator gives each part its own
natural variation (grain, thread waviness, placement); the texture's look stays the same.
"""

from __future__ import annotations

import functools
import math
from typing import Protocol

import cv2
import numpy as np

TEXTURES = ("brushed_metal", "fabric", "wood", "printed")


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` float32 x and y pixel coordinates."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """``(H, W)`` float32 noise with unit std whose features are about ``cell`` pixels wide."""
    gh = max(2, math.ceil(height / cell) + 2)
    gw = max(2, math.ceil(width / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def motion_blur_noise(
    rng: np.random.Generator, height: int, width: int, length: int, angle_deg: float
) -> np.ndarray:
    """``(H, W)`` float32 unit-std noise smeared along a line: the streaks of brushing or grain."""
    if abs(angle_deg) < 0.05 or abs(abs(angle_deg) - 90.0) < 0.05:
        vertical = abs(angle_deg) > 45.0
        noise = rng.standard_normal((height, width)).astype(np.float32)
        ksize = (1, length) if vertical else (length, 1)
        streaks = cv2.blur(noise, ksize, borderType=cv2.BORDER_REFLECT)
    else:
        # A box blur along x then a small rotation: far cheaper than a rotated line kernel.
        pad = math.ceil(0.5 * abs(math.sin(math.radians(angle_deg))) * max(height, width)) + 2
        big_h, big_w = height + 2 * pad, width + 2 * pad
        noise = rng.standard_normal((big_h, big_w)).astype(np.float32)
        streaks = cv2.blur(noise, (length, 1), borderType=cv2.BORDER_REFLECT)
        rot = cv2.getRotationMatrix2D((big_w / 2.0, big_h / 2.0), -angle_deg, 1.0)
        streaks = cv2.warpAffine(streaks, rot, (big_w, big_h), flags=cv2.INTER_LINEAR)
        streaks = streaks[pad : pad + height, pad : pad + width]
    return streaks / max(float(streaks.std()), 1e-6)


def _scale(height: int, width: int, scale: float | None) -> float:
    """The texture's feature scale: ``scale`` when given, else the image's short side / 256.

    A large part is generated in one piece at a fixed ``scale`` (its grain as fine as on a
    smaller part's image), so the texture has no tile or mirror seam anywhere.
    """
    if scale is None:
        return min(height, width) / 256.0
    if not scale > 0:
        raise ValueError(f"texture scale must be > 0, got {scale}")
    return float(scale)


def _mix(dark: tuple[float, float, float], light: tuple[float, float, float], t: np.ndarray) -> np.ndarray:
    """Blend two RGB colours with ``t`` in [0, 1] (``(H, W)``) into ``(H, W, 3)``."""
    d = np.asarray(dark, dtype=np.float32)
    span = np.asarray(light, dtype=np.float32) - d
    return d + t[:, :, None] * span


def brushed_metal(
    rng: np.random.Generator, height: int, width: int, scale: float | None = None
) -> np.ndarray:
    """Brushed steel: fine streaks along one direction and a broad specular sheen."""
    scale = _scale(height, width, scale)
    angle = rng.uniform(-1.5, 1.5)
    fine = motion_blur_noise(rng, height, width, max(9, int(31 * scale)) | 1, angle)
    long = motion_blur_noise(rng, height, width, max(15, int(81 * scale)) | 1, angle)
    base = rng.uniform(128.0, 142.0)
    value = base + 9.0 * fine + 6.0 * long
    xs, ys = _grid(height, width)
    # A diffuse highlight band across the brushing, as seen under a line light.
    theta = math.radians(rng.uniform(60.0, 120.0))
    along = xs * math.cos(theta) + ys * math.sin(theta)
    centre = rng.uniform(0.3, 0.7) * float(along.max())
    band = np.exp(-(((along - centre) / (0.35 * max(height, width))) ** 2))
    value = value * (1.0 + rng.uniform(0.06, 0.14) * band)
    return np.repeat(value[:, :, None], 3, axis=2) * np.array([0.98, 1.0, 1.03], dtype=np.float32)


def fabric(rng: np.random.Generator, height: int, width: int, scale: float | None = None) -> np.ndarray:
    """Plain-weave cloth: warp and weft threads passing over and under each other."""
    scale = _scale(height, width, scale)
    period = 10.0 * scale * rng.uniform(0.98, 1.02)
    xs, ys = _grid(height, width)
    # Threads are never perfectly straight: a slow displacement of a fraction of a thread.
    wobble = 0.12 * period
    u = (xs + rng.uniform(0, period) + wobble * smooth_noise(rng, height, width, 40 * scale)) / period
    v = (ys + rng.uniform(0, period) + wobble * smooth_noise(rng, height, width, 40 * scale)) / period
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    warp_gain = rng.uniform(0.9, 1.1, size=64).astype(np.float32)
    weft_gain = rng.uniform(0.9, 1.1, size=64).astype(np.float32)
    warp_on_top = ((iu + iv) % 2) == 0
    across_u = np.sin(np.pi * fu) ** 0.6
    across_v = np.sin(np.pi * fv) ** 0.6
    warp = across_u * (0.7 + 0.3 * np.sin(np.pi * fv)) * warp_gain[iu.astype(np.int64) % 64]
    weft = across_v * (0.7 + 0.3 * np.sin(np.pi * fu)) * weft_gain[iv.astype(np.int64) % 64]
    shade = np.where(warp_on_top, warp, weft)
    fibres = np.where(
        warp_on_top,
        motion_blur_noise(rng, height, width, 7, 90.0),
        motion_blur_noise(rng, height, width, 7, 0.0),
    )
    shade = np.clip(0.35 + 0.65 * shade + 0.04 * fibres, 0.0, 1.2)
    warp_colour = np.array([88, 112, 168], dtype=np.float32)  # indigo warp, ecru weft: a denim-like cloth
    weft_colour = np.array([212, 204, 186], dtype=np.float32)
    colour = np.where(warp_on_top[:, :, None], warp_colour, weft_colour)
    return (colour * shade[:, :, None]).astype(np.float32)


def wood(rng: np.random.Generator, height: int, width: int, scale: float | None = None) -> np.ndarray:
    """Planed wood: growth rings bent by turbulence, with fine grain fibres along them."""
    scale = _scale(height, width, scale)
    xs, ys = _grid(height, width)
    theta = math.radians(rng.uniform(-4.0, 4.0))
    along = xs * math.cos(theta) + ys * math.sin(theta)
    across = -xs * math.sin(theta) + ys * math.cos(theta)
    period = rng.uniform(16.0, 24.0) * scale
    bend = rng.uniform(-1.0, 1.0) * 0.2 * ((along - rng.uniform(0.2, 0.8) * width) / max(width, 1)) ** 2
    # Rings drift slowly (a few px over the board) and barely wiggle at short range.
    turbulence = 3.5 * scale * smooth_noise(rng, height, width, 140 * scale) + 0.7 * scale * smooth_noise(
        rng, height, width, 18 * scale
    )
    rings = across + bend * height + turbulence + rng.uniform(0, period)
    phase = (rings / period) % 1.0
    # Late wood: a darker band about a third of the ring wide, sharper on its outer side.
    late = np.where(
        phase < 0.8, np.clip((phase - 0.45) / 0.35, 0.0, 1.0) ** 2, np.clip((1.0 - phase) / 0.2, 0.0, 1.0)
    )
    ring_depth = 0.35 + 0.15 * smooth_noise(rng, height, width, 60 * scale)
    grain = motion_blur_noise(rng, height, width, max(9, int(41 * scale)) | 1, math.degrees(theta))
    pores = motion_blur_noise(rng, height, width, 5, math.degrees(theta))
    t = np.clip(0.9 - ring_depth * late + 0.05 * grain - 0.03 * np.maximum(pores, 0.0), 0.0, 1.0)
    tone = rng.uniform(0.95, 1.05)
    return _mix((122.0, 78.0, 44.0), (222.0 * tone, 178.0 * tone, 124.0 * tone), t)


@functools.lru_cache(maxsize=8)
def _print_layout(height: int, width: int) -> np.ndarray:
    """``(H, W)`` float32 ink coverage of the printed plate: the same on every part (read-only)."""
    # Anti-aliasing in OpenCV needs an 8-bit canvas.
    ink = np.zeros((height, width), dtype=np.uint8)
    s = min(height, width) / 256.0
    t = max(1, round(2 * s))
    inset = int(0.07 * min(height, width))
    cv2.rectangle(ink, (inset, inset), (width - 1 - inset, height - 1 - inset), 255, t, cv2.LINE_AA)
    # Logo: a ring with a triangle, top left.
    cx, cy, r = int(0.24 * width), int(0.32 * height), int(0.11 * min(height, width))
    cv2.circle(ink, (cx, cy), r, 255, max(1, round(3 * s)), cv2.LINE_AA)
    tri = np.array(
        [
            [cx, cy - int(0.6 * r)],
            [cx - int(0.55 * r), cy + int(0.4 * r)],
            [cx + int(0.55 * r), cy + int(0.4 * r)],
        ]
    )
    cv2.fillPoly(ink, [tri], 255, cv2.LINE_AA)
    # Two lines of text to the right of the logo, scaled to the plate.
    for text, rel_y, rel_w in (("FLAWSCOPE", 0.30, 0.46), ("LOT 24-07A", 0.42, 0.40)):
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
        font = rel_w * width / tw
        thick = max(1, round(2 * font))
        cv2.putText(
            ink,
            text,
            (int(0.42 * width), int(rel_y * height)),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            255,
            thick,
            cv2.LINE_AA,
        )
    # A barcode along the bottom: bar widths from a fixed generator so every part carries the same code.
    bars = np.random.default_rng(2024).integers(1, 4, size=40)
    x = 0.14 * width
    unit = 0.72 * width / float(bars.sum())
    y0, y1 = int(0.62 * height), int(0.82 * height)
    for i, b in enumerate(bars):
        if i % 2 == 0:  # even entries are bars, odd ones the gaps between them
            cv2.rectangle(ink, (int(x), y0), (max(int(x), int(x + b * unit) - 1), y1), 255, -1)
        x += b * unit
    coverage = ink.astype(np.float32) / 255.0
    coverage.setflags(write=False)
    return coverage


def printed(rng: np.random.Generator, height: int, width: int, scale: float | None = None) -> np.ndarray:
    """A matte plate with a printed logo, text and barcode, placed within a pixel or two."""
    s = _scale(height, width, scale)
    shift = rng.uniform(-1.5, 1.5, size=2) * s
    rot = np.asarray(
        cv2.getRotationMatrix2D((width / 2.0, height / 2.0), rng.uniform(-0.4, 0.4), 1.0), np.float64
    )
    rot[:, 2] += shift
    ink: np.ndarray = np.asarray(
        cv2.warpAffine(_print_layout(height, width), rot, (width, height)), np.float32
    )
    ink = ink * (0.9 + 0.06 * smooth_noise(rng, height, width, 24 * s))
    plate = (
        184.0 + 3.0 * smooth_noise(rng, height, width, 30 * s) + 2.0 * smooth_noise(rng, height, width, 3 * s)
    )
    plate_rgb = np.repeat(plate[:, :, None], 3, axis=2) * np.array([1.0, 0.99, 0.96], dtype=np.float32)
    ink_colour = np.array([28, 36, 78], dtype=np.float32)
    alpha = np.clip(ink, 0.0, 1.0)[:, :, None]
    return plate_rgb * (1.0 - alpha) + ink_colour * alpha


class TextureFunction(Protocol):
    """``(rng, height, width, scale=None) -> (H, W, 3)`` float32 texture (see :func:`_scale`)."""

    def __call__(
        self, rng: np.random.Generator, height: int, width: int, scale: float | None = None
    ) -> np.ndarray:
        """The texture of an image of ``height x width`` at ``scale`` (None: short side / 256)."""
        ...


TEXTURE_FUNCTIONS: dict[str, TextureFunction] = {
    "brushed_metal": brushed_metal,
    "fabric": fabric,
    "wood": wood,
    "printed": printed,
}


def lighting(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(H, W)`` float32 gain: a gentle linear gradient and vignetting, different for every shot."""
    xs, ys = _grid(height, width)
    xn = (xs - width / 2.0) / max(height, width)
    yn = (ys - height / 2.0) / max(height, width)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    gradient = rng.uniform(0.04, 0.14) * (xn * math.cos(theta) + yn * math.sin(theta))
    vignette = rng.uniform(0.0, 0.12) * (xn**2 + yn**2)
    return (rng.uniform(0.95, 1.05) + gradient - vignette).astype(np.float32)


def finish_part(rng: np.random.Generator, texture: np.ndarray, grayscale: bool) -> np.ndarray:
    """Apply lighting and sensor noise and quantise.

    Args:
        rng: random generator.
        texture: ``(H, W, 3)`` float32 RGB in [0, 255].
        grayscale: return a single channel.

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` uint8 image.
    """
    height, width = texture.shape[:2]
    lit = texture * lighting(rng, height, width)[:, :, None]
    if grayscale:
        lit = lit @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lit = lit + rng.normal(0.0, rng.uniform(1.5, 2.5), size=lit.shape).astype(np.float32)
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)
