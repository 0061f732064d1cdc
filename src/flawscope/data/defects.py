"""Synthetic defects drawn onto good parts, each with its exact ground-truth mask.

Every defect is built from a *strength* map in [0, 1]: the fraction of the defect's full change
applied at each pixel (1 in its body, falling to 0 over an anti-aliased edge of a pixel or two).
The mask is the defect's body (``strength >= 0.5``) plus every pixel the defect changed by at least
``MASK_LEVEL`` grey levels, so it covers exactly the pixels that changed visibly: outside it no
pixel differs from the good part by ``MASK_LEVEL`` or more. Full changes are tens of grey levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from flawscope.data.textures import smooth_noise

DEFECT_KINDS = ("scratch", "spot", "crack", "contamination", "missing")
# A change of 10 grey levels is about four times the sensor noise of the synthetic parts.
MASK_LEVEL = 10
_BODY_STRENGTH = 0.5
_MAX_TRIES = 20


def _polyline(height: int, width: int, points: np.ndarray, thickness: int) -> np.ndarray:
    """``(H, W)`` float32 anti-aliased coverage of a polyline through ``(N, 2)`` float (x, y) points."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    # 4 fractional bits: sub-pixel vertices, so thin lines are smooth rather than stair-stepped.
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 255, thickness, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255.0


def _polygon(height: int, width: int, points: np.ndarray) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=np.uint8)
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255.0


def _luma(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2)


def _region_mean(image: np.ndarray, strength: np.ndarray) -> float:
    inside = strength >= 0.5
    if not inside.any():
        inside = strength > 0
    return float(_luma(image)[inside].mean()) if inside.any() else float(_luma(image).mean())


def _direction(mean: float, contrast: float, bright: bool) -> float:
    """Signed change: the preferred direction unless it would clip at black or white."""
    if bright and mean + contrast > 245.0:
        bright = False
    elif not bright and mean - contrast < 10.0:
        bright = True
    return contrast if bright else -contrast


def _tint(channels: int, rgb: tuple[float, float, float]) -> np.ndarray:
    return np.array(rgb if channels == 3 else [1.0], dtype=np.float32)


def _point(rng: np.random.Generator, height: int, width: int, margin: float) -> np.ndarray:
    return rng.uniform([margin * width, margin * height], [(1 - margin) * width, (1 - margin) * height])


def _clip_points(points: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.clip(points, [1.0, 1.0], [width - 2.0, height - 2.0])


def _scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin, slightly bowed groove that catches (or swallows) the light along its length."""
    height, width = image.shape[:2]
    s = min(height, width) / 256.0
    length = rng.uniform(0.25, 0.6) * min(height, width)
    angle = rng.uniform(0.0, math.pi)
    along = np.array([math.cos(angle), math.sin(angle)], dtype=np.float64)
    normal = np.array([-along[1], along[0]], dtype=np.float64)
    t = np.linspace(-0.5, 0.5, 40)[:, None]
    bow = rng.uniform(-0.1, 0.1) * length
    points = _point(rng, height, width, 0.2) + t * length * along + (1 - 4 * t**2) * bow * normal
    points = _clip_points(points + rng.normal(0.0, 0.2 * s, points.shape), height, width)
    strength = _polyline(height, width, points, max(1, round(rng.uniform(1.0, 2.4) * s)))
    # The tool pressed unevenly: the groove fades in and out along its length.
    strength *= 0.8 + 0.2 * np.clip(smooth_noise(rng, height, width, 25 * s), -1, 1)
    delta = _direction(_region_mean(image, strength), rng.uniform(60, 95), bright=rng.random() < 0.6)
    return image + strength[:, :, None] * delta, strength


def _spot(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An oily or rusty stain: a mottled ellipse with a wobbly outline and often a darker rim."""
    height, width, channels = image.shape
    s = min(height, width) / 256.0
    a = rng.uniform(0.035, 0.08) * min(height, width)
    b = a * rng.uniform(0.55, 1.0)
    cx, cy = _point(rng, height, width, 0.15)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(0, math.pi)
    c, sn = math.cos(tilt), math.sin(tilt)
    u, v = (xs - cx) * c + (ys - cy) * sn, -(xs - cx) * sn + (ys - cy) * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2) + 0.1 * smooth_noise(rng, height, width, 0.7 * a)
    body = np.clip((1.0 - r) * b / (1.5 * s), 0.0, 1.0)
    mottle = 0.75 + 0.25 * np.clip(smooth_noise(rng, height, width, 0.3 * a), -1, 1)
    rim = rng.uniform(0.0, 0.4) * np.exp(-(((r - 0.88) / 0.07) ** 2))
    strength = np.clip(body * (mottle + rim), 0.0, 1.0)
    delta = _direction(_region_mean(image, strength), rng.uniform(50, 85), bright=rng.random() < 0.25)
    tint = _tint(channels, (0.7, 1.0, 1.3) if delta < 0 else (1.1, 1.0, 0.85))
    return image + strength[:, :, None] * delta * tint, strength


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float) -> np.ndarray:
    """``(steps + 1, 2)`` points of a jagged path that wanders at most ~60 degrees off ``heading``."""
    points = [start]
    angle = heading
    for _ in range(steps):
        angle = heading + float(np.clip(angle - heading + rng.normal(0.0, 0.45), -1.0, 1.0))
        points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)], dtype=np.float64))
    return np.asarray(points)


def _crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, jagged fracture line, thicker in its middle, with a branch or two."""
    height, width = image.shape[:2]
    s = min(height, width) / 256.0
    step = 2.5 * s
    steps = max(6, int(rng.uniform(0.2, 0.45) * min(height, width) / step))
    heading = rng.uniform(0, 2 * math.pi)
    main = _clip_points(_walk(rng, _point(rng, height, width, 0.25), heading, steps, step), height, width)
    thick = max(1, round(2 * s))
    third = len(main) // 3
    strength = np.maximum(
        _polyline(height, width, main, max(1, thick - 1)),
        _polyline(height, width, main[third : 2 * third + 1], thick),
    )
    for _ in range(int(rng.integers(0, 3))):
        origin = main[int(rng.integers(third, 2 * third + 1))]
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        branch = _walk(rng, origin, heading + turn, max(3, int(steps * rng.uniform(0.25, 0.5))), step)
        strength = np.maximum(strength, _polyline(height, width, _clip_points(branch, height, width), 1))
    darkness = rng.uniform(0.15, 0.3)
    # A crack swallows light: blend towards a dark copy of the surface rather than adding a constant.
    return image * (1.0 - strength[:, :, None] * (1.0 - darkness)), strength


def _contamination(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreign matter on the surface: an irregular clump of debris or a scatter of particles."""
    height, width, channels = image.shape
    s = min(height, width) / 256.0
    radius = rng.uniform(0.04, 0.09) * min(height, width)
    cx, cy = _point(rng, height, width, 0.15)
    if rng.random() < 0.55:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        envelope = 1.0 - np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / radius
        field = 1.3 * envelope + 0.45 * smooth_noise(rng, height, width, radius / 2.5)
        strength = np.clip((field - 0.5) * radius / (2.0 * s), 0.0, 1.0)
    else:
        canvas = np.zeros((height, width), dtype=np.uint8)
        for _ in range(int(rng.integers(6, 16))):
            x, y = rng.normal([cx, cy], radius * 0.6)
            r = max(1.0, rng.uniform(1.5, 4.5) * s)
            center = (round(x * 16), round(y * 16))
            cv2.circle(canvas, center, round(r * 16), 255, -1, cv2.LINE_AA, 4)
        strength = canvas.astype(np.float32) / 255.0
    mean = _region_mean(image, strength)
    delta = _direction(mean, rng.uniform(65, 100), bright=rng.random() < 0.35)
    grit = 10.0 * smooth_noise(rng, height, width, 1.5 * s)
    tint = _tint(channels, (1.15, 0.95, 0.75) if delta < 0 else (1.0, 1.0, 1.0))
    target = np.clip(mean + delta + grit, 0, 255)[:, :, None] * tint
    return image * (1.0 - strength[:, :, None]) + target * strength[:, :, None], strength


def _missing(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Missing material: a round hole, or a chip broken off an edge, showing a dark cavity."""
    height, width, channels = image.shape
    s = min(height, width) / 256.0
    if rng.random() < 0.5:
        radius = rng.uniform(0.04, 0.09) * min(height, width)
        cx, cy = _point(rng, height, width, 0.15)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        r = np.sqrt(((xs - cx) / radius) ** 2 + ((ys - cy) / (radius * rng.uniform(0.85, 1.0))) ** 2)
        region = np.clip((1.0 - r) * radius / (1.2 * s), 0.0, 1.0)
    else:
        side = int(rng.integers(0, 4))
        span = width if side in (0, 2) else height
        depth = rng.uniform(0.05, 0.12) * min(height, width)
        half = rng.uniform(0.06, 0.15) * span
        centre = rng.uniform(half + 2, span - half - 2)
        t = np.linspace(-1.0, 1.0, 24)
        reach = depth * np.sqrt(1 - t**2) * (1 + 0.25 * rng.standard_normal(24)).clip(0.3, 1.6)
        along = centre + t * half
        # Build the chip on the top edge (x along, y inward), then turn it to its side.
        outline = np.concatenate([np.stack([along, reach], 1), [[along[-1], -2.0], [along[0], -2.0]]])
        if side == 1:
            outline = np.stack([width - 1 - outline[:, 1], outline[:, 0]], 1)
        elif side == 2:
            outline = np.stack([outline[:, 0], height - 1 - outline[:, 1]], 1)
        elif side == 3:
            outline = np.stack([outline[:, 1], outline[:, 0]], 1)
        region = _polygon(height, width, outline)
    # Cavity: dark, a little lighter right at the broken edge where its wall catches light.
    solid = (region >= 0.5).astype(np.uint8)
    depth_px = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    cavity = rng.uniform(12, 28) + 28.0 * np.exp(-depth_px / (2.0 * s))
    cavity = np.minimum(cavity, _luma(image) - 40.0).clip(0, 255)
    target = cavity[:, :, None] * _tint(channels, (1.0, 0.97, 0.92))
    return image * (1.0 - region[:, :, None]) + target * region[:, :, None], region


DEFECT_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "spot": _spot,
    "crack": _crack,
    "contamination": _contamination,
    "missing": _missing,
}


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect onto a copy of an image.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 good part (at least 32x32).
        kind: one of :data:`DEFECT_KINDS`.
        rng: random generator (the defect's place, size and look).

    Returns:
        The defective ``uint8`` image, same shape as ``image``, and its ``(H, W)`` bool mask.

    Raises:
        ValueError: for an unknown kind or an image that is not 8-bit, too small or mis-shaped.
    """
    if kind not in DEFECT_FUNCTIONS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 32:
        raise ValueError(
            f"expected a uint8 (H, W) or (H, W, 3) image of at least 32x32, got {image.dtype} {image.shape}"
        )
    work = image.astype(np.float32)
    if work.ndim == 2:
        work = work[:, :, None]
    for _ in range(_MAX_TRIES):
        changed, strength = DEFECT_FUNCTIONS[kind](work, rng)
        out = np.clip(np.rint(changed), 0, 255).astype(np.uint8)
        change = np.abs(out.astype(np.int16) - work.astype(np.int16)).max(axis=2)
        mask = (strength >= _BODY_STRENGTH) | (change >= MASK_LEVEL)
        if mask.sum() >= 16:
            break
    return (out[:, :, 0] if image.ndim == 2 else out), mask
